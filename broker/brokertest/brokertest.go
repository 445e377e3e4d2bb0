// Package brokertest is what the broker adapters' tests share: Run, the
// conformance suite every adapter runs against a real broker of its kind
// (suite.go), and the helpers their own tests use around it: publishing
// and collecting numbered messages, waiting with a deadline, waiting for a
// broker.Checker to change its mind while a broker is stopped and started.
//
// Every wait is bounded by WaitLong; nothing sleeps to synchronise.
package brokertest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// WaitLong bounds every wait of a test; generous so that -race builds on
// a busy machine pass. Nothing waits this long when the code is right.
const WaitLong = 30 * time.Second

// Ctx returns a context bounded by WaitLong and cancelled at cleanup.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), WaitLong)
	t.Cleanup(cancel)
	return ctx
}

// Body is the body of message number i ("m-00042"): bodies compare in
// publish order.
func Body(i int) []byte { return fmt.Appendf(nil, "m-%05d", i) }

// Bodies is the set of Body(from) .. Body(from+n-1).
func Bodies(from, n int) map[string]bool {
	m := make(map[string]bool, n)
	for i := from; i < from+n; i++ {
		m[string(Body(i))] = true
	}
	return m
}

// Open opens an adapter with open, under a context bounded by WaitLong,
// and closes it at cleanup (a test may close it first: Close is
// idempotent).
func Open[B broker.Broker](t testing.TB, open func(context.Context) (B, error)) B {
	t.Helper()
	b, err := open(Ctx(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Broker.Close: %v", err)
		}
	})
	return b
}

// PublishN publishes n messages without a key, with bodies Body(from) ..
// Body(from+n-1), one after the other, and returns their results.
func PublishN(t testing.TB, b broker.Broker, topic string, from, n int) []broker.PublishResult {
	t.Helper()
	return PublishKeyed(t, b, topic, from, n, nil)
}

// PublishKeyed is PublishN with message i keyed keyOf(i) (nil: no key).
func PublishKeyed(t testing.TB, b broker.Broker, topic string, from, n int, keyOf func(int) string) []broker.PublishResult {
	t.Helper()
	res := make([]broker.PublishResult, 0, n)
	for i := from; i < from+n; i++ {
		msg := &broker.Message{Topic: topic, Body: Body(i)}
		if keyOf != nil {
			msg.Key = keyOf(i)
		}
		r, err := b.Publish(Ctx(t), msg)
		if err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
		res = append(res, r)
	}
	return res
}

// Consume starts a consumer that is closed at cleanup (a test may close it
// first: Close is idempotent).
func Consume(t testing.TB, b broker.Broker, spec broker.ConsumerSpec) broker.Consumer {
	t.Helper()
	c, err := b.Consume(Ctx(t), spec)
	if err != nil {
		t.Fatalf("Consume %+v: %v", spec, err)
	}
	t.Cleanup(func() {
		if err := c.Close(context.Background()); err != nil {
			t.Errorf("Consumer.Close: %v", err)
		}
	})
	return c
}

// Next calls c.Next with a deadline and fails the test on error.
func Next(t testing.TB, c broker.Consumer) broker.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitLong)
	defer cancel()
	d, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return d
}

// Ack acks d and fails the test on error.
func Ack(t testing.TB, d broker.Delivery) {
	t.Helper()
	if err := d.Ack(context.Background()); err != nil {
		t.Fatalf("Ack %s: %v", d.MessageID(), err)
	}
}

// Collect receives until every body in want was delivered at least once,
// acking every delivery, and returns the deliveries in the order Next
// returned them. It fails on a body not in want.
func Collect(t testing.TB, c broker.Consumer, want map[string]bool) []broker.Delivery {
	t.Helper()
	var got []broker.Delivery
	seen := make(map[string]bool, len(want))
	for len(seen) < len(want) {
		d := Next(t, c)
		k := string(d.Message().Body)
		if !want[k] {
			t.Fatalf("unexpected message %q (%s, redelivered %d)", k, d.MessageID(), d.Redelivered())
		}
		seen[k] = true
		got = append(got, d)
		Ack(t, d)
	}
	return got
}

// Counts returns how often each body was delivered.
func Counts(ds []broker.Delivery) map[string]int {
	n := make(map[string]int, len(ds))
	for _, d := range ds {
		n[string(d.Message().Body)]++
	}
	return n
}

// ExactlyOnce fails unless every body counted in got (Counts) was
// delivered once.
func ExactlyOnce(t testing.TB, got map[string]int) {
	t.Helper()
	for k, n := range got {
		if n != 1 {
			t.Errorf("%s delivered %d times", k, n)
		}
	}
}

// ExpectNothing asserts that Next delivers nothing within d.
func ExpectNothing(t testing.TB, c broker.Consumer, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	dl, err := c.Next(ctx)
	if err == nil {
		t.Fatalf("unexpected delivery %q (%s, redelivered %d)", dl.Message().Body, dl.MessageID(), dl.Redelivered())
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next: %v, want deadline exceeded", err)
	}
}

// Poll reports whether cond held within WaitLong, checking it every 10 ms.
// It may be called from any goroutine.
func Poll(cond func() bool) bool {
	deadline := time.Now().Add(WaitLong)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// WaitCheck polls c.Check (each call bounded by one second) until it
// succeeds (ready) or fails (!ready), and returns the last error. It fails
// the test if that does not happen within timeout.
func WaitCheck(t testing.TB, c broker.Checker, ready bool, timeout time.Duration) error {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Check(ctx)
		cancel()
		if (err == nil) == ready {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("Check did not turn ready=%v within %s; last: %v", ready, timeout, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// ReturnPaused takes c's next delivery, pauses c and returns the delivery
// to it (broker.Returner) through a wrapper, as the sidecar does with a
// delivery fetched as a pause began. It checks that the consumer takes
// it, refuses a second Return, and refuses an Ack of it with answered
// (the adapter's "already answered" error), then resumes c and returns
// the delivery, which c must hand out again first, uncounted.
func ReturnPaused(t testing.TB, c broker.Consumer, answered error) broker.Delivery {
	t.Helper()
	ctx := Ctx(t)
	r, ok := c.(broker.Returner)
	if !ok {
		t.Fatalf("%T is not a broker.Returner", c)
	}
	first := Next(t, c)
	if err := c.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if !r.Return(Wrap(first)) {
		t.Fatal("Return refused the consumer's own unanswered delivery")
	}
	if r.Return(first) {
		t.Error("a second Return of one delivery was taken")
	}
	if err := first.Ack(ctx); !errors.Is(err, answered) {
		t.Errorf("Ack of a returned delivery: %v, want %v", err, answered)
	}
	if err := c.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	return first
}

// Adopt hands held over to the successor broker to, as a hot upgrade
// does: each delivery's token (broker.Portable) adopted there. It checks
// that each moves and that the adopted delivery is Inherited with the
// original's id and time, and returns them under the same keys.
func Adopt(t testing.TB, to broker.Adopter, held map[int]broker.Delivery) map[int]broker.Delivery {
	t.Helper()
	adopted := make(map[int]broker.Delivery, len(held))
	for i, d := range held {
		pt, ok := d.(broker.Portable)
		if !ok {
			t.Fatalf("held delivery %d (%T) is not Portable", i, d)
		}
		tok, ok := pt.Token()
		if !ok {
			t.Fatalf("no token for held delivery %d", i)
		}
		a, err := to.Adopt(tok)
		if err != nil {
			t.Fatalf("adopt %d: %v", i, err)
		}
		if _, ok := a.(broker.Inherited); !ok {
			t.Errorf("adopted delivery %d is not Inherited", i)
		}
		if a.MessageID() != d.MessageID() || !a.Timestamp().Equal(d.Timestamp()) {
			t.Errorf("adopted %s/%s, want %s/%s", a.MessageID(), a.Timestamp(), d.MessageID(), d.Timestamp())
		}
		adopted[i] = a
	}
	return adopted
}

// Wrap returns d inside a wrapper that has only Unwrap besides the
// Delivery methods, as the sidecar's deliveries reach an adapter's
// optional interfaces (broker.As).
func Wrap(d broker.Delivery) broker.Delivery { return wrapped{d} }

type wrapped struct{ broker.Delivery }

func (w wrapped) Unwrap() broker.Delivery { return w.Delivery }
