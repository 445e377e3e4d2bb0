package kafkabroker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
)

// waitLong bounds every wait of a test; generous so that -race builds on a
// busy machine pass. Nothing waits this long when the code is right.
const waitLong = 30 * time.Second

// testLog discards logs unless KAFKABROKER_TEST_LOG is set.
var testLog = func() *slog.Logger {
	if os.Getenv("KAFKABROKER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}()

// env is one kfake cluster and a Broker on it.
type env struct {
	c *kfake.Cluster
	b *kafkabroker.Broker
}

// newEnv starts a cluster and a Broker on it; cfg.Brokers and a nil
// cfg.Logger are filled in.
func newEnv(t testing.TB, cfg kafkabroker.Config, opts ...kfake.Opt) *env {
	t.Helper()
	c := kafkatest.Start(t, opts...)
	return &env{c: c, b: newBroker(t, c, cfg)}
}

// newBroker is a second (or first) Broker on cluster c, closed at cleanup.
func newBroker(t testing.TB, c *kfake.Cluster, cfg kafkabroker.Config) *kafkabroker.Broker {
	t.Helper()
	cfg.Brokers = kafkatest.Addrs(c)
	if cfg.Logger == nil {
		cfg.Logger = testLog
	}
	b, err := kafkabroker.New(ctxT(t), cfg)
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

// ctxT is a context bounded by waitLong and cancelled at cleanup.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

func body(i int) []byte { return fmt.Appendf(nil, "m-%05d", i) }

// publishN publishes n messages with bodies body(from)..body(from+n-1),
// with key keyOf(i) (nil: no key).
func publishN(t testing.TB, b *kafkabroker.Broker, topic string, from, n int, keyOf func(int) string) []broker.PublishResult {
	t.Helper()
	res := make([]broker.PublishResult, 0, n)
	for i := from; i < from+n; i++ {
		msg := &broker.Message{Topic: topic, Body: body(i)}
		if keyOf != nil {
			msg.Key = keyOf(i)
		}
		r, err := b.Publish(ctxT(t), msg)
		if err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
		res = append(res, r)
	}
	return res
}

// consume starts a consumer closed at cleanup (a test may close it first).
func consume(t testing.TB, b *kafkabroker.Broker, spec broker.ConsumerSpec) broker.Consumer {
	t.Helper()
	c, err := b.Consume(ctxT(t), spec)
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

// next calls Next with a deadline and fails the test on error.
func next(t testing.TB, c broker.Consumer) broker.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	d, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return d
}

func ack(t testing.TB, d broker.Delivery) {
	t.Helper()
	if err := d.Ack(context.Background()); err != nil {
		t.Fatalf("Ack %s: %v", d.MessageID(), err)
	}
}

// collect receives until every body in want was seen at least once,
// acking every delivery; it returns the deliveries in order. It fails on a
// body not in want.
func collect(t testing.TB, c broker.Consumer, want map[string]bool) []broker.Delivery {
	t.Helper()
	var got []broker.Delivery
	seen := make(map[string]bool)
	for len(seen) < len(want) {
		d := next(t, c)
		k := string(d.Message().Body)
		if !want[k] {
			t.Fatalf("unexpected message %q (%s)", k, d.MessageID())
		}
		seen[k] = true
		got = append(got, d)
		ack(t, d)
	}
	return got
}

func bodies(from, n int) map[string]bool {
	m := make(map[string]bool, n)
	for i := from; i < from+n; i++ {
		m[string(body(i))] = true
	}
	return m
}

// expectNothing asserts that Next delivers nothing within d.
func expectNothing(t testing.TB, c broker.Consumer, d time.Duration) {
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
