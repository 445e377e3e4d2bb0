package kafkabroker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
)

// TestTopicCollisionFailsAtPublish is the failure CheckTopics exists for:
// once "k.a" exists, Kafka refuses "k_a" for good ('.' and '_' collide in
// its metric names), so a publish to it can never succeed.
func TestTopicCollisionFailsAtPublish(t *testing.T) {
	ev := newEnv(t, kafkabroker.Config{})
	brokertest.PublishN(t, ev.b, "k.a", 0, 1)
	_, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: "k_a", Body: []byte("x")})
	if err == nil || !errors.Is(err, broker.ErrRejected) {
		t.Fatalf("publish to k_a next to k.a = %v, want a refusal (broker.ErrRejected)", err)
	}
}

func TestCheckTopics(t *testing.T) {
	ev := newEnv(t, kafkabroker.Config{})
	brokertest.PublishN(t, ev.b, "exists.here", 0, 1) // a topic on the cluster
	tests := []struct {
		name       string
		topics     []string
		registered []string
		conflict   string // both names appear in the error; "" means no conflict
	}{
		{"distinct names", []string{"a.b", "a.c", "ab"}, []string{"x.y"}, ""},
		{"same topic twice", []string{"a.b", "a.b"}, []string{"a.b"}, ""},
		{"the cluster's own topic", []string{"exists.here"}, nil, ""},
		{"collide within the registration", []string{"k.a", "k_a"}, nil, `"k_a" collides with topic "k.a"`},
		{"collide with another registration", []string{"k_b"}, []string{"k.b"}, `"k_b" collides with topic "k.b"`},
		{"collide with a cluster topic", []string{"exists_here"}, nil, `"exists_here" collides with topic "exists.here", which exists on the Kafka cluster`},
		{"conflicts among the others are not this one's", []string{"z"}, []string{"q.r", "q_r"}, ""},
		{"a name Kafka refuses", []string{"bad/name"}, nil, "bad/name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ev.b.CheckTopics(brokertest.Ctx(t), tt.topics, tt.registered)
			if tt.conflict == "" {
				if err != nil {
					t.Fatalf("CheckTopics(%q, %q) = %v, want nil", tt.topics, tt.registered, err)
				}
				return
			}
			if !errors.Is(err, broker.ErrTopicConflict) {
				t.Fatalf("CheckTopics(%q, %q) = %v, want broker.ErrTopicConflict", tt.topics, tt.registered, err)
			}
			if !strings.Contains(err.Error(), tt.conflict) {
				t.Fatalf("error %q does not name %s", err, tt.conflict)
			}
		})
	}
}

// TestCheckTopicsSeesOtherClients: a topic another client created shows
// in the metadata cache within its refresh and is then found.
func TestCheckTopicsSeesOtherClients(t *testing.T) {
	ev := newEnv(t, kafkabroker.Config{})
	other := newBroker(t, ev.c, kafkabroker.Config{ClientID: "other"})
	if err := ev.b.CheckTopics(brokertest.Ctx(t), []string{"m_n"}, nil); err != nil {
		t.Fatalf("before m.n exists: %v", err)
	}
	brokertest.PublishN(t, other, "m.n", 0, 1)
	deadline := time.Now().Add(brokertest.WaitLong)
	for {
		err := ev.b.CheckTopics(brokertest.Ctx(t), []string{"m_n"}, nil)
		if errors.Is(err, broker.ErrTopicConflict) {
			return
		}
		if err != nil {
			t.Fatalf("CheckTopics: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("m.n, created by another client, never showed in the check")
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
}

// TestCheckTopicsClosed: after Close the cluster cannot be asked; that is
// not a conflict.
func TestCheckTopicsClosed(t *testing.T) {
	ev := newEnv(t, kafkabroker.Config{})
	if err := ev.b.Close(); err != nil {
		t.Fatal(err)
	}
	err := ev.b.CheckTopics(context.Background(), []string{"a"}, nil)
	if err == nil || errors.Is(err, broker.ErrTopicConflict) {
		t.Fatalf("CheckTopics after Close = %v, want a non-conflict error", err)
	}
}
