package rocketmqbroker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
	"github.com/msgmesh/msgmesh/internal/rmqtest"
	"github.com/msgmesh/msgmesh/internal/rmqtest/testbroker"
)

// waitLong bounds every wait of a test; generous so that -race builds on a
// busy machine pass. Nothing waits this long when the code is right.
const waitLong = 30 * time.Second

var quietLog = slog.New(slog.DiscardHandler)

// env is one test broker and a Broker on it.
type env struct {
	tb *rmqtest.Broker
	b  *rocketmqbroker.Broker
	// live counts the consumers consume started and not yet closed.
	live atomic.Int32
}

// pullsPerConsumer is how many pull loops a consumer of a topic with the
// default queue count runs once idle: one per queue and one for its
// group's retry topic.
const pullsPerConsumer = rmqtest.DefaultQueuesPerTopic + 1

// quiesce waits until every pull loop of the env's live consumers is
// parked in a long poll at the broker, with want more on top. The
// RocketMQ client v2.1.2 shuts a consumer down without synchronising with
// its own pull goroutines (see race.go); closing a consumer while it is
// fetching makes the race detector report the client. Tests close
// consumers at a quiet moment, which this establishes.
func (ev *env) quiesce(t testing.TB, want int) {
	t.Helper()
	n := int(ev.live.Load())*pullsPerConsumer + want
	if !poll(func() bool { return ev.tb.WaitingPulls() >= n }) {
		t.Fatalf("%d pulls waiting at the broker, want %d", ev.tb.WaitingPulls(), n)
	}
}

// closeQuiet closes c once the client is idle.
func (ev *env) closeQuiet(t testing.TB, c broker.Consumer) {
	t.Helper()
	ev.quiesce(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Errorf("Consumer.Close: %v", err)
	}
	ev.live.Add(-1)
}

// newEnv starts a test broker (in memory, 4 queues per topic) and a Broker
// on it.
func newEnv(t testing.TB, cfg rocketmqbroker.Config) *env {
	t.Helper()
	tb := testbroker.Start(t, rmqtest.Config{})
	return &env{tb: tb, b: newBroker(t, tb, cfg)}
}

// newBroker is a Broker on tb, closed at cleanup.
func newBroker(t testing.TB, tb *rmqtest.Broker, cfg rocketmqbroker.Config) *rocketmqbroker.Broker {
	t.Helper()
	cfg.NameServers = []string{tb.NameServer()}
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	b, err := rocketmqbroker.New(ctxT(t), cfg)
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

// publishN publishes n messages with bodies body(from)..body(from+n-1).
func publishN(t testing.TB, b *rocketmqbroker.Broker, topic string, from, n int) []broker.PublishResult {
	t.Helper()
	res := make([]broker.PublishResult, 0, n)
	for i := from; i < from+n; i++ {
		r, err := b.Publish(ctxT(t), &broker.Message{Topic: topic, Body: body(i)})
		if err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
		res = append(res, r)
	}
	return res
}

// consume starts a consumer of a topic with the default queue count; a
// consumer the test did not close is closed at cleanup, at a quiet moment.
func (ev *env) consume(t testing.TB, spec broker.ConsumerSpec) broker.Consumer {
	t.Helper()
	c, err := ev.b.Consume(ctxT(t), spec)
	if err != nil {
		t.Fatalf("Consume %+v: %v", spec, err)
	}
	ev.live.Add(1)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { ev.closeQuiet(t, c) }) })
	return &trackedConsumer{Consumer: c, closed: &once, ev: ev, t: t}
}

// trackedConsumer makes an explicit Close of a test go through closeQuiet.
type trackedConsumer struct {
	broker.Consumer
	closed *sync.Once
	ev     *env
	t      testing.TB
}

func (c *trackedConsumer) Close(ctx context.Context) error {
	c.closed.Do(func() { c.ev.closeQuiet(c.t, c.Consumer) })
	return nil
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

// collect receives until want bodies were seen at least once each, acking
// every delivery; it returns how often each body was delivered. It fails
// on a body not in want.
func collect(t testing.TB, c broker.Consumer, want map[string]bool) map[string]int {
	t.Helper()
	got := make(map[string]int)
	for missing := len(want); missing > 0; {
		d := next(t, c)
		k := string(d.Message().Body)
		if !want[k] {
			t.Fatalf("unexpected message %q (%s)", k, d.MessageID())
		}
		if got[k] == 0 {
			missing--
		}
		got[k]++
		if err := d.Ack(context.Background()); err != nil {
			t.Fatalf("Ack: %v", err)
		}
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

// exactlyOnce fails unless every body in got was delivered once.
func exactlyOnce(t testing.TB, got map[string]int) {
	t.Helper()
	for k, n := range got {
		if n != 1 {
			t.Errorf("%s delivered %d times", k, n)
		}
	}
}

// poll reports whether cond held within waitLong, checking it every 10 ms.
func poll(cond func() bool) bool {
	deadline := time.Now().Add(waitLong)
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

// committed is the sum of the offsets the test broker has committed for
// group on topic's queues: the number of messages the group consumed,
// when every returned message was acked.
func committed(tb *rmqtest.Broker, group, topic string) int64 {
	var sum int64
	for q := range tb.Queues(topic) {
		if off, ok := tb.ConsumerOffset(group, topic, q); ok {
			sum += off
		}
	}
	return sum
}
