package kafkabroker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
)

// partOffset names one stored message.
type partOffset struct {
	partition int32
	offset    int64
}

// parseID splits a MessageID "<topic>/<partition>/<offset>".
func parseID(t testing.TB, id string) (string, partOffset) {
	t.Helper()
	var p partOffset
	i := strings.LastIndexByte(id, '/')
	j := strings.LastIndexByte(id[:max(i, 0)], '/')
	if i < 0 || j < 0 {
		t.Fatalf("MessageID %q is not <topic>/<partition>/<offset>", id)
	}
	if _, err := fmt.Sscanf(id[j+1:], "%d/%d", &p.partition, &p.offset); err != nil {
		t.Fatalf("MessageID %q: %v", id, err)
	}
	return id[:j], p
}

func TestPublishConsumeAll(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{})
	const topic, n = "orders", 1000

	// Publish from a few goroutines at once (the sidecar's pattern), each
	// message with two headers; every fifth message has no key.
	keyOf := func(i int) string {
		if i%5 == 0 {
			return ""
		}
		return fmt.Sprintf("k-%d", i%7)
	}
	results := make([]broker.PublishResult, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 10 {
		wg.Go(func() {
			for i := w; i < n; i += 10 {
				r, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{
					Topic: topic,
					Key:   keyOf(i),
					Headers: []broker.Header{
						{Key: "Trace-Id", Value: fmt.Sprintf("t-%d", i)},
						{Key: "Trace-Id", Value: "second value, same key"},
					},
					Body: brokertest.Body(i),
				})
				if err != nil {
					errs <- fmt.Errorf("publish %d: %w", i, err)
					return
				}
				results[i] = r
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	stored := make(map[partOffset]int) // where each body was stored
	for i, r := range results {
		if r.Stream != topic || r.Partition < 0 || r.Partition >= kafkabroker.DefaultPartitions || r.Offset < 0 {
			t.Fatalf("publish %d: result %+v", i, r)
		}
		if want := fmt.Sprintf("%s/%d/%d", topic, r.Partition, r.Offset); r.MessageID != want {
			t.Fatalf("publish %d: MessageID %q, want %q", i, r.MessageID, want)
		}
		po := partOffset{r.Partition, r.Offset}
		if j, dup := stored[po]; dup {
			t.Fatalf("publish %d and %d both got %+v", j, i, po)
		}
		stored[po] = i
	}

	before := time.Now()
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: topic, Group: "billing"})
	got := brokertest.Collect(t, c, brokertest.Bodies(0, n))
	if len(got) != n {
		t.Errorf("%d deliveries for %d messages: duplicates without a restart", len(got), n)
	}
	last := make(map[int32]int64)
	for _, d := range got {
		tp, po := parseID(t, d.MessageID())
		if tp != topic {
			t.Fatalf("MessageID %q: topic %q", d.MessageID(), tp)
		}
		i, ok := stored[po]
		if !ok || !bytes.Equal(d.Message().Body, brokertest.Body(i)) {
			t.Fatalf("delivery %s has body %q, publish said %q", d.MessageID(), d.Message().Body, brokertest.Body(i))
		}
		if prev, ok := last[po.partition]; ok && po.offset <= prev {
			t.Fatalf("partition %d: offset %d delivered after %d", po.partition, po.offset, prev)
		}
		last[po.partition] = po.offset
		m := d.Message()
		if m.Topic != topic || m.Key != keyOf(i) {
			t.Fatalf("delivery %s: topic %q key %q, want %q %q", d.MessageID(), m.Topic, m.Key, topic, keyOf(i))
		}
		wantH := []broker.Header{{Key: "Trace-Id", Value: fmt.Sprintf("t-%d", i)}, {Key: "Trace-Id", Value: "second value, same key"}}
		if fmt.Sprint(m.Headers) != fmt.Sprint(wantH) {
			t.Fatalf("delivery %s: headers %v, want %v", d.MessageID(), m.Headers, wantH)
		}
		if d.Redelivered() != 0 {
			t.Fatalf("delivery %s: Redelivered %d", d.MessageID(), d.Redelivered())
		}
		if ts := d.Timestamp(); ts.IsZero() || ts.After(before.Add(time.Second)) {
			t.Fatalf("delivery %s: Timestamp %v, published before %v", d.MessageID(), ts, before)
		}
	}
	if len(last) != kafkabroker.DefaultPartitions {
		t.Errorf("messages landed on %d partitions, want all %d", len(last), kafkabroker.DefaultPartitions)
	}
}

func TestSameKeySamePartition(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{Partitions: 8})
	const topic = "keyed"
	keys := []string{"alice", "bob", "carol", "dave", "erin"}
	res := brokertest.PublishKeyed(t, ev.b, topic, 0, 100, func(i int) string { return keys[i%len(keys)] })
	partOf := make(map[string]int32)
	used := make(map[int32]bool)
	for i, r := range res {
		k := keys[i%len(keys)]
		if p, ok := partOf[k]; ok && p != r.Partition {
			t.Fatalf("key %q went to partitions %d and %d", k, p, r.Partition)
		}
		partOf[k] = r.Partition
		used[r.Partition] = true
	}
	if len(used) < 2 {
		t.Errorf("5 keys all hashed to one partition of 8: %v", partOf)
	}
	// The consumer sees each key on its partition, in publish order.
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: topic, Group: "g"})
	lastIdx := make(map[string]int)
	for _, d := range brokertest.Collect(t, c, brokertest.Bodies(0, 100)) {
		_, po := parseID(t, d.MessageID())
		k := d.Message().Key
		if po.partition != partOf[k] {
			t.Fatalf("key %q delivered from partition %d, published to %d", k, po.partition, partOf[k])
		}
		var i int
		fmt.Sscanf(string(d.Message().Body), "m-%d", &i)
		if prev, ok := lastIdx[k]; ok && i <= prev {
			t.Fatalf("key %q: message %d delivered after %d", k, i, prev)
		}
		lastIdx[k] = i
	}
}

// committed reads a group's committed offset, as an operator would.
func committed(t testing.TB, c *kfake.Cluster, group, topic string, partition int) int64 {
	t.Helper()
	return kafkatest.Committed(t, c, group, topic, partition)
}

// waitBlocked waits until a Next of c is blocked in the reader.
func waitBlocked(t testing.TB, c broker.Consumer) {
	t.Helper()
	deadline := time.Now().Add(brokertest.WaitLong)
	for !kafkabroker.BlockedInNext(c) {
		if time.Now().After(deadline) {
			t.Fatal("Next did not block")
		}
		time.Sleep(time.Millisecond) // polling interval
	}
}

// pollCommitted waits until the group's committed offset of topic/0 is want.
func pollCommitted(t testing.TB, c *kfake.Cluster, group, topic string, want int64) {
	t.Helper()
	deadline := time.Now().Add(brokertest.WaitLong)
	for {
		got := committed(t, c, group, topic, 0)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed offset of %s on %s/0 is %d, want %d", group, topic, got, want)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// TestCommitRule: an unacked message holds back the commit of every later
// message of its partition, so a restart redelivers from exactly the first
// unacked message.
func TestCommitRule(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{Partitions: 1})
	const topic, group = "ledger", "posting"
	brokertest.PublishN(t, ev.b, topic, 0, 10)
	spec := broker.ConsumerSpec{Topic: topic, Group: group}

	// Consumer 1 acks all but the 3rd message (body 2).
	c1 := brokertest.Consume(t, ev.b, spec)
	for i := range 10 {
		d := brokertest.Next(t, c1)
		if want := brokertest.Body(i); !bytes.Equal(d.Message().Body, want) {
			t.Fatalf("delivery %d: %q, want %q", i, d.Message().Body, want)
		}
		if i != 2 {
			brokertest.Ack(t, d)
		}
	}
	// The committer commits what is contiguous (offsets 0 and 1) while
	// the consumer runs, and never beyond the unacked offset 2.
	pollCommitted(t, ev.c, group, topic, 2)
	if err := c1.Close(brokertest.Ctx(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := committed(t, ev.c, group, topic, 0); got != 2 {
		t.Fatalf("committed offset after Close: %d, want 2", got)
	}

	// Consumer 2 of the same group starts at the 3rd message: 3..10 come
	// again, 1..2 do not.
	c2 := brokertest.Consume(t, ev.b, spec)
	for i := 2; i < 10; i++ {
		d := brokertest.Next(t, c2)
		if want := brokertest.Body(i); !bytes.Equal(d.Message().Body, want) {
			t.Fatalf("after restart: delivery %q, want %q", d.Message().Body, want)
		}
		if d.Redelivered() != 0 {
			t.Errorf("after restart: Redelivered %d, want 0 (Kafka keeps no count)", d.Redelivered())
		}
		brokertest.Ack(t, d)
	}
	if err := c2.Close(brokertest.Ctx(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := committed(t, ev.c, group, topic, 0); got != 10 {
		t.Fatalf("committed offset after acking everything: %d, want 10", got)
	}

	// Consumer 3: nothing is redelivered; the first delivery is a new
	// message published now.
	c3 := brokertest.Consume(t, ev.b, spec)
	brokertest.PublishN(t, ev.b, topic, 10, 1)
	if d := brokertest.Next(t, c3); !bytes.Equal(d.Message().Body, brokertest.Body(10)) {
		t.Fatalf("after acking everything: delivery %q, want only the new %q", d.Message().Body, brokertest.Body(10))
	}
}

func TestNackRedelivers(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{Partitions: 1})
	const topic = "retry"
	brokertest.PublishN(t, ev.b, topic, 0, 1)
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: topic, Group: "g"})
	d := brokertest.Next(t, c)
	id := d.MessageID()

	tests := []struct {
		delay time.Duration
	}{
		{300 * time.Millisecond},
		{0},
		{50 * time.Millisecond},
	}
	for i, tc := range tests {
		nacked := time.Now()
		if err := d.Nack(context.Background(), tc.delay); err != nil {
			t.Fatalf("Nack: %v", err)
		}
		if err := d.Ack(context.Background()); !errors.Is(err, kafkabroker.ErrAnswered) {
			t.Fatalf("Ack after Nack: %v, want ErrAnswered", err)
		}
		d = brokertest.Next(t, c)
		if elapsed := time.Since(nacked); elapsed < tc.delay {
			t.Errorf("redelivered after %v, before the delay %v", elapsed, tc.delay)
		}
		if d.MessageID() != id || d.Redelivered() != i+1 || !bytes.Equal(d.Message().Body, brokertest.Body(0)) {
			t.Fatalf("redelivery %d: %s %q redelivered %d, want %s %q %d",
				i, d.MessageID(), d.Message().Body, d.Redelivered(), id, brokertest.Body(0), i+1)
		}
	}

	// A Nack wakes a Next that is blocked waiting for new messages.
	got := make(chan broker.Delivery, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), brokertest.WaitLong)
		defer cancel()
		nd, err := c.Next(ctx)
		if err != nil {
			t.Errorf("blocked Next: %v", err)
		}
		got <- nd
	}()
	waitBlocked(t, c)
	if err := d.Nack(context.Background(), 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	nd := <-got
	if nd == nil || nd.MessageID() != id {
		t.Fatalf("blocked Next after Nack: %v", nd)
	}
	brokertest.Ack(t, nd)
}

// TestNackHoldsBackCommit: a nacked message keeps its offset, and every
// later one of the partition, uncommitted; Close drops the redelivery
// queue and the group reads the message again.
func TestNackHoldsBackCommit(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{Partitions: 1})
	const topic, group = "held", "g"
	brokertest.PublishN(t, ev.b, topic, 0, 3)
	spec := broker.ConsumerSpec{Topic: topic, Group: group}
	c1 := brokertest.Consume(t, ev.b, spec)
	d0 := brokertest.Next(t, c1)
	brokertest.Ack(t, d0)
	d1 := brokertest.Next(t, c1)
	if err := d1.Nack(context.Background(), time.Hour); err != nil {
		t.Fatal(err)
	}
	brokertest.Ack(t, brokertest.Next(t, c1))
	pollCommitted(t, ev.c, group, topic, 1)
	if err := c1.Close(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, ev.c, group, topic, 0); got != 1 {
		t.Fatalf("committed %d, want 1 (held back by the nacked offset 1)", got)
	}
	// Nack of a delivery of a closed consumer: nothing to do, no error.
	if err := d1.Nack(context.Background(), 0); !errors.Is(err, kafkabroker.ErrAnswered) {
		t.Fatalf("second Nack: %v, want ErrAnswered", err)
	}
	c2 := brokertest.Consume(t, ev.b, spec)
	collectBodies := brokertest.Collect(t, c2, brokertest.Bodies(1, 2))
	if b := collectBodies[0].Message().Body; !bytes.Equal(b, brokertest.Body(1)) {
		t.Fatalf("after restart: first delivery %q, want the nacked %q", b, brokertest.Body(1))
	}
}

// TestPauseThenCloseLosesNothing: messages the reader fetched but Next did
// not hand out are dropped uncommitted by Close; the group reads them
// again.
func TestPauseThenCloseLosesNothing(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{Partitions: 2})
	const topic, group = "handback", "g"
	brokertest.PublishN(t, ev.b, topic, 0, 60)
	spec := broker.ConsumerSpec{Topic: topic, Group: group, Prefetch: 16}
	c1 := brokertest.Consume(t, ev.b, spec)
	acked := make(map[string]bool)
	for range 10 {
		d := brokertest.Next(t, c1)
		acked[string(d.Message().Body)] = true
		brokertest.Ack(t, d)
	}
	if err := c1.Pause(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := c1.Close(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	want := brokertest.Bodies(0, 60)
	for k := range acked {
		delete(want, k)
	}
	c2 := brokertest.Consume(t, ev.b, spec)
	for _, d := range brokertest.Collect(t, c2, want) {
		if acked[string(d.Message().Body)] {
			t.Fatalf("acked message %q delivered again after a clean Close", d.Message().Body)
		}
	}
}

func TestNewUnreachable(t *testing.T) {
	t.Parallel()
	// A port nobody listens on: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	// A server that accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()

	for _, tc := range []struct {
		name    string
		addr    string
		timeout time.Duration // of New's ctx; 0: none
		within  time.Duration
	}{
		{"refused", refused, 0, 5 * time.Second},
		{"silent, ctx deadline", silent.Addr().String(), 500 * time.Millisecond, 5 * time.Second},
		{"silent, no deadline", silent.Addr().String(), 0, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			start := time.Now()
			_, err := kafkabroker.New(ctx, kafkabroker.Config{Brokers: []string{tc.addr}, Logger: testLog})
			el := time.Since(start)
			if !errors.Is(err, broker.ErrUnavailable) {
				t.Fatalf("New(%s): %v, want ErrUnavailable", tc.addr, err)
			}
			if el > tc.within {
				t.Fatalf("New took %v to fail, want under %v", el, tc.within)
			}
			t.Logf("after %v: %v", el.Round(time.Millisecond), err)
		})
	}
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  kafkabroker.Config
		want string
	}{
		{"no brokers", kafkabroker.Config{}, "Brokers is required"},
		{"no port", kafkabroker.Config{Brokers: []string{"localhost"}}, "not host:port"},
		{"bad port", kafkabroker.Config{Brokers: []string{"localhost:x"}}, "bad port"},
		{"no host", kafkabroker.Config{Brokers: []string{":9092"}}, "missing host"},
		{"negative partitions", kafkabroker.Config{Brokers: []string{"a:1"}, Partitions: -1}, "Partitions"},
		{"negative replication", kafkabroker.Config{Brokers: []string{"a:1"}, ReplicationFactor: -1}, "ReplicationFactor"},
		{"negative prefetch", kafkabroker.Config{Brokers: []string{"a:1"}, Prefetch: -1}, "Prefetch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kafkabroker.New(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, broker.ErrUnavailable) {
				t.Fatalf("New: %v, want a config error about %q", err, tc.want)
			}
		})
	}
}

func TestConcurrentPublishersNewTopic(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{})
	const topic, writers, each = "burst", 8, 250
	var mu sync.Mutex
	seen := make(map[partOffset]bool)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{
					Topic: topic,
					Key:   fmt.Sprintf("w%d", w),
					Body:  brokertest.Body(w*each + i),
				})
				if err != nil {
					t.Errorf("writer %d publish %d: %v", w, i, err)
					return
				}
				mu.Lock()
				po := partOffset{r.Partition, r.Offset}
				if seen[po] {
					t.Errorf("two publishes stored at %+v", po)
				}
				seen[po] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != writers*each {
		t.Fatalf("%d distinct results for %d publishes", len(seen), writers*each)
	}
}

func TestPublishErrors(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		msg  *broker.Message
		want error
	}{
		{"nil message", context.Background(), nil, broker.ErrRejected},
		{"empty topic", context.Background(), &broker.Message{}, broker.ErrRejected},
		{"bad topic", context.Background(), &broker.Message{Topic: "a b"}, broker.ErrRejected},
		{"dot topic", context.Background(), &broker.Message{Topic: ".."}, broker.ErrRejected},
		{"long topic", context.Background(), &broker.Message{Topic: strings.Repeat("t", 250)}, broker.ErrRejected},
		{"too large", context.Background(), &broker.Message{Topic: "big", Body: make([]byte, 2<<20)}, broker.ErrTooLarge},
		{"too large is rejected", context.Background(), &broker.Message{Topic: "big", Body: make([]byte, 2<<20)}, broker.ErrRejected},
		{"cancelled", cancelled, &broker.Message{Topic: "ok", Body: []byte("x")}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ev.b.Publish(tc.ctx, tc.msg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Publish: %v, want %v", err, tc.want)
			}
			if r.Partition != -1 {
				t.Fatalf("failed Publish returned %+v", r)
			}
		})
	}
	for _, tc := range []struct {
		name string
		spec broker.ConsumerSpec
	}{
		{"no group", broker.ConsumerSpec{Topic: "t"}},
		{"bad topic", broker.ConsumerSpec{Topic: "t/x", Group: "g"}},
		{"negative prefetch", broker.ConsumerSpec{Topic: "t", Group: "g", Prefetch: -1}},
	} {
		t.Run("consume "+tc.name, func(t *testing.T) {
			if _, err := ev.b.Consume(brokertest.Ctx(t), tc.spec); !errors.Is(err, broker.ErrRejected) {
				t.Fatalf("Consume: %v, want ErrRejected", err)
			}
		})
	}
}

func TestBrokerClose(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	b, err := kafkabroker.New(brokertest.Ctx(t), kafkabroker.Config{Brokers: kafkatest.Addrs(c), Logger: testLog})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.PublishN(t, b, "t", 0, 3)
	cons, err := b.Consume(brokertest.Ctx(t), broker.ConsumerSpec{Topic: "t", Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	d := brokertest.Next(t, cons)
	brokertest.Ack(t, d)
	if err := b.Close(); err != nil { // closes the open consumer too
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := cons.Next(brokertest.Ctx(t)); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Next after Broker.Close: %v", err)
	}
	if _, err := b.Publish(brokertest.Ctx(t), &broker.Message{Topic: "t"}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if _, err := b.Consume(brokertest.Ctx(t), broker.ConsumerSpec{Topic: "t", Group: "g"}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Consume after Close: %v", err)
	}
	_, po := parseID(t, d.MessageID())
	if got := committed(t, c, "g", "t", int(po.partition)); got != po.offset+1 {
		t.Fatalf("committed %d after Broker.Close, want %d", got, po.offset+1)
	}
}

// TestTopicCreatedElsewhere: a topic created by another client (with
// another partition count) is used as it is.
func TestTopicCreatedElsewhere(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{Partitions: 3})
	other := newBroker(t, ev.c, kafkabroker.Config{Partitions: 6})
	brokertest.PublishN(t, other, "shared", 0, 1) // creates it with 6 partitions
	parts := make(map[int32]bool)
	for _, r := range brokertest.PublishN(t, ev.b, "shared", 1, 60) { // round robin
		parts[r.Partition] = true
	}
	if len(parts) != 6 {
		t.Fatalf("publishes used partitions %v, want all 6 of the existing topic", parts)
	}
	// A topic seeded on the cluster before the Broker started.
	ev2 := newEnv(t, kafkabroker.Config{Partitions: 3}, kfake.SeedTopics(2, "seeded"))
	for _, r := range brokertest.PublishN(t, ev2.b, "seeded", 0, 10) {
		if r.Partition > 1 {
			t.Fatalf("publish to the 2-partition seeded topic: %+v", r)
		}
	}
}

// TestGroupMembersShare: two consumers of one group split the partitions,
// and the rebalances when the second joins and the first leaves lose
// nothing.
func TestGroupMembersShare(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{Partitions: 4})
	const topic = "shared-work"
	spec := broker.ConsumerSpec{Topic: topic, Group: "workers", Prefetch: 8}
	brokertest.PublishN(t, ev.b, topic, 0, 100)

	var mu sync.Mutex
	seen := make(map[string]int)
	run := func(c broker.Consumer, stop <-chan struct{}) {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			d, err := c.Next(ctx)
			cancel()
			if err == nil {
				mu.Lock()
				seen[string(d.Message().Body)]++
				mu.Unlock()
				_ = d.Ack(context.Background())
				continue
			}
			select {
			case <-stop:
				return
			default:
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Next: %v", err)
				return
			}
		}
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
	waitCount := func(n int) {
		t.Helper()
		deadline := time.Now().Add(brokertest.WaitLong)
		for count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d messages delivered", count(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	c1 := brokertest.Consume(t, ev.b, spec)
	stop1 := make(chan struct{})
	done1 := make(chan struct{})
	go func() { defer close(done1); run(c1, stop1) }()
	waitCount(100)

	c2 := brokertest.Consume(t, ev.b, spec)
	stop2 := make(chan struct{})
	done2 := make(chan struct{})
	go func() { defer close(done2); run(c2, stop2) }()
	brokertest.PublishN(t, ev.b, topic, 100, 100)
	waitCount(200)

	close(stop1)
	<-done1
	if err := c1.Close(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	brokertest.PublishN(t, ev.b, topic, 200, 100)
	waitCount(300)
	close(stop2)
	<-done2
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	t.Logf("300 messages, %d duplicates across two rebalances", dups)
}

// TestRebalanceSkipsHandedOut: after a rebalance kafka-go reads a kept
// partition again from the last commit; messages this consumer already
// handed out (and that are still unanswered) are not handed out twice, and
// nothing is lost.
func TestRebalanceSkipsHandedOut(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{Partitions: 2})
	const topic = "rebalanced"
	spec := broker.ConsumerSpec{Topic: topic, Group: "g"}
	brokertest.PublishN(t, ev.b, topic, 0, 20) // round robin: 10 per partition

	c1 := brokertest.Consume(t, ev.b, spec)
	var held []broker.Delivery
	for range 20 { // everything, unacked: nothing is committed
		held = append(held, brokertest.Next(t, c1))
	}
	// c2 joins: one partition each. c2 reads its partition from offset 0
	// (those messages are duplicates: c1 never acked them).
	c2 := brokertest.Consume(t, ev.b, spec)
	var c2got []broker.Delivery
	for range 10 {
		d := brokertest.Next(t, c2)
		c2got = append(c2got, d)
		brokertest.Ack(t, d)
	}
	_, lost := parseID(t, c2got[0].MessageID())
	for _, d := range c2got {
		if _, po := parseID(t, d.MessageID()); po.partition != lost.partition || po.offset >= 10 {
			t.Fatalf("c2 got %s, want only partition %d offsets 0..9", d.MessageID(), lost.partition)
		}
	}
	// c1 re-reads its kept partition from offset 0: those ten are skipped,
	// so its next delivery is a new message.
	brokertest.PublishN(t, ev.b, topic, 20, 4)
	d := brokertest.Next(t, c1)
	if _, po := parseID(t, d.MessageID()); po.offset < 10 || po.partition == lost.partition {
		t.Fatalf("c1 after the rebalance: %s %q, want a new message of its kept partition", d.MessageID(), d.Message().Body)
	}
	brokertest.Ack(t, d)
	brokertest.Ack(t, brokertest.Next(t, c1))
	// c1's old deliveries are still answered normally; acks of the lost
	// partition's messages are harmless.
	for _, d := range held {
		brokertest.Ack(t, d)
	}
	// Close c1: c2 takes its partition from c1's final commit and gets
	// nothing old again.
	if err := c1.Close(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	brokertest.PublishN(t, ev.b, topic, 24, 2)
	want := brokertest.Bodies(22, 4) // 22, 23 (c2's partition, published before) and the two new
	got := make(map[string]bool)
	for len(got) < len(want) {
		d := brokertest.Next(t, c2)
		k := string(d.Message().Body)
		if !brokertest.Bodies(20, 6)[k] {
			t.Fatalf("c2 after c1 left: %s %q, want only messages 20..25", d.MessageID(), k)
		}
		got[k] = true
		brokertest.Ack(t, d)
	}
}

// TestClusterOutage: with the cluster gone, Publish fails within its ctx
// with ErrUnavailable once no connection can be made, Next keeps waiting
// (until its ctx), and Close is bounded and reports the lost final commit.
func TestClusterOutage(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{Partitions: 1})
	const topic = "outage"
	brokertest.PublishN(t, ev.b, topic, 0, 1)
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: topic, Group: "g"})
	d := brokertest.Next(t, c)
	ev.c.Close()
	brokertest.Ack(t, d) // never blocks on the network

	// The first publish may go out on the pooled connection the cluster
	// has closed: the write succeeds and the read fails, which looks the
	// same as a broker that died after storing it. The next one finds no
	// connection: nothing is sent, and the error says so.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := ev.b.Publish(ctx, &broker.Message{Topic: topic, Body: []byte("x")}); !errors.Is(err, broker.ErrUnavailable) && !errors.Is(err, broker.ErrOutcomeUnknown) {
		t.Fatalf("first Publish during outage: %v, want ErrUnavailable or ErrOutcomeUnknown", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := ev.b.Publish(ctx, &broker.Message{Topic: topic, Body: []byte("y")}); !broker.NotStored(err) || !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Publish during outage: %v, want ErrUnavailable (not stored)", err)
	}
	brokertest.ExpectNothing(t, c, 300*time.Millisecond)

	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	err := c.Close(ctx)
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Close during outage: %v, want an error wrapping ErrUnavailable (final commit lost)", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Close took %v with a 1 s ctx", el)
	}
	if _, err := c.Next(brokertest.Ctx(t)); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

// TestEmptyAndNull: an empty key and body are values, told from no key
// and a null body (a tombstone) end to end, whether a publish's copy of
// the message is built in a fresh buffer or a reused one: each case is
// published first on a broker that published nothing before (an empty
// body once came out of a fresh buffer as a null one, and stayed so for
// the empty bodies after it), then after a publish with a body, whose
// buffer the adapter may reuse. Deliveries are told apart by where their
// publish stored them: a header or key would give the message bytes.
func TestEmptyAndNull(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{})
	const topic = "nulls"
	tests := map[string]struct {
		msg       broker.Message
		wantEmpty bool // EmptyKey on delivery
		wantNull  bool // NullBody on delivery
	}{
		"empty key, empty body": {broker.Message{EmptyKey: true}, true, false},
		"no key, empty body":    {broker.Message{}, false, false},
		"empty key, null body":  {broker.Message{EmptyKey: true, NullBody: true}, true, true},
		"no key, null body":     {broker.Message{NullBody: true}, false, true},
		"empty header value":    {broker.Message{Headers: []broker.Header{{Key: "h", Value: ""}}}, false, false},
	}
	stored := map[partOffset]string{} // where each case's publish went
	for round := range 2 {
		for name, tt := range tests {
			if round == 1 {
				if _, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: topic, Key: "k", Body: []byte("filler")}); err != nil {
					t.Fatal(err)
				}
			}
			m := tt.msg
			m.Topic = topic
			r, err := ev.b.Publish(brokertest.Ctx(t), &m)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			stored[partOffset{r.Partition, r.Offset}] = name
		}
	}
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: topic, Group: "g"})
	for left := 3 * len(tests); left > 0; left-- { // the cases twice, and the fillers
		d, err := c.Next(brokertest.Ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		m := d.Message()
		p, o, _ := broker.PositionOf(d)
		if err := d.Ack(brokertest.Ctx(t)); err != nil {
			t.Fatal(err)
		}
		name, ok := stored[partOffset{p, o}]
		if !ok {
			continue // a filler
		}
		tt := tests[name]
		if m.EmptyKey != tt.wantEmpty || m.NullBody != tt.wantNull || len(m.Body) != 0 || m.Key != "" {
			t.Errorf("%s: delivered key %q EmptyKey %v, body %q NullBody %v; want EmptyKey %v NullBody %v and no bytes",
				name, m.Key, m.EmptyKey, m.Body, m.NullBody, tt.wantEmpty, tt.wantNull)
		}
		if name == "empty header value" && !slices.ContainsFunc(m.Headers, func(h broker.Header) bool { return h.Key == "h" && h.Value == "" }) {
			t.Errorf("%s: headers %v lack h with an empty value", name, m.Headers)
		}
	}
}
