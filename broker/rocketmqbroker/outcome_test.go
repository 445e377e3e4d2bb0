package rocketmqbroker_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
	"github.com/msgmesh/msgmesh/internal/rmqtest"
)

// TestPublishOutcome: a failed Publish says "not stored" (ErrUnavailable)
// only when no attempt may have stored the message, on faults the test
// broker injects into sends.
func TestPublishOutcome(t *testing.T) {
	const topic, rtopic = "outcome", "outcome"
	isSend := func(code int16) bool {
		return code == rmqtest.CodeSendMessage || code == rmqtest.CodeSendMessageV2 || code == rmqtest.CodeSendBatchMessage
	}
	publish := func(b *rocketmqbroker.Broker, body string, within time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		_, err := b.Publish(ctx, &broker.Message{Topic: topic, Body: []byte(body)})
		return err
	}
	stored := func(tb *rmqtest.Broker) int64 { return storedIn(tb, rtopic) }
	// setup returns a Broker whose producer already has the topic's route.
	setup := func(t *testing.T) *env {
		ev := newEnv(t, rocketmqbroker.Config{})
		if err := publish(ev.b, "first", brokertest.WaitLong); err != nil {
			t.Fatal(err)
		}
		return ev
	}

	t.Run("refused on every attempt", func(t *testing.T) {
		ev := setup(t)
		ev.tb.Intercept(func(code int16, _ map[string]string) rmqtest.Action {
			if isSend(code) {
				return rmqtest.Fail
			}
			return rmqtest.Pass
		})
		err := publish(ev.b, "x", 2*time.Second)
		if !broker.NotStored(err) || !errors.Is(err, broker.ErrUnavailable) {
			t.Fatalf("Publish: %v, want ErrUnavailable (not stored)", err)
		}
		if n := stored(ev.tb); n != 1 {
			t.Fatalf("%d messages stored, want 1", n)
		}
	})
	t.Run("stored, connection cut, then refused", func(t *testing.T) {
		// The last attempt's error is a refusal, but the first one was
		// stored: the outcome is unknown.
		ev := setup(t)
		var sends atomic.Int32
		ev.tb.Intercept(func(code int16, _ map[string]string) rmqtest.Action {
			switch {
			case !isSend(code):
				return rmqtest.Pass
			case sends.Add(1) == 1:
				return rmqtest.HandleThenDisconnect
			}
			return rmqtest.Fail
		})
		// Longer than the client's 3 s wait for the lost answer.
		err := publish(ev.b, "x", 5*time.Second)
		if !errors.Is(err, broker.ErrOutcomeUnknown) {
			t.Fatalf("Publish: %v, want ErrOutcomeUnknown", err)
		}
		if sends.Load() < 2 {
			t.Fatalf("%d send attempts, want a retry after the lost answer", sends.Load())
		}
		if n := stored(ev.tb); n != 2 {
			t.Fatalf("%d messages stored, want 2 (the cut one was stored)", n)
		}
	})
	t.Run("answer too late", func(t *testing.T) {
		ev := setup(t)
		release := make(chan struct{})
		ev.tb.Intercept(func(code int16, _ map[string]string) rmqtest.Action {
			if isSend(code) {
				<-release
			}
			return rmqtest.Pass
		})
		err := publish(ev.b, "late", 300*time.Millisecond)
		close(release)
		if !errors.Is(err, broker.ErrOutcomeUnknown) {
			t.Fatalf("Publish: %v, want ErrOutcomeUnknown", err)
		}
		if !brokertest.Poll(func() bool { return stored(ev.tb) == 2 }) {
			t.Fatalf("%d messages stored, want 2 (the late one)", stored(ev.tb))
		}
	})
}
