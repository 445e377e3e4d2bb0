package rocketmqbroker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
	"github.com/msgmesh/msgmesh/internal/javahash"
	"github.com/msgmesh/msgmesh/internal/rmqtest"
)

// sendCounter counts the send requests a test broker gets, by code, and
// holds the first one until release is closed (nil: holds none), so that
// the publishes started meanwhile queue up behind it.
type sendCounter struct {
	single, batch atomic.Int32
	held          atomic.Bool
	release       chan struct{}
	// then decides the requests after the held one (nil: Pass).
	then func(code int16) rmqtest.Action
}

func (s *sendCounter) intercept(code int16, _ map[string]string) rmqtest.Action {
	switch code {
	case rmqtest.CodeSendMessage, rmqtest.CodeSendMessageV2:
		s.single.Add(1)
	case rmqtest.CodeSendBatchMessage:
		s.batch.Add(1)
	default:
		return rmqtest.Pass
	}
	if s.release != nil && s.held.CompareAndSwap(false, true) {
		<-s.release
		return rmqtest.Pass
	}
	if s.then != nil {
		return s.then(code)
	}
	return rmqtest.Pass
}

// queuedPublishes starts n publishes to topic on ev (message i with key
// key(i)) while the broker holds the first send, waits until all but the
// queues' first ones wait for their queue, and releases the broker. It
// returns each publish's result and error.
func queuedPublishes(t *testing.T, ev *env, sc *sendCounter, topic string, n int, key func(int) string, within time.Duration) ([]broker.PublishResult, []error) {
	t.Helper()
	// The first publish learns the topic's route; batches need it.
	if _, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: topic, Body: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	sc.release = make(chan struct{})
	ev.tb.Intercept(sc.intercept)
	t.Cleanup(func() { ev.tb.Intercept(nil) })
	results := make([]broker.PublishResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			results[i], errs[i] = ev.b.Publish(ctx, &broker.Message{Topic: topic, Key: key(i), Body: brokertest.Body(i)})
		})
	}
	// At most one publish per queue is not waiting: its queue's first.
	want := n - rmqtest.DefaultQueuesPerTopic
	if !brokertest.Poll(func() bool { return rocketmqbroker.PendingSends(ev.b) >= want }) {
		close(sc.release)
		wg.Wait()
		t.Fatalf("%d publishes waiting for their queue, want %d", rocketmqbroker.PendingSends(ev.b), want)
	}
	close(sc.release)
	wg.Wait()
	return results, errs
}

// TestConcurrentPublishesShareRequests: publishes waiting for their
// queue go out as one SEND_BATCH_MESSAGE request per queue. Each gets its
// own answer (its key's queue, an offset of its own, its own message
// id), and consuming the topic returns every message at that place with
// that id.
func TestConcurrentPublishesShareRequests(t *testing.T) {
	const topic, n = "batched", 200
	ev := newEnv(t, rocketmqbroker.Config{})
	var sc sendCounter
	key := func(i int) string { return fmt.Sprintf("customer-%d", i%40) }
	results, errs := queuedPublishes(t, ev, &sc, topic, n, key, brokertest.WaitLong)

	type place struct {
		queue  int32
		offset int64
	}
	byPlace := map[place]int{}
	ids := map[string]int{}
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("publish %d: %v", i, errs[i])
		}
		// One broker: Java's queue order is the queue id.
		if want := int32(javahash.Index(javahash.String(key(i)), rmqtest.DefaultQueuesPerTopic)); r.Partition != want {
			t.Errorf("publish %d (key %s): queue %d, want %d (the key's hash)", i, key(i), r.Partition, want)
		}
		p := place{r.Partition, r.Offset}
		if j, dup := byPlace[p]; dup {
			t.Fatalf("publishes %d and %d both answered queue %d offset %d", j, i, p.queue, p.offset)
		}
		byPlace[p] = i
		if r.MessageID == "" {
			t.Fatalf("publish %d: no message id", i)
		}
		if j, dup := ids[r.MessageID]; dup {
			t.Fatalf("publishes %d and %d both answered message id %s", j, i, r.MessageID)
		}
		ids[r.MessageID] = i
	}
	// The held send and one request per queue after it, at most: 4
	// queues, 50 publishes each, under MaxBatch.
	single, batch := sc.single.Load(), sc.batch.Load()
	if batch == 0 || single+batch > 2*rmqtest.DefaultQueuesPerTopic {
		t.Fatalf("%d publishes took %d single and %d batch requests, want at least one batch and at most %d requests",
			n, single, batch, 2*rmqtest.DefaultQueuesPerTopic)
	}

	c := ev.consume(t, broker.ConsumerSpec{Topic: topic, Group: "g"})
	for range n + 1 {
		d := brokertest.Next(t, c)
		q, off := d.(interface{ Position() (int32, int64) }).Position()
		body := string(d.Message().Body)
		if body == "first" {
			brokertest.Ack(t, d)
			continue
		}
		i, ok := byPlace[place{q, off}]
		if !ok {
			t.Fatalf("message %q at queue %d offset %d: no publish was answered with that place", body, q, off)
		}
		if want := string(brokertest.Body(i)); body != want || d.Message().Key != key(i) || d.MessageID() != results[i].MessageID {
			t.Fatalf("queue %d offset %d: body %q, key %q, id %s; publish %d was answered with it: body %q, key %q, id %s",
				q, off, body, d.Message().Key, d.MessageID(), i, want, key(i), results[i].MessageID)
		}
		brokertest.Ack(t, d)
	}
}

// TestFailedBatchMembersGoOnAlone: a batch the broker refuses (a failure
// a retry may mend) is sent again message by message, each with its own
// retries; a batch the broker stored but answered FLUSH_DISK_TIMEOUT for
// leaves every member's outcome unknown, as for a message sent alone.
func TestFailedBatchMembersGoOnAlone(t *testing.T) {
	const n = 40
	noKey := func(int) string { return "" }
	// batches answers batch sends with a, and passes the others.
	batches := func(a rmqtest.Action) func(int16) rmqtest.Action {
		return func(code int16) rmqtest.Action {
			if code == rmqtest.CodeSendBatchMessage {
				return a
			}
			return rmqtest.Pass
		}
	}

	t.Run("refused", func(t *testing.T) {
		ev := newEnv(t, rocketmqbroker.Config{})
		sc := sendCounter{then: batches(rmqtest.Fail)}
		_, errs := queuedPublishes(t, ev, &sc, "refused", n, noKey, brokertest.WaitLong)
		for i, err := range errs {
			if err != nil {
				t.Fatalf("publish %d: %v (its batch was refused; alone it is stored)", i, err)
			}
		}
		if sc.batch.Load() == 0 {
			t.Fatal("no batch was sent")
		}
		if got := storedIn(ev.tb, "refused"); got != n+1 {
			t.Fatalf("%d messages stored, want %d", got, n+1)
		}
	})
	t.Run("not durable", func(t *testing.T) {
		ev := newEnv(t, rocketmqbroker.Config{})
		sc := sendCounter{then: batches(rmqtest.FlushDiskTimeout)}
		_, errs := queuedPublishes(t, ev, &sc, "slowdisk", n, noKey, brokertest.WaitLong)
		unknown := 0
		for i, err := range errs {
			switch {
			case err == nil:
			case errors.Is(err, broker.ErrOutcomeUnknown):
				unknown++
			default:
				t.Fatalf("publish %d: %v, want success or ErrOutcomeUnknown", i, err)
			}
		}
		if sc.batch.Load() == 0 || unknown == 0 {
			t.Fatalf("%d batches sent, %d publishes with an unknown outcome; want some of each", sc.batch.Load(), unknown)
		}
		// Every message was stored once: no member was sent again.
		if got := storedIn(ev.tb, "slowdisk"); got != n+1 {
			t.Fatalf("%d messages stored, want %d", got, n+1)
		}
	})
}

// TestQueuedPublishLeavesAtItsDeadline: a publish whose deadline passes
// while it waits for its queue leaves unsent: its error is its context's,
// not "outcome unknown", and the broker never gets it.
func TestQueuedPublishLeavesAtItsDeadline(t *testing.T) {
	const topic = "deadline"
	ev := newEnv(t, rocketmqbroker.Config{})
	ctx := brokertest.Ctx(t)
	if _, err := ev.b.Publish(ctx, &broker.Message{Topic: topic, Key: "k", Body: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	sc := sendCounter{release: make(chan struct{})}
	ev.tb.Intercept(sc.intercept)
	t.Cleanup(func() { ev.tb.Intercept(nil) })
	held := make(chan error, 1)
	go func() {
		_, err := ev.b.Publish(ctx, &broker.Message{Topic: topic, Key: "k", Body: []byte("held")})
		held <- err
	}()
	if !brokertest.Poll(func() bool { return sc.held.Load() }) {
		t.Fatal("the first send never reached the broker")
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := ev.b.Publish(short, &broker.Message{Topic: topic, Key: "k", Body: []byte("late")})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, broker.ErrOutcomeUnknown) {
		t.Fatalf("Publish waiting for its queue past its deadline: %v, want context.DeadlineExceeded and not ErrOutcomeUnknown", err)
	}
	if n := rocketmqbroker.PendingSends(ev.b); n != 0 {
		t.Fatalf("%d publishes still waiting after the only waiting one left", n)
	}
	close(sc.release)
	if err := <-held; err != nil {
		t.Fatalf("the held publish: %v", err)
	}
	q := javahash.Index(javahash.String("k"), rmqtest.DefaultQueuesPerTopic)
	if got := ev.tb.MaxOffset(topic, q); got != 2 {
		t.Fatalf("%d messages in the key's queue, want 2 (first and held, not late)", got)
	}
	if got := sc.single.Load() + sc.batch.Load(); got != 1 {
		t.Fatalf("%d sends after the first, want 1", got)
	}
}

// TestMaxBatchOneSendsAlone: with MaxBatch 1 every publish is a request
// of its own, however many are in flight.
func TestMaxBatchOneSendsAlone(t *testing.T) {
	const topic, n = "alone", 100
	ev := newEnv(t, rocketmqbroker.Config{MaxBatch: 1})
	ctx := brokertest.Ctx(t)
	if _, err := ev.b.Publish(ctx, &broker.Message{Topic: topic, Body: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	var sc sendCounter
	ev.tb.Intercept(sc.intercept)
	t.Cleanup(func() { ev.tb.Intercept(nil) })
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if _, err := ev.b.Publish(ctx, &broker.Message{Topic: topic, Body: brokertest.Body(i)}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if single, batch := sc.single.Load(), sc.batch.Load(); single != n || batch != 0 {
		t.Fatalf("%d publishes took %d single and %d batch requests, want %d single", n, single, batch, n)
	}
}

// TestAbandonedPublishesLeaveBodiesAlone: publishes whose deadlines end
// while they wait for their queue or while their batch is on its way
// return, and their callers overwrite the body at once; no stored message
// holds an overwritten body (and -race sees no read of a body after its
// Publish returned). The broker answers every send 2 ms late, so that
// deadlines of 1–40 ms end at every stage.
func TestAbandonedPublishesLeaveBodiesAlone(t *testing.T) {
	const topic, n = "abandoned", 400
	ev := newEnv(t, rocketmqbroker.Config{})
	if _, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: topic, Body: []byte("m-first")}); err != nil {
		t.Fatal(err)
	}
	ev.tb.Intercept(func(code int16, _ map[string]string) rmqtest.Action {
		if code == rmqtest.CodeSendMessage || code == rmqtest.CodeSendMessageV2 || code == rmqtest.CodeSendBatchMessage {
			time.Sleep(2 * time.Millisecond) // a slow broker, not synchronisation
		}
		return rmqtest.Pass
	})
	t.Cleanup(func() { ev.tb.Intercept(nil) })
	var wg sync.WaitGroup
	var ok, gaveUp atomic.Int32
	for i := range n {
		wg.Go(func() {
			body := brokertest.Body(i)
			// A quarter wait as long as a test may; the others give up
			// after 1–40 ms (those of 1 ms always do: each send takes 2).
			within := time.Duration(1+i%40) * time.Millisecond
			if i%4 == 1 {
				within = brokertest.WaitLong
			}
			ctx, cancel := context.WithTimeout(context.Background(), within)
			_, err := ev.b.Publish(ctx, &broker.Message{Topic: topic, Body: body})
			cancel()
			if err == nil {
				ok.Add(1)
			} else {
				gaveUp.Add(1)
			}
			for j := range body {
				body[j] = 'X'
			}
		})
	}
	wg.Wait()
	ev.tb.Intercept(nil)
	if gaveUp.Load() == 0 || ok.Load() == 0 {
		t.Fatalf("%d of %d publishes succeeded; the test needs some to succeed and some to give up", ok.Load(), n)
	}
	stored := storedIn(ev.tb, topic)
	c := ev.consume(t, broker.ConsumerSpec{Topic: topic, Group: "g"})
	for range stored {
		d := brokertest.Next(t, c)
		if body := d.Message().Body; bytes.ContainsRune(body, 'X') {
			t.Fatalf("a stored message holds a body overwritten after its Publish returned: %q", body)
		}
		brokertest.Ack(t, d)
	}
	t.Logf("%d published, %d gave up, %d stored", ok.Load(), gaveUp.Load(), stored-1)
}
