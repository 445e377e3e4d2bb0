package rocketmqbroker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
	"github.com/msgmesh/msgmesh/internal/rmqtest"
	"github.com/msgmesh/msgmesh/internal/rmqtest/testbroker"
)

// The helpers every adapter's tests use (publishing and collecting
// numbered messages, waits with a deadline) are in package brokertest;
// these are the RocketMQ-only ones.

var quietLog = slog.New(slog.DiscardHandler)

// TestConformance runs the broker conformance suite on the test broker,
// through quietBroker.
func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t testing.TB) broker.Broker {
		ev := newEnv(t, rocketmqbroker.Config{})
		return quietBroker{Broker: ev.b, ev: ev}
	})
}

// env is one test broker and a Broker on it.
type env struct {
	tb *rmqtest.Broker
	b  *rocketmqbroker.Broker

	mu     sync.Mutex
	live   int  // consumers started through quietBroker and not closed
	closed bool // the Broker was closed through quietBroker
}

// pullsPerConsumer is how many pull loops a consumer of a topic with the
// default queue count runs once idle: one per queue and one for its
// group's retry topic.
const pullsPerConsumer = rmqtest.DefaultQueuesPerTopic + 1

// waitQuiet waits until every pull loop of the env's live consumers is
// parked in a long poll at the broker, with want more on top. The
// RocketMQ client v2.1.2 shuts a consumer down without synchronising with
// its own pull goroutines (see race.go); closing a consumer while it is
// fetching makes the race detector report the client. Tests close
// consumers at a quiet moment, which this establishes.
func (ev *env) waitQuiet(want int) error {
	ev.mu.Lock()
	n, closed := ev.live*pullsPerConsumer+want, ev.closed
	ev.mu.Unlock()
	if closed {
		return nil
	}
	if !brokertest.Poll(func() bool { return ev.tb.WaitingPulls() >= n }) {
		return fmt.Errorf("%d pulls waiting at the broker, want %d", ev.tb.WaitingPulls(), n)
	}
	return nil
}

// quiesce is waitQuiet for a test's own goroutine.
func (ev *env) quiesce(t testing.TB, want int) {
	t.Helper()
	if err := ev.waitQuiet(want); err != nil {
		t.Fatal(err)
	}
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
	return brokertest.Open(t, func(ctx context.Context) (*rocketmqbroker.Broker, error) { return rocketmqbroker.New(ctx, cfg) })
}

// consume starts a consumer of a topic with the default queue count,
// closed at a quiet moment: when the test closes it, or at cleanup.
func (ev *env) consume(t testing.TB, spec broker.ConsumerSpec) broker.Consumer {
	t.Helper()
	return brokertest.Consume(t, quietBroker{Broker: ev.b, ev: ev}, spec)
}

// quietBroker is the env's Broker as the conformance suite and consume
// use it: its consumers, and the Broker itself, close at a quiet moment
// (waitQuiet), and Settle waits for the offsets a closed consumer commits
// one-way. It keeps the Broker's other methods (Checker, SizeLimiter,
// TopicChecker).
type quietBroker struct {
	*rocketmqbroker.Broker
	ev *env
}

var _ brokertest.Settler = quietBroker{}

func (q quietBroker) Consume(ctx context.Context, spec broker.ConsumerSpec) (broker.Consumer, error) {
	c, err := q.Broker.Consume(ctx, spec)
	if err != nil {
		return nil, err
	}
	q.ev.mu.Lock()
	q.ev.live++
	q.ev.mu.Unlock()
	return &quietConsumer{Consumer: c, ev: q.ev}, nil
}

func (q quietBroker) Close() error {
	err := q.ev.waitQuiet(0)
	q.ev.mu.Lock()
	q.ev.closed = true
	q.ev.mu.Unlock()
	return errors.Join(err, q.Broker.Close())
}

// Settle waits until the broker's committed offsets of spec's group count
// acked messages: a consumer's shutdown commits them one-way.
func (q quietBroker) Settle(t testing.TB, spec broker.ConsumerSpec, acked int) {
	t.Helper()
	rgroup := rocketmqbroker.ConsumerGroup(rocketmqbroker.DefaultGroupPrefix, spec.Group, spec.Topic)
	rtopic := rocketmqbroker.RocketTopic(spec.Topic)
	if !brokertest.Poll(func() bool { return q.ev.tb.Committed(rgroup, rtopic) == int64(acked) }) {
		t.Fatalf("committed %d offsets of %s, want %d", q.ev.tb.Committed(rgroup, rtopic), rgroup, acked)
	}
}

// quietConsumer closes its consumer at a quiet moment the first time.
type quietConsumer struct {
	broker.Consumer
	ev *env

	mu     sync.Mutex
	closed bool
}

func (c *quietConsumer) Close(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.Consumer.Close(ctx)
	}
	c.closed = true
	err := errors.Join(c.ev.waitQuiet(0), c.Consumer.Close(ctx))
	c.ev.mu.Lock()
	c.ev.live--
	c.ev.mu.Unlock()
	return err
}

// storedIn counts the messages stored in RocketMQ topic rtopic's queues.
func storedIn(tb *rmqtest.Broker, rtopic string) int64 {
	var n int64
	for q := range tb.Queues(rtopic) {
		n += tb.MaxOffset(rtopic, q)
	}
	return n
}
