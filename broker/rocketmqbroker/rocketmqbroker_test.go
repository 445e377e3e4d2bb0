package rocketmqbroker_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
	"github.com/msgmesh/msgmesh/internal/rmqtest"
	"github.com/msgmesh/msgmesh/internal/rmqtest/testbroker"
)

func TestPublishConsumeAll(t *testing.T) {
	const n = 500
	ev := newEnv(t, rocketmqbroker.Config{})
	res := brokertest.PublishN(t, ev.b, "orders.created", 0, n)
	ids := make(map[string]bool, n)
	last := map[int32]int64{}
	for i, r := range res {
		if r.Stream != "orders|created" || r.Partition < 0 || r.Partition >= rmqtest.DefaultQueuesPerTopic {
			t.Fatalf("result %d: %+v", i, r)
		}
		if r.MessageID == "" || ids[r.MessageID] {
			t.Fatalf("result %d: MessageID %q empty or repeated", i, r.MessageID)
		}
		ids[r.MessageID] = true
		if prev, ok := last[r.Partition]; ok && r.Offset != prev+1 {
			t.Fatalf("queue %d: offset %d after %d", r.Partition, r.Offset, prev)
		}
		last[r.Partition] = r.Offset
	}

	c := ev.consume(t, broker.ConsumerSpec{Topic: "orders.created", Group: "billing"})
	got := brokertest.Counts(brokertest.Collect(t, c, brokertest.Bodies(0, n)))
	brokertest.ExactlyOnce(t, got)
	brokertest.ExpectNothing(t, c, 300*time.Millisecond)
}

func TestSameKeySameQueue(t *testing.T) {
	ev := newEnv(t, rocketmqbroker.Config{})
	queueOf := map[string]int32{}
	used := map[int32]bool{}
	for i := range 80 {
		key := fmt.Sprintf("customer-%d", i%8)
		r, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: "orders", Key: key, Body: brokertest.Body(i)})
		if err != nil {
			t.Fatal(err)
		}
		if q, ok := queueOf[key]; ok && q != r.Partition {
			t.Fatalf("key %s went to queue %d and %d", key, q, r.Partition)
		}
		queueOf[key] = r.Partition
		used[r.Partition] = true
	}
	if len(used) < 2 {
		t.Fatalf("8 keys all hashed to one queue: %v", queueOf)
	}
	// The key comes back with each message.
	c := ev.consume(t, broker.ConsumerSpec{Topic: "orders", Group: "g"})
	for range 80 {
		d := brokertest.Next(t, c)
		var i int
		if _, err := fmt.Sscanf(string(d.Message().Body), "m-%05d", &i); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("customer-%d", i%8); d.Message().Key != want {
			t.Fatalf("message %d: key %q, want %q", i, d.Message().Key, want)
		}
		if err := d.Ack(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHeadersRoundTrip(t *testing.T) {
	ev := newEnv(t, rocketmqbroker.Config{})
	in := &broker.Message{
		Topic: "a.b.c",
		Key:   "key with spaces",
		Headers: []broker.Header{
			{Key: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
			{Key: "Empty", Value: ""},
			{Key: "utf8", Value: "grüße, 世界"},
		},
		Body: []byte(strings.Repeat("x", 10000)), // compressed by the client
	}
	if _, err := ev.b.Publish(brokertest.Ctx(t), in); err != nil {
		t.Fatal(err)
	}
	c := ev.consume(t, broker.ConsumerSpec{Topic: "a.b.c", Group: "g"})
	d := brokertest.Next(t, c)
	got := d.Message()
	want := []broker.Header{{Key: "Empty"}, {Key: "traceparent", Value: in.Headers[0].Value}, {Key: "utf8", Value: in.Headers[2].Value}}
	if got.Topic != in.Topic || got.Key != in.Key || string(got.Body) != string(in.Body) || fmt.Sprint(got.Headers) != fmt.Sprint(want) {
		t.Fatalf("got topic %q key %q headers %v body %d bytes", got.Topic, got.Key, got.Headers, len(got.Body))
	}
	if err := d.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestPublishRejected(t *testing.T) {
	ev := newEnv(t, rocketmqbroker.Config{})
	tests := []struct {
		name string
		msg  *broker.Message
		also error // a more precise sentinel the error wraps too
	}{
		{"nil", nil, nil},
		{"empty topic", &broker.Message{Body: []byte("x")}, nil},
		{"space", &broker.Message{Topic: "a b", Body: []byte("x")}, nil},
		{"percent", &broker.Message{Topic: "%RETRY%g", Body: []byte("x")}, nil},
		{"system topic", &broker.Message{Topic: "SCHEDULE_TOPIC_XXXX", Body: []byte("x")}, nil},
		{"too long", &broker.Message{Topic: strings.Repeat("t", 128), Body: []byte("x")}, nil},
		{"system header", &broker.Message{Topic: "t", Headers: []broker.Header{{Key: "TAGS", Value: "x"}}}, broker.ErrInvalidHeader},
		{"internal header", &broker.Message{Topic: "t", Headers: []broker.Header{{Key: "__x", Value: "x"}}}, broker.ErrInvalidHeader},
		{"duplicate header", &broker.Message{Topic: "t", Headers: []broker.Header{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}}}, broker.ErrInvalidHeader},
		{"separator in value", &broker.Message{Topic: "t", Headers: []broker.Header{{Key: "a", Value: "1\x022"}}}, broker.ErrInvalidHeader},
		{"separator in key", &broker.Message{Topic: "t", Key: "k\x01"}, broker.ErrInvalidHeader},
		{"huge headers", &broker.Message{Topic: "t", Headers: []broker.Header{{Key: "a", Value: strings.Repeat("v", 40000)}}}, broker.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ev.b.Publish(brokertest.Ctx(t), tt.msg)
			if !errors.Is(err, broker.ErrRejected) {
				t.Fatalf("Publish: %v, want ErrRejected", err)
			}
			if tt.also != nil && !errors.Is(err, tt.also) {
				t.Fatalf("Publish: %v, want %v too", err, tt.also)
			}
		})
	}
}

func TestPublishTooLargeRejectedByBroker(t *testing.T) {
	tb := testbroker.Start(t, rmqtest.Config{MaxMessageSize: 1000})
	b := newBroker(t, tb, rocketmqbroker.Config{Retries: -1})
	// Random bytes do not compress below the limit.
	big := make([]byte, 5000)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	_, err := b.Publish(brokertest.Ctx(t), &broker.Message{Topic: "t", Body: big})
	if !errors.Is(err, broker.ErrTooLarge) || !errors.Is(err, broker.ErrRejected) || !strings.Contains(err.Error(), "CODE: 13") {
		t.Fatalf("Publish: %v, want ErrTooLarge with MESSAGE_ILLEGAL (13)", err)
	}
}

// TestMaxBodyFits: a body of exactly MaxBody(h), incompressible (the
// client compresses bodies over 4 KiB, and they grow when they do not
// shrink), with a key and headers of h bytes taking the most room as
// properties, is stored by a broker whose limit is MaxMessageSize; the
// largest h that fits is about 16 KiB (the key is stored twice).
func TestMaxBodyFits(t *testing.T) {
	const limit = 100_000
	tb := testbroker.Start(t, rmqtest.Config{MaxMessageSize: limit})
	b := newBroker(t, tb, rocketmqbroker.Config{Retries: -1, MaxMessageSize: limit})
	const h = 16_000
	n := b.MaxBody(h)
	if n <= 0 || n > limit {
		t.Fatalf("MaxBody(%d) = %d", h, n)
	}
	body := make([]byte, n)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	key := strings.Repeat("k", h-21) // nearly all of h in the key: stored twice
	msg := &broker.Message{Topic: "t", Key: key, Headers: []broker.Header{{Key: "a", Value: "1234567890123456"}}, Body: body}
	if got := broker.HeaderBytes(msg); got != h {
		t.Fatalf("HeaderBytes = %d, want %d", got, h)
	}
	if _, err := b.Publish(brokertest.Ctx(t), msg); err != nil {
		t.Fatalf("Publish of a body of MaxBody(%d) = %d bytes: %v", h, n, err)
	}
	if got := b.MaxBody(20 << 10); got >= 0 {
		t.Fatalf("MaxBody(20 KiB) = %d; 20 KiB of key and headers cannot fit RocketMQ's 32 KiB of properties twice", got)
	}
}

func TestNackRedelivers(t *testing.T) {
	ev := newEnv(t, rocketmqbroker.Config{})
	pub := brokertest.PublishN(t, ev.b, "jobs", 0, 1)[0]
	c := ev.consume(t, broker.ConsumerSpec{Topic: "jobs", Group: "workers"})

	d := brokertest.Next(t, c)
	if d.Redelivered() != 0 {
		t.Fatalf("first delivery Redelivered = %d", d.Redelivered())
	}
	if d.MessageID() != pub.MessageID {
		t.Fatalf("MessageID %q, want the published %q", d.MessageID(), pub.MessageID)
	}
	if ts := d.Timestamp(); ts.IsZero() || time.Since(ts) > brokertest.WaitLong || time.Until(ts) > time.Second {
		t.Fatalf("Timestamp = %v", ts)
	}
	nacked := time.Now()
	if err := d.Nack(brokertest.Ctx(t), 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(context.Background()); !errors.Is(err, rocketmqbroker.ErrSettled) {
		t.Fatalf("Ack after Nack: %v, want ErrSettled", err)
	}

	d = brokertest.Next(t, c)
	if since := time.Since(nacked); since < 900*time.Millisecond {
		t.Fatalf("redelivered after %v; retry level 1 waits 1 s", since)
	}
	if d.MessageID() != pub.MessageID || d.Redelivered() < 1 || string(d.Message().Body) != string(brokertest.Body(0)) || d.Message().Topic != "jobs" {
		t.Fatalf("after Nack: id %q redelivered %d body %q topic %q", d.MessageID(), d.Redelivered(), d.Message().Body, d.Message().Topic)
	}
	if ts := d.Timestamp(); ts.After(nacked) {
		t.Fatalf("retry Timestamp %v is the retry's, not the original's", ts)
	}
	if err := d.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(context.Background()); !errors.Is(err, rocketmqbroker.ErrSettled) {
		t.Fatalf("second Ack: %v, want ErrSettled", err)
	}
	brokertest.ExpectNothing(t, c, 300*time.Millisecond)
}

// TestNackDelayReachesBroker: a nack's delay becomes the delay level of
// the send-back the broker gets (CONSUMER_SEND_MSG_BACK's delayLevel),
// the shortest level not below it.
func TestNackDelayReachesBroker(t *testing.T) {
	for _, delay := range []time.Duration{0, 10 * time.Second, 2 * time.Minute} {
		t.Run(delay.String(), func(t *testing.T) {
			ev := newEnv(t, rocketmqbroker.Config{})
			levels := make(chan string, 8)
			ev.tb.Intercept(func(code int16, fields map[string]string) rmqtest.Action {
				if code == rmqtest.CodeConsumerSendMsgBack {
					levels <- fields["delayLevel"]
				}
				return rmqtest.Pass
			})
			brokertest.PublishN(t, ev.b, "jobs", 0, 1)
			c := ev.consume(t, broker.ConsumerSpec{Topic: "jobs", Group: "workers"})
			if err := brokertest.Next(t, c).Nack(brokertest.Ctx(t), delay); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-levels:
				if want := strconv.Itoa(rocketmqbroker.DelayLevel(delay)); got != want {
					t.Fatalf("nack after %v: the broker got delay level %s, want %s", delay, got, want)
				}
			case <-time.After(brokertest.WaitLong):
				t.Fatal("no send-back reached the broker")
			}
		})
	}
}

// TestPullBatchSettlesEachMessage: a pull brings many messages of a queue
// at once, but a nack sends back only its own message and acks move the
// queue's offset past the others (ConsumeRequest.Split); acked messages
// of the nacked one's pull do not come again.
func TestPullBatchSettlesEachMessage(t *testing.T) {
	const topic, group, n = "batch", "g", 20
	ev := newEnv(t, rocketmqbroker.Config{})
	// One key: one queue, so the first pull brings all n (batch 32).
	brokertest.PublishKeyed(t, ev.b, topic, 0, n, func(int) string { return "k" })
	c := ev.consume(t, broker.ConsumerSpec{Topic: topic, Group: group})
	var nacked string
	for i := range n {
		d := brokertest.Next(t, c)
		if i == 0 {
			nacked = string(d.Message().Body)
			if err := d.Nack(brokertest.Ctx(t), 0); err != nil {
				t.Fatal(err)
			}
			continue
		}
		brokertest.Ack(t, d)
	}
	d := brokertest.Next(t, c)
	if got := string(d.Message().Body); got != nacked || d.Redelivered() < 1 {
		t.Fatalf("after the nack: %q redelivered %d, want %q again", got, d.Redelivered(), nacked)
	}
	brokertest.Ack(t, d)
	brokertest.ExpectNothing(t, c, 300*time.Millisecond)
	if err := c.Close(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	rgroup := rocketmqbroker.ConsumerGroup(rocketmqbroker.DefaultGroupPrefix, group, topic)
	if !brokertest.Poll(func() bool { return ev.tb.Committed(rgroup, rocketmqbroker.RocketTopic(topic)) == n }) {
		t.Fatalf("committed %d offsets, want %d", ev.tb.Committed(rgroup, rocketmqbroker.RocketTopic(topic)), n)
	}
}

func TestAckWaitExpiryRedelivers(t *testing.T) {
	ev := newEnv(t, rocketmqbroker.Config{})
	brokertest.PublishN(t, ev.b, "slow", 0, 1)
	c := ev.consume(t, broker.ConsumerSpec{Topic: "slow", Group: "g", AckWait: 200 * time.Millisecond})
	first := brokertest.Next(t, c) // never answered in time
	d := brokertest.Next(t, c)     // comes back after AckWait + the 1 s retry level
	if d.MessageID() != first.MessageID() || d.Redelivered() != 1 {
		t.Fatalf("redelivery: id %q (first %q) redelivered %d", d.MessageID(), first.MessageID(), d.Redelivered())
	}
	if err := first.Ack(context.Background()); !errors.Is(err, rocketmqbroker.ErrSettled) {
		t.Fatalf("late Ack: %v, want ErrSettled", err)
	}
	if err := d.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestCloseThenConsumeDoesNotRedeliverAcked(t *testing.T) {
	const topic, group = "audit.log", "auditor"
	ev := newEnv(t, rocketmqbroker.Config{})
	brokertest.PublishN(t, ev.b, topic, 0, 40)
	c := ev.consume(t, broker.ConsumerSpec{Topic: topic, Group: group})
	acked := make(map[string]bool)
	for range 15 {
		d := brokertest.Next(t, c)
		acked[string(d.Message().Body)] = true
		if err := d.Ack(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// The client has fetched the other 25 messages meanwhile; Close drops
	// them unacked.
	if err := c.Close(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Next(brokertest.Ctx(t)); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
	// The shutdown commits one-way; wait until the broker applied it
	// before the next consumer asks for the offsets.
	rgroup := rocketmqbroker.ConsumerGroup(rocketmqbroker.DefaultGroupPrefix, group, topic)
	if !brokertest.Poll(func() bool { return ev.tb.Committed(rgroup, rocketmqbroker.RocketTopic(topic)) == 15 }) {
		t.Fatalf("committed %d offsets, want 15", ev.tb.Committed(rgroup, rocketmqbroker.RocketTopic(topic)))
	}

	c2 := ev.consume(t, broker.ConsumerSpec{Topic: topic, Group: group})
	rest := brokertest.Bodies(0, 40)
	for k := range acked {
		delete(rest, k)
	}
	got := brokertest.Counts(brokertest.Collect(t, c2, rest))
	brokertest.ExactlyOnce(t, got)
	brokertest.ExpectNothing(t, c2, 300*time.Millisecond)
}

func TestCloseWaitsForOutstandingAcks(t *testing.T) {
	const topic, group = "linger", "g"
	ev := newEnv(t, rocketmqbroker.Config{})
	brokertest.PublishN(t, ev.b, topic, 0, 1)
	c, err := ev.b.Consume(brokertest.Ctx(t), broker.ConsumerSpec{Topic: topic, Group: group})
	if err != nil {
		t.Fatal(err)
	}
	d := brokertest.Next(t, c)
	ev.quiesce(t, pullsPerConsumer)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Close(ctx); err != nil { // returns when ctx ends; the client stays up
		t.Fatal(err)
	}
	if _, err := c.Next(brokertest.Ctx(t)); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
	if err := d.Ack(context.Background()); err != nil {
		t.Fatalf("Ack after Close: %v", err)
	}
	// The ack was the last outstanding delivery: the client shuts down,
	// committing it, and leaves the group.
	rgroup := rocketmqbroker.ConsumerGroup(rocketmqbroker.DefaultGroupPrefix, group, topic)
	if !brokertest.Poll(func() bool { return ev.tb.Committed(rgroup, topic) == 1 && len(ev.tb.ConsumerIDs(rgroup)) == 0 }) {
		t.Fatalf("committed %d, members %v: the ack after Close was not committed, or the client did not shut down",
			ev.tb.Committed(rgroup, topic), ev.tb.ConsumerIDs(rgroup))
	}
	c2 := ev.consume(t, broker.ConsumerSpec{Topic: topic, Group: group})
	brokertest.ExpectNothing(t, c2, 500*time.Millisecond)
}

func TestNewUnreachableNameServer(t *testing.T) {
	// Nothing listens: refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	l.Close()

	// Accepts but never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Answers with something that is not RocketMQ.
	notRMQ, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() {
		silent.Close()
		notRMQ.Close()
		conns.Wait()
	})
	conns.Add(2)
	go func() {
		defer conns.Done()
		var open []net.Conn
		defer func() {
			for _, c := range open {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			open = append(open, c)
		}
	}()
	go func() {
		defer conns.Done()
		for {
			c, err := notRMQ.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()

	for _, tt := range []struct {
		name, addr string
	}{
		{"refused", closedAddr},
		{"silent", silent.Addr().String()},
		{"not rocketmq", notRMQ.Addr().String()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			b, err := rocketmqbroker.New(ctx, rocketmqbroker.Config{NameServers: []string{tt.addr}, Logger: quietLog})
			if err == nil {
				b.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, broker.ErrUnavailable) || !strings.Contains(err.Error(), tt.addr) {
				t.Fatalf("New: %v, want ErrUnavailable naming %s", err, tt.addr)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("New took %v with a 500 ms context", d)
			}
		})
	}
}

func TestNewConfig(t *testing.T) {
	for _, cfg := range []rocketmqbroker.Config{
		{},
		{NameServers: []string{"nohostport"}},
		{NameServers: []string{"127.0.0.1:x"}},
		{NameServers: []string{"127.0.0.1:9876"}, GroupPrefix: "bad prefix"},
		{NameServers: []string{"127.0.0.1:9876"}, Prefetch: -1},
	} {
		if _, err := rocketmqbroker.New(brokertest.Ctx(t), cfg); err == nil || !strings.Contains(err.Error(), "config") {
			t.Errorf("New(%+v): %v, want a config error", cfg, err)
		}
	}
}

func TestConsumeRejected(t *testing.T) {
	ev := newEnv(t, rocketmqbroker.Config{})
	for _, spec := range []broker.ConsumerSpec{
		{Topic: "t"},
		{Topic: "t", Group: "a b"},
		{Topic: "bad topic", Group: "g"},
		{Topic: "t", Group: "g", AckWait: -1},
		{Topic: "t", Group: "g", Prefetch: -1},
	} {
		if _, err := ev.b.Consume(brokertest.Ctx(t), spec); !errors.Is(err, broker.ErrRejected) {
			t.Errorf("Consume(%+v): %v, want ErrRejected", spec, err)
		}
	}
}

// A send the broker stored but answered FLUSH_DISK_TIMEOUT,
// SLAVE_NOT_AVAILABLE or FLUSH_SLAVE_TIMEOUT is neither a success nor "not
// stored": the publish reports an unknown outcome, and the message is
// delivered all the same.
func TestPublishNotDurableIsOutcomeUnknown(t *testing.T) {
	for _, c := range []struct {
		action rmqtest.Action
		name   string
	}{{rmqtest.FlushDiskTimeout, "FLUSH_DISK_TIMEOUT"}, {rmqtest.SlaveNotAvailable, "SLAVE_NOT_AVAILABLE"}, {rmqtest.FlushSlaveTimeout, "FLUSH_SLAVE_TIMEOUT"}} {
		t.Run(c.name, func(t *testing.T) {
			ev := newEnv(t, rocketmqbroker.Config{})
			brokertest.PublishN(t, ev.b, "durable", 0, 1) // route known, topic created
			ev.tb.Intercept(func(code int16, _ map[string]string) rmqtest.Action {
				if code == rmqtest.CodeSendMessage || code == rmqtest.CodeSendMessageV2 {
					return c.action
				}
				return rmqtest.Pass
			})
			_, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: "durable", Body: brokertest.Body(1)})
			ev.tb.Intercept(nil)
			if !errors.Is(err, broker.ErrOutcomeUnknown) || errors.Is(err, broker.ErrUnavailable) || !strings.Contains(err.Error(), c.name) {
				t.Fatalf("Publish answered %s: %v; want ErrOutcomeUnknown (only) naming the status", c.name, err)
			}
			cons := ev.consume(t, broker.ConsumerSpec{Topic: "durable", Group: "g"})
			brokertest.Collect(t, cons, brokertest.Bodies(0, 2))
		})
	}
}
