package kafkabroker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
)

// Kafka error codes the tests answer with.
const (
	codeRequestTimedOut   int16 = 7
	codeNotEnoughReplicas int16 = 19
)

// TestPublishOutcome: a failed Publish says "not stored" (ErrUnavailable)
// only when no attempt may have stored the message, on kfake faults
// injected into produce requests.
func TestPublishOutcome(t *testing.T) {
	t.Parallel()
	const topic = "outcome"
	publish := func(t *testing.T, b *kafkabroker.Broker, body string, within time.Duration) (broker.PublishResult, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		return b.Publish(ctx, &broker.Message{Topic: topic, Body: []byte(body)})
	}
	// setup starts a one-partition topic with one message stored (so the
	// produce path is warm) and returns the cluster and Broker.
	setup := func(t *testing.T) (*kfake.Cluster, *kafkabroker.Broker) {
		ev := newEnv(t, kafkabroker.Config{Partitions: 1})
		if r, err := publish(t, ev.b, "first", brokertest.WaitLong); err != nil || r.Offset != 0 {
			t.Fatalf("first publish: %+v %v", r, err)
		}
		return ev.c, ev.b
	}
	// nextOffset publishes once more and returns the offset it got: how
	// many messages the partition held.
	nextOffset := func(t *testing.T, b *kafkabroker.Broker) int64 {
		t.Helper()
		r, err := publish(t, b, "probe", brokertest.WaitLong)
		if err != nil {
			t.Fatalf("probe publish: %v", err)
		}
		return r.Offset
	}

	t.Run("refused on every attempt", func(t *testing.T) {
		c, b := setup(t)
		c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			return kafkatest.RefuseProduce(req.(*kmsg.ProduceRequest), codeNotEnoughReplicas), nil, true
		})
		_, err := publish(t, b, "x", 500*time.Millisecond)
		if !broker.NotStored(err) || !errors.Is(err, broker.ErrUnavailable) {
			t.Fatalf("Publish: %v, want ErrUnavailable (not stored)", err)
		}
	})
	t.Run("answer after the leader appended", func(t *testing.T) {
		c, b := setup(t)
		c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			return kafkatest.RefuseProduce(req.(*kmsg.ProduceRequest), codeRequestTimedOut), nil, true
		})
		if _, err := publish(t, b, "x", 500*time.Millisecond); !errors.Is(err, broker.ErrOutcomeUnknown) {
			t.Fatalf("Publish: %v, want ErrOutcomeUnknown", err)
		}
	})
	t.Run("answer too late", func(t *testing.T) {
		c, b := setup(t)
		release := make(chan struct{})
		c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			c.SleepControl(func() { <-release })
			return nil, nil, false // then stored and answered as usual
		})
		_, err := publish(t, b, "late", 300*time.Millisecond)
		close(release)
		if !errors.Is(err, broker.ErrOutcomeUnknown) {
			t.Fatalf("Publish: %v, want ErrOutcomeUnknown", err)
		}
		if got := nextOffset(t, b); got != 2 {
			t.Fatalf("next offset %d, want 2: the late message was stored after all", got)
		}
	})
	t.Run("connection cut, then refused", func(t *testing.T) {
		// The last attempt's error is a refusal, but the first one may
		// have been stored: the outcome is unknown.
		c, b := setup(t)
		c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			return nil, errors.New("injected fault: connection cut"), true // once
		})
		c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			return kafkatest.RefuseProduce(req.(*kmsg.ProduceRequest), codeNotEnoughReplicas), nil, true
		})
		_, err := publish(t, b, "x", 800*time.Millisecond)
		if !errors.Is(err, broker.ErrOutcomeUnknown) || !errors.Is(err, kafka.NotEnoughReplicas) {
			t.Fatalf("Publish: %v, want ErrOutcomeUnknown with the last attempt's refusal", err)
		}
	})
	t.Run("connection cut once, retried", func(t *testing.T) {
		c, b := setup(t)
		c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			return nil, errors.New("injected fault: connection cut"), true // once
		})
		r, err := publish(t, b, "x", brokertest.WaitLong)
		if err != nil || r.Offset != 1 {
			t.Fatalf("Publish: %+v %v, want offset 1 after a retry", r, err)
		}
	})
}
