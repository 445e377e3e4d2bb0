package rmqtest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/internal/rmqtest"
	"github.com/msgmesh/msgmesh/internal/rmqtest/testbroker"
)

// These tests run the real github.com/apache/rocketmq-client-go/v2
// producer and consumers against the test broker.

const waitLong = 30 * time.Second

func TestMain(m *testing.M) {
	rlog.SetLogger(quietRlog{}) // before any client exists
	os.Exit(m.Run())
}

// quietRlog discards the client's log.
type quietRlog struct{}

func (quietRlog) Debug(string, map[string]interface{})   {}
func (quietRlog) Info(string, map[string]interface{})    {}
func (quietRlog) Warning(string, map[string]interface{}) {}
func (quietRlog) Error(string, map[string]interface{})   {}
func (quietRlog) Fatal(string, map[string]interface{})   {}
func (quietRlog) Level(string)                           {}
func (quietRlog) OutputPath(string) error                { return nil }

var instances atomic.Int64

// instance is a client instance name unique to the test binary: clients
// with the same name share one connection set.
func instance(t testing.TB) string {
	return fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), instances.Add(1))
}

// shutdownQuiet waits until tb holds at least pulls long polls (every pull
// loop of the clients being shut down is idle) and then runs shut. The
// client v2.1.2 does not synchronise its shutdown with its own goroutines
// (see raceFence); shutting down an idle client keeps the race detector
// quiet about the client's internals.
func shutdownQuiet(t testing.TB, tb *rmqtest.Broker, pulls int, shut func() error) {
	t.Helper()
	if !brokertest.Poll(func() bool { return tb.WaitingPulls() >= pulls }) {
		t.Errorf("%d pulls held, want %d", tb.WaitingPulls(), pulls)
	}
	raceFence()
	if err := shut(); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func newProducer(t testing.TB, tb *rmqtest.Broker, name string) rocketmq.Producer {
	t.Helper()
	p, err := producer.NewDefaultProducer(
		producer.WithNameServer([]string{tb.NameServer()}),
		producer.WithGroupName("test-producer"),
		producer.WithInstanceName(name),
		producer.WithRetry(0),
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raceFence(); _ = p.Shutdown() })
	return p
}

func sendN(t testing.TB, p rocketmq.Producer, topic string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		r, err := p.SendSync(context.Background(), primitive.NewMessage(topic, []byte(fmt.Sprintf("m-%03d", i))))
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if r.Status != primitive.SendOK || r.MsgID == "" || len(r.OffsetMsgID) != 32 || r.MessageQueue.Topic != topic {
			t.Fatalf("send %d: %v", i, r)
		}
	}
}

func names(from, n int) map[string]bool {
	m := make(map[string]bool, n)
	for i := from; i < from+n; i++ {
		m[fmt.Sprintf("m-%03d", i)] = true
	}
	return m
}

func newPullConsumer(t testing.TB, tb *rmqtest.Broker, group, topic string, opts ...consumer.Option) rocketmq.PullConsumer {
	t.Helper()
	opts = append([]consumer.Option{
		consumer.WithNameServer([]string{tb.NameServer()}),
		consumer.WithGroupName(group),
		consumer.WithInstance(instance(t)),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
		consumer.WithPullBatchSize(1),
		consumer.WithMaxReconsumeTimes(16),
	}, opts...)
	c, err := consumer.NewPullConsumer(opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(topic, consumer.MessageSelector{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

// pollOne polls one message (fails the test on timeout).
func pollOne(t testing.TB, c rocketmq.PullConsumer) (*consumer.ConsumeRequest, *primitive.MessageExt) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for time.Now().Before(deadline) {
		cr, err := c.Poll(context.Background(), time.Until(deadline))
		if err == nil && len(cr.GetMsgList()) == 1 {
			return cr, cr.GetMsgList()[0]
		}
	}
	t.Fatal("no message")
	return nil, nil
}

// pollAck receives until want is covered, acking each message, and
// returns the delivery counts.
func pollAck(t testing.TB, c rocketmq.PullConsumer, want map[string]bool) map[string]int {
	t.Helper()
	got := make(map[string]int)
	for missing := len(want); missing > 0; {
		cr, m := pollOne(t, c)
		k := string(m.Body)
		if !want[k] {
			t.Fatalf("unexpected message %q", k)
		}
		if got[k] == 0 {
			missing--
		}
		got[k]++
		c.ACK(context.Background(), cr, consumer.ConsumeSuccess)
	}
	return got
}

// pullsPerConsumer: one pull loop per queue of a default topic and one for
// the group's retry topic.
const pullsPerConsumer = rmqtest.DefaultQueuesPerTopic + 1

func TestPushConsumerReceivesAll(t *testing.T) {
	const topic, group = "push", "push-group"
	tb := testbroker.Start(t, rmqtest.Config{})
	var routeQueries atomic.Int32
	tb.Intercept(func(code int16, f map[string]string) rmqtest.Action {
		if code == rmqtest.CodeGetRouteInfoByTopic && f["topic"] == topic {
			routeQueries.Add(1)
		}
		return rmqtest.Pass
	})
	// The push consumer shares the producer's client instance. Its
	// client (v2.1.2) races with itself when a consumer starts together
	// with its client: the route update the client runs 10 ms after it
	// starts reads the consumer's subscription while the first rebalance
	// writes it. With the producer's client already running, and its
	// first route update seen at the broker (the second route query for
	// the topic; the first is the producer's own), that cannot happen.
	shared := instance(t)
	p := newProducer(t, tb, shared)
	sendN(t, p, topic, 0, 100)
	if !brokertest.Poll(func() bool { return routeQueries.Load() >= 2 }) {
		t.Fatal("the client's route update did not run")
	}

	var (
		mu  sync.Mutex
		got = make(map[string]int)
	)
	c, err := consumer.NewPushConsumer(
		consumer.WithNameServer([]string{tb.NameServer()}),
		consumer.WithGroupName(group),
		consumer.WithInstance(shared),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
	)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Subscribe(topic, consumer.MessageSelector{}, func(ctx context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			got[string(m.Body)]++
		}
		return consumer.ConsumeSuccess, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	if !brokertest.Poll(func() bool { return count() == 100 }) {
		t.Fatalf("received %d of 100", count())
	}
	// Everything consumed: the offsets reach the broker on shutdown.
	shutdownQuiet(t, tb, pullsPerConsumer, c.Shutdown)
	mu.Lock()
	if len(got) != 100 {
		t.Errorf("got %d distinct messages", len(got))
	}
	mu.Unlock()
	if !brokertest.Poll(func() bool { return tb.Committed(group, topic) == 100 }) {
		t.Fatalf("committed %d, want 100", tb.Committed(group, topic))
	}
}

func TestOffsetsSurviveConsumerRestart(t *testing.T) {
	const topic, group = "restart", "restart-group"
	tb := testbroker.Start(t, rmqtest.Config{})
	p := newProducer(t, tb, instance(t))
	sendN(t, p, topic, 0, 100)

	c := newPullConsumer(t, tb, group, topic)
	consumed := make(map[string]bool)
	for range 60 {
		cr, m := pollOne(t, c)
		consumed[string(m.Body)] = true
		c.ACK(context.Background(), cr, consumer.ConsumeSuccess)
	}
	// The other 40 are fetched meanwhile (at most 34 per queue fit the
	// client's buffers); shut down once they are.
	shutdownQuiet(t, tb, pullsPerConsumer, c.Shutdown)
	if !brokertest.Poll(func() bool { return tb.Committed(group, topic) == 60 }) {
		t.Fatalf("committed %d, want 60", tb.Committed(group, topic))
	}

	c2 := newPullConsumer(t, tb, group, topic)
	rest := names(0, 100)
	for k := range consumed {
		delete(rest, k)
	}
	brokertest.ExactlyOnce(t, pollAck(t, c2, rest))

	// Long polling: a message sent now reaches the idle consumer at once.
	if !brokertest.Poll(func() bool { return tb.WaitingPulls() >= pullsPerConsumer }) {
		t.Fatal("the consumer's pulls are not held")
	}
	sent := time.Now()
	sendN(t, p, topic, 100, 1)
	brokertest.ExactlyOnce(t, pollAck(t, c2, names(100, 1)))
	if d := time.Since(sent); d > 5*time.Second {
		t.Fatalf("a new message took %v to arrive", d)
	}
	shutdownQuiet(t, tb, pullsPerConsumer, c2.Shutdown)
}

func TestSendBackRetriesThenDeadLetters(t *testing.T) {
	const topic, group = "sendback", "sb-group"
	levels := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond}
	tb := testbroker.Start(t, rmqtest.Config{DelayLevels: levels})
	p := newProducer(t, tb, instance(t))
	sendN(t, p, topic, 0, 1)
	c := newPullConsumer(t, tb, group, topic, consumer.WithMaxReconsumeTimes(2))

	cr, first := pollOne(t, c)
	origID := first.MsgId
	for attempt := 1; attempt <= 2; attempt++ {
		nacked := time.Now()
		// Delay level 0: the broker picks 3 + reconsume times.
		c.ACK(context.Background(), cr, consumer.ConsumeRetryLater)
		var m *primitive.MessageExt
		cr, m = pollOne(t, c)
		if since, want := time.Since(nacked), levels[2+attempt-1]; since < want {
			t.Fatalf("attempt %d: redelivered after %v, before its delay %v", attempt, since, want)
		}
		if m.ReconsumeTimes != int32(attempt) || string(m.Body) != "m-000" ||
			m.GetProperty(primitive.PropertyOriginMessageId) != origID ||
			m.GetProperty(primitive.PropertyRetryTopic) != topic ||
			m.Topic != "%RETRY%"+group || m.BornTimestamp != first.BornTimestamp {
			t.Fatalf("attempt %d: retry message %v", attempt, m)
		}
	}
	// Reconsume times reached the maximum: the next send-back goes to the
	// dead-letter topic.
	c.ACK(context.Background(), cr, consumer.ConsumeRetryLater)
	if !brokertest.Poll(func() bool { return tb.MaxOffset("%DLQ%"+group, 0) == 1 }) {
		t.Fatal("nothing in the dead-letter topic")
	}
	shutdownQuiet(t, tb, pullsPerConsumer, c.Shutdown)
}

func TestDataDirSurvivesBrokerRestart(t *testing.T) {
	const topic, group = "durable", "durable-group"
	dir := t.TempDir()
	cfg := rmqtest.Config{DataDir: dir, DelayLevels: []time.Duration{200 * time.Millisecond, 1500 * time.Millisecond}}
	tb, err := rmqtest.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			tb.Close()
		}
	})

	p := newProducer(t, tb, instance(t))
	sendN(t, p, topic, 0, 10)
	delayed := func(level int, name string) {
		m := primitive.NewMessage(topic, []byte(name)).WithDelayTimeLevel(level)
		if _, err := p.SendSync(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	total := func(b *rmqtest.Broker) (n int64) {
		for q := range b.Queues(topic) {
			n += b.MaxOffset(topic, q)
		}
		return n
	}
	delayed(1, "delayed-a")
	if !brokertest.Poll(func() bool { return total(tb) == 11 }) {
		t.Fatal("delayed-a did not move to its topic")
	}
	delayed(2, "delayed-b") // still waiting when the broker stops

	c := newPullConsumer(t, tb, group, topic)
	consumed := make(map[string]bool)
	for range 4 {
		cr, m := pollOne(t, c)
		consumed[string(m.Body)] = true
		c.ACK(context.Background(), cr, consumer.ConsumeSuccess)
	}
	shutdownQuiet(t, tb, pullsPerConsumer, c.Shutdown)
	if !brokertest.Poll(func() bool { return tb.Committed(group, topic) == 4 }) {
		t.Fatalf("committed %d, want 4", tb.Committed(group, topic))
	}
	raceFence()
	_ = p.Shutdown()
	closed = true
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}

	// A torn record at the end of the log (a crash mid-write) is cut off.
	f, err := os.OpenFile(filepath.Join(dir, "commitlog"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{0, 0, 1, 0, 0xda, 0xa3}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	tb2 := testbroker.Start(t, cfg)
	if n := total(tb2); n != 11 {
		t.Fatalf("after restart: %d messages in the topic, want 11", n)
	}
	if n := tb2.Committed(group, topic); n != 4 {
		t.Fatalf("after restart: committed %d, want 4", n)
	}
	want := names(0, 10)
	want["delayed-a"] = true
	want["delayed-b"] = true // moved after the restart
	for k := range consumed {
		delete(want, k)
	}
	c2 := newPullConsumer(t, tb2, group, topic)
	brokertest.ExactlyOnce(t, pollAck(t, c2, want))
	if n := total(tb2); n != 12 {
		t.Fatalf("%d messages in the topic, want 12 (delayed-a moved once)", n)
	}
	shutdownQuiet(t, tb2, pullsPerConsumer, c2.Shutdown)
}
