package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// Factory starts, for one test, a broker of its own (in this process, on
// loopback) and returns an adapter connected to it. Both are stopped at
// t.Cleanup; the suite may close the adapter first (Close is idempotent).
// The suite checks the optional interfaces the returned value implements:
// broker.Checker, broker.SizeLimiter, broker.TopicChecker, and Settler.
type Factory func(t testing.TB) broker.Broker

// Settler is implemented by the broker a Factory returns when its
// adapter's Consumer.Close hands the group's position to the broker
// without waiting for it to arrive (RocketMQ commits offsets one-way).
// Settle waits until the broker holds the position of spec's group after
// a consumer of it was closed having acked acked messages: the first ones
// Next returned, and no others. The suite calls it before it starts the
// group's next consumer.
type Settler interface {
	Settle(t testing.TB, spec broker.ConsumerSpec, acked int)
}

// Run runs the conformance suite against the adapter f makes: every
// behaviour the broker package promises, one subtest each, each on a
// broker of its own. An adapter's test calls it as
//
//	func TestConformance(t *testing.T) { brokertest.Run(t, newConformanceBroker) }
//
// What differs between brokers on purpose (how a result names a stream,
// whether Pause hands prefetched messages back at once or keeps them for
// Resume, how a nack delay is rounded) is checked only as far as the
// package doc promises it; each adapter's own tests check the rest.
func Run(t *testing.T, f Factory) {
	t.Helper()
	for _, c := range suite {
		t.Run(c.name, func(t *testing.T) { c.run(t, f(t)) })
	}
}

var suite = []struct {
	name string
	run  func(t *testing.T, b broker.Broker)
}{
	{"publish results and deliveries", confPublishResults},
	{"key and headers round trip", confKeyAndHeaders},
	{"groups and topics are independent", confIndependent},
	{"nack redelivers and counts", confNack},
	{"same key same partition in order", confKeyOrder},
	{"pause and resume", confPauseResume},
	{"next unblocks on ctx pause and close", confNextUnblocks},
	{"close hands back prefetched and keeps the position", confCloseHandsBack},
	{"deliveries answered after close", confAnswerAfterClose},
	{"concurrent pause resume and close", confConcurrentControl},
	{"broker close", confBrokerClose},
	{"refused requests", confRefused},
	{"checker", confChecker},
	{"size limiter", confSizeLimiter},
	{"topic checker", confTopicChecker},
}

// index returns i of a delivery of Body(i).
func index(t testing.TB, d broker.Delivery) int {
	t.Helper()
	var i int
	if _, err := fmt.Sscanf(string(d.Message().Body), "m-%d", &i); err != nil {
		t.Fatalf("delivery %s: body %q is not a numbered message", d.MessageID(), d.Message().Body)
	}
	return i
}

// without returns want minus the keys of drop.
func without(want, drop map[string]bool) map[string]bool {
	for k := range drop {
		delete(want, k)
	}
	return want
}

// loc names where a result was stored: its stream and partition.
func loc(r broker.PublishResult) string { return fmt.Sprintf("%s/%d", r.Stream, r.Partition) }

// confPublishResults: Publish returns where the message is (a stream, a
// partition or -1, an offset growing within the partition, an id unique
// to the message); each delivery carries that id, the message as
// published, Redelivered 0 and the time the broker stored it, and comes
// once.
func confPublishResults(t *testing.T, b broker.Broker) {
	const topic, n = "conf.results", 200
	before := time.Now()
	res := PublishN(t, b, topic, 0, n)
	ids := make(map[string]int, n)
	last := make(map[string]int64)
	for i, r := range res {
		if r.Stream == "" || r.MessageID == "" || r.Partition < -1 || r.Offset < 0 {
			t.Fatalf("publish %d: result %+v", i, r)
		}
		if j, dup := ids[r.MessageID]; dup {
			t.Fatalf("publishes %d and %d both got MessageID %q", j, i, r.MessageID)
		}
		ids[r.MessageID] = i
		if prev, ok := last[loc(r)]; ok && r.Offset <= prev {
			t.Fatalf("publish %d: offset %d of %s after %d", i, r.Offset, loc(r), prev)
		}
		last[loc(r)] = r.Offset
	}

	c := Consume(t, b, broker.ConsumerSpec{Topic: topic, Group: "conf"})
	ds := Collect(t, c, Bodies(0, n))
	ExactlyOnce(t, Counts(ds))
	for _, d := range ds {
		i, m := index(t, d), d.Message()
		if m.Topic != topic || m.Key != "" || len(m.Headers) != 0 {
			t.Fatalf("delivery of %d: topic %q key %q headers %v, want %q, no key, no headers", i, m.Topic, m.Key, m.Headers, topic)
		}
		if d.MessageID() != res[i].MessageID {
			t.Fatalf("delivery of %d: MessageID %q, publish said %q", i, d.MessageID(), res[i].MessageID)
		}
		if d.Redelivered() != 0 {
			t.Fatalf("delivery of %d: Redelivered %d", i, d.Redelivered())
		}
		if ts := d.Timestamp(); ts.Before(before.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
			t.Fatalf("delivery of %d: Timestamp %v, published after %v", i, ts, before)
		}
	}
	ExpectNothing(t, c, 200*time.Millisecond)
}

// confKeyAndHeaders: the key and the headers (any the sidecar's header
// rule lets through) come back as published; headers as a set, since
// brokers do not all keep their order.
func confKeyAndHeaders(t *testing.T, b broker.Broker) {
	hdrs := func(kv ...string) []broker.Header {
		var hs []broker.Header
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, broker.Header{Key: kv[i], Value: kv[i+1]})
		}
		return hs
	}
	tests := []struct {
		name    string
		key     string
		headers []broker.Header
	}{
		{"key and headers", "order-42", hdrs("Trace-Id", "abc", "X", "1")},
		{"headers without key", "", hdrs("Only", "header")},
		{"neither", "", nil},
		{"unicode key with spaces", "  ключ ✓ ", nil},
		{"header values", "k", hdrs("Empty", "", "utf8", "grüße, 世界\tand a tab",
			"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := broker.CheckHeaders(tt.headers); err != nil {
				t.Fatalf("the case breaks the sidecar's header rule: %v", err)
			}
			topic := fmt.Sprintf("conf.rt.%d", i)
			in := &broker.Message{Topic: topic, Key: tt.key, Headers: slices.Clone(tt.headers), Body: []byte("payload " + tt.name)}
			if _, err := b.Publish(Ctx(t), in); err != nil {
				t.Fatal(err)
			}
			d := Next(t, Consume(t, b, broker.ConsumerSpec{Topic: topic, Group: "conf"}))
			got := d.Message()
			if got.Topic != topic || got.Key != tt.key || !bytes.Equal(got.Body, in.Body) {
				t.Fatalf("got topic %q key %q body %q, want %q %q %q", got.Topic, got.Key, got.Body, topic, tt.key, in.Body)
			}
			byKey := func(a, b broker.Header) int { return strings.Compare(a.Key, b.Key) }
			gotH, wantH := slices.SortedStableFunc(slices.Values(got.Headers), byKey), slices.SortedStableFunc(slices.Values(tt.headers), byKey)
			if !slices.Equal(gotH, wantH) {
				t.Fatalf("headers %q, want %q", gotH, wantH)
			}
			Ack(t, d)
		})
	}
}

// confIndependent: every group of a topic gets every message of it, and
// nothing of another topic.
func confIndependent(t *testing.T, b broker.Broker) {
	PublishN(t, b, "conf.one", 0, 50)
	PublishN(t, b, "conf.two", 100, 30)
	for _, tt := range []struct {
		group, topic string
		want         map[string]bool
	}{
		{"g1", "conf.one", Bodies(0, 50)},
		{"g2", "conf.one", Bodies(0, 50)},
		{"g1", "conf.two", Bodies(100, 30)},
	} {
		t.Run(tt.group+"/"+tt.topic, func(t *testing.T) {
			c := Consume(t, b, broker.ConsumerSpec{Topic: tt.topic, Group: tt.group})
			ExactlyOnce(t, Counts(Collect(t, c, tt.want)))
			ExpectNothing(t, c, 200*time.Millisecond)
		})
	}
}

// confNack: Nack hands a message back; it comes again with the same id
// and body, not before the delay, with Redelivered counting up and the
// time it was stored. A delivery takes one answer: a second fails.
func confNack(t *testing.T, b broker.Broker) {
	const topic = "conf.nack"
	PublishN(t, b, topic, 0, 1)
	c := Consume(t, b, broker.ConsumerSpec{Topic: topic, Group: "conf"})
	d := Next(t, c)
	id, count := d.MessageID(), d.Redelivered()
	if count != 0 {
		t.Fatalf("first delivery: Redelivered %d", count)
	}
	for _, delay := range []time.Duration{0, 300 * time.Millisecond} {
		nacked := time.Now()
		if err := d.Nack(context.Background(), delay); err != nil {
			t.Fatalf("Nack(%v): %v", delay, err)
		}
		if err := d.Ack(context.Background()); err == nil {
			t.Fatal("Ack after Nack succeeded")
		}
		d = Next(t, c)
		if since := time.Since(nacked); since < delay {
			t.Fatalf("redelivered %v after Nack(%v)", since, delay)
		}
		m := d.Message()
		if d.MessageID() != id || m.Topic != topic || !bytes.Equal(m.Body, Body(0)) {
			t.Fatalf("after Nack(%v): %s %q %q, want %s %q %q", delay, d.MessageID(), m.Topic, m.Body, id, topic, Body(0))
		}
		if d.Redelivered() <= count {
			t.Fatalf("after Nack(%v): Redelivered %d, was %d", delay, d.Redelivered(), count)
		}
		count = d.Redelivered()
		if ts := d.Timestamp(); ts.IsZero() || ts.After(nacked) {
			t.Fatalf("after Nack(%v): Timestamp %v is not when the message was stored (nacked at %v)", delay, ts, nacked)
		}
	}
	Ack(t, d)
	if err := d.Ack(context.Background()); err == nil {
		t.Fatal("second Ack succeeded")
	}
	if err := d.Nack(context.Background(), 0); err == nil {
		t.Fatal("Nack after Ack succeeded")
	}
	ExpectNothing(t, c, 300*time.Millisecond)
}

// confKeyOrder: messages with one key are stored in one partition, and a
// consumer gets them in publish order.
func confKeyOrder(t *testing.T, b broker.Broker) {
	const topic, n = "conf.keyed", 100
	keys := []string{"alice", "bob", "carol", "dave", "erin"}
	keyOf := func(i int) string { return keys[i%len(keys)] }
	where := make(map[string]string)
	for i, r := range PublishKeyed(t, b, topic, 0, n, keyOf) {
		if w, ok := where[keyOf(i)]; ok && w != loc(r) {
			t.Fatalf("key %q stored in %s and %s", keyOf(i), w, loc(r))
		}
		where[keyOf(i)] = loc(r)
	}
	c := Consume(t, b, broker.ConsumerSpec{Topic: topic, Group: "conf"})
	last := make(map[string]int)
	for _, d := range Collect(t, c, Bodies(0, n)) {
		i, k := index(t, d), d.Message().Key
		if k != keyOf(i) {
			t.Fatalf("message %d: key %q, want %q", i, k, keyOf(i))
		}
		if prev, ok := last[k]; ok && i <= prev {
			t.Fatalf("key %q: message %d delivered after %d", k, i, prev)
		}
		last[k] = i
	}
}

// confPauseResume: Pause (idempotent) makes Next return ErrPaused; a
// delivery returned before stays valid; Resume (idempotent) brings every
// message not acked, old and new, once.
func confPauseResume(t *testing.T, b broker.Broker) {
	const topic, n = "conf.pause", 60
	PublishN(t, b, topic, 0, n)
	// A long AckWait: anything that comes again was handed back, not
	// timed out.
	c := Consume(t, b, broker.ConsumerSpec{Topic: topic, Group: "conf", Prefetch: 8, AckWait: 10 * WaitLong})
	acked := make(map[string]bool)
	var held broker.Delivery
	for i := range 5 {
		d := Next(t, c)
		if i == 4 {
			held = d
			continue
		}
		Ack(t, d)
		acked[string(d.Message().Body)] = true
	}
	for i := range 2 {
		if err := c.Pause(Ctx(t)); err != nil {
			t.Fatalf("Pause %d: %v", i, err)
		}
	}
	if _, err := c.Next(Ctx(t)); !errors.Is(err, broker.ErrPaused) {
		t.Fatalf("Next while paused: %v, want ErrPaused", err)
	}
	Ack(t, held)
	acked[string(held.Message().Body)] = true
	PublishN(t, b, topic, n, 10)
	if _, err := c.Next(Ctx(t)); !errors.Is(err, broker.ErrPaused) {
		t.Fatalf("Next while paused, after a publish: %v, want ErrPaused", err)
	}
	for i := range 2 {
		if err := c.Resume(Ctx(t)); err != nil {
			t.Fatalf("Resume %d: %v", i, err)
		}
	}
	ExactlyOnce(t, Counts(Collect(t, c, without(Bodies(0, n+10), acked))))
	ExpectNothing(t, c, 300*time.Millisecond)
}

// confNextUnblocks: Next ends with its ctx, and a Next blocked on an idle
// topic returns ErrPaused on Pause and ErrClosed on Close.
func confNextUnblocks(t *testing.T, b broker.Broker) {
	const topic = "conf.quiet"
	c := Consume(t, b, broker.ConsumerSpec{Topic: topic, Group: "conf"})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next: %v, want DeadlineExceeded", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Next(ctx)
		errc <- err
	}()
	cancel()
	if err := recvErr(t, errc, "a blocked Next"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next: %v, want Canceled", err)
	}
	// The consumer is still usable.
	PublishN(t, b, topic, 0, 1)
	Collect(t, c, Bodies(0, 1))

	for _, tt := range []struct {
		name string
		stop func(context.Context) error
		want error
	}{
		{"pause", c.Pause, broker.ErrPaused},
		{"close", c.Close, broker.ErrClosed},
	} {
		if err := c.Resume(Ctx(t)); err != nil {
			t.Fatalf("Resume before %s: %v", tt.name, err)
		}
		go func() {
			_, err := c.Next(Ctx(t))
			errc <- err
		}()
		// Next may or may not be blocked yet when stop runs; the result
		// must be the same.
		if err := tt.stop(Ctx(t)); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if err := recvErr(t, errc, "a blocked Next"); !errors.Is(err, tt.want) {
			t.Fatalf("Next blocked at %s: %v, want %v", tt.name, err, tt.want)
		}
	}
}

// recvErr receives from errc within WaitLong, what returning it.
func recvErr(t testing.TB, errc <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(WaitLong):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

// confCloseHandsBack: Close (after Pause, as the sidecar's upgrade does it)
// is idempotent and final (Next and Resume return ErrClosed, Pause does
// nothing), hands back what was fetched and not returned, and keeps the
// group's position: the group's next consumer gets every message not
// acked, and no acked one.
func confCloseHandsBack(t *testing.T, b broker.Broker) {
	const topic, n = "conf.close", 60
	PublishN(t, b, topic, 0, n)
	spec := broker.ConsumerSpec{Topic: topic, Group: "conf", Prefetch: 8, AckWait: 10 * WaitLong}
	c1 := Consume(t, b, spec)
	acked := make(map[string]bool)
	for range 10 {
		d := Next(t, c1)
		Ack(t, d)
		acked[string(d.Message().Body)] = true
	}
	if err := c1.Pause(Ctx(t)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := c1.Close(Ctx(t)); err != nil {
			t.Fatalf("Close %d: %v", i, err)
		}
	}
	if _, err := c1.Next(Ctx(t)); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
	if err := c1.Resume(Ctx(t)); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Resume after Close: %v, want ErrClosed", err)
	}
	if err := c1.Pause(Ctx(t)); err != nil {
		t.Fatalf("Pause after Close: %v", err)
	}
	if s, ok := b.(Settler); ok {
		s.Settle(t, spec, len(acked))
	}
	c2 := Consume(t, b, spec)
	ExactlyOnce(t, Counts(Collect(t, c2, without(Bodies(0, n), acked))))
	ExpectNothing(t, c2, 300*time.Millisecond)
}

// confAnswerAfterClose: deliveries returned before Close may still be
// answered while Close runs or after: the answer returns (nil, or
// ErrClosed when the adapter can no longer pass it on) instead of hanging
// or failing otherwise, and Close returns (an adapter may wait for the
// answers to commit them).
func confAnswerAfterClose(t *testing.T, b broker.Broker) {
	const topic = "conf.late"
	PublishN(t, b, topic, 0, 2)
	c := Consume(t, b, broker.ConsumerSpec{Topic: topic, Group: "conf"})
	d1, d2 := Next(t, c), Next(t, c)
	closed := make(chan error, 1)
	go func() { closed <- c.Close(Ctx(t)) }()
	if !Poll(func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		_, err := c.Next(ctx)
		return errors.Is(err, broker.ErrClosed)
	}) {
		t.Fatal("Next did not return ErrClosed after Close began")
	}
	for _, answer := range []struct {
		name string
		fn   func() error
	}{
		{"Ack", func() error { return d1.Ack(context.Background()) }},
		{"Nack", func() error { return d2.Nack(context.Background(), 0) }},
	} {
		errc := make(chan error, 1)
		go func() { errc <- answer.fn() }()
		select {
		case err := <-errc:
			if err != nil && !errors.Is(err, broker.ErrClosed) {
				t.Fatalf("%s after Close: %v, want nil or ErrClosed", answer.name, err)
			}
		case <-time.After(WaitLong):
			t.Fatalf("%s after Close did not return", answer.name)
		}
	}
	if err := recvErr(t, closed, "Close"); err != nil {
		t.Fatalf("Close with deliveries outstanding: %v", err)
	}
}

// confConcurrentControl: Pause and Resume from another goroutine while
// Next runs lose nothing; Pause, Resume and Close from several goroutines
// at once race with nothing (run under -race) and end the Next loop.
func confConcurrentControl(t *testing.T, b broker.Broker) {
	t.Run("pause and resume between deliveries", func(t *testing.T) {
		const topic, n, cycles = "conf.cycles", 100, 25
		PublishN(t, b, topic, 0, n)
		c := Consume(t, b, broker.ConsumerSpec{Topic: topic, Group: "conf", Prefetch: 4})
		var delivered atomic.Int64
		pauser := make(chan error, 1)
		go func() {
			for range cycles {
				// Let a few messages through between two pauses.
				target := min(delivered.Load()+3, n)
				if !Poll(func() bool { return delivered.Load() >= target }) {
					pauser <- errors.New("no deliveries between pauses")
					return
				}
				if err := c.Pause(context.Background()); err != nil {
					pauser <- fmt.Errorf("pause: %w", err)
					return
				}
				if err := c.Resume(context.Background()); err != nil {
					pauser <- fmt.Errorf("resume: %w", err)
					return
				}
			}
			pauser <- nil
		}()
		seen := make(map[string]bool)
		for len(seen) < n {
			d, err := c.Next(Ctx(t))
			switch {
			case err == nil:
				seen[string(d.Message().Body)] = true
				delivered.Store(int64(len(seen)))
				Ack(t, d)
			case errors.Is(err, broker.ErrPaused):
				runtime.Gosched() // a Resume follows
			default:
				t.Fatalf("Next after %d of %d messages: %v", len(seen), n, err)
			}
		}
		if err := recvErr(t, pauser, "the pauser"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pause resume and close at once", func(t *testing.T) {
		const topic, n = "conf.busy", 100
		PublishN(t, b, topic, 0, n)
		c := Consume(t, b, broker.ConsumerSpec{Topic: topic, Group: "conf", Prefetch: 4})
		loop := make(chan error, 1)
		go func() {
			for {
				d, err := c.Next(context.Background())
				switch {
				case err == nil:
					if err := d.Ack(context.Background()); err != nil && !errors.Is(err, broker.ErrClosed) {
						loop <- fmt.Errorf("ack: %w", err)
						return
					}
				case errors.Is(err, broker.ErrPaused):
					runtime.Gosched()
				case errors.Is(err, broker.ErrClosed):
					loop <- nil
					return
				default:
					loop <- fmt.Errorf("next: %w", err)
					return
				}
			}
		}()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 25 {
					if err := c.Pause(context.Background()); err != nil {
						t.Errorf("Pause: %v", err)
					}
					if err := c.Resume(context.Background()); err != nil {
						t.Errorf("Resume: %v", err)
					}
				}
			})
		}
		wg.Wait()
		for range 3 {
			wg.Go(func() {
				if err := c.Close(Ctx(t)); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		}
		wg.Wait()
		if err := recvErr(t, loop, "the Next loop"); err != nil {
			t.Fatal(err)
		}
	})
}

// confBrokerClose: Broker.Close (idempotent) closes its consumers (a
// blocked Next returns ErrClosed) and makes every later call fail with
// ErrClosed; a delivery returned before can still be answered.
func confBrokerClose(t *testing.T, b broker.Broker) {
	const topic = "conf.closing"
	PublishN(t, b, topic, 0, 2)
	c := Consume(t, b, broker.ConsumerSpec{Topic: topic, Group: "conf"})
	d := Next(t, c)
	errc := make(chan error, 1)
	go func() {
		for { // takes the second message, then blocks until Close
			d, err := c.Next(context.Background())
			if err != nil {
				errc <- err
				return
			}
			_ = d.Ack(context.Background())
		}
	}()
	for i := range 2 {
		if err := b.Close(); err != nil {
			t.Fatalf("Close %d: %v", i, err)
		}
	}
	if err := recvErr(t, errc, "a blocked Next"); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Next blocked at Broker.Close: %v, want ErrClosed", err)
	}
	if _, err := c.Next(Ctx(t)); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Next after Broker.Close: %v, want ErrClosed", err)
	}
	if _, err := b.Publish(Ctx(t), &broker.Message{Topic: topic, Body: []byte("x")}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := b.Consume(Ctx(t), broker.ConsumerSpec{Topic: topic, Group: "conf"}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Consume after Close: %v, want ErrClosed", err)
	}
	if err := d.Ack(context.Background()); err != nil && !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Ack after Broker.Close: %v, want nil or ErrClosed", err)
	}
	if ch, ok := b.(broker.Checker); ok {
		if err := ch.Check(Ctx(t)); !errors.Is(err, broker.ErrClosed) {
			t.Fatalf("Check after Close: %v, want ErrClosed", err)
		}
	}
}

// confRefused: requests no broker can serve are refused for good
// (ErrRejected: nothing was stored), not left with an unknown outcome.
func confRefused(t *testing.T, b broker.Broker) {
	for _, tt := range []struct {
		name string
		msg  *broker.Message
	}{
		{"nil message", nil},
		{"empty topic", &broker.Message{Body: []byte("x")}},
	} {
		_, err := b.Publish(Ctx(t), tt.msg)
		if !errors.Is(err, broker.ErrRejected) || !broker.NotStored(err) {
			t.Errorf("Publish %s: %v, want ErrRejected (not stored)", tt.name, err)
		}
	}
	for _, tt := range []struct {
		name string
		spec broker.ConsumerSpec
	}{
		{"no group", broker.ConsumerSpec{Topic: "conf.t"}},
		{"no topic", broker.ConsumerSpec{Group: "conf"}},
		{"negative prefetch", broker.ConsumerSpec{Topic: "conf.t", Group: "conf", Prefetch: -1}},
	} {
		if c, err := b.Consume(Ctx(t), tt.spec); !errors.Is(err, broker.ErrRejected) {
			if err == nil {
				_ = c.Close(context.Background())
			}
			t.Errorf("Consume %s: %v, want ErrRejected", tt.name, err)
		}
	}
}

// confChecker: a Checker reports a running cluster ready (and a closed
// adapter not: confBrokerClose).
func confChecker(t *testing.T, b broker.Broker) {
	ch, ok := b.(broker.Checker)
	if !ok {
		t.Skip("the adapter does not implement broker.Checker")
	}
	if err := ch.Check(Ctx(t)); err != nil {
		t.Fatalf("Check of a running cluster: %v", err)
	}
}

// confSizeLimiter: MaxBody shrinks as key and headers grow, a body of
// MaxBody(h) is stored and delivered whole with h bytes of key or of
// headers, and a body well over it is refused with ErrTooLarge.
func confSizeLimiter(t *testing.T, b broker.Broker) {
	sl, ok := b.(broker.SizeLimiter)
	if !ok {
		t.Skip("the adapter does not implement broker.SizeLimiter")
	}
	prev := sl.MaxBody(0)
	if prev <= 0 {
		t.Fatalf("MaxBody(0) = %d", prev)
	}
	for _, h := range []int{100, 1000, 4000} {
		mb := sl.MaxBody(h)
		if mb > prev || mb <= 0 {
			t.Fatalf("MaxBody(%d) = %d after %d for less", h, mb, prev)
		}
		prev = mb
	}

	const topic, h = "conf.big", 1000
	const name = "Size-Test"
	msgs := []*broker.Message{
		{Topic: topic, Key: strings.Repeat("k", h)},
		{Topic: topic, Headers: []broker.Header{{Key: name, Value: strings.Repeat("v", h-len(name)-4)}}},
	}
	for i, m := range msgs {
		if got := broker.HeaderBytes(m); got != h {
			t.Fatalf("message %d: HeaderBytes %d, want %d", i, got, h)
		}
		m.Body = make([]byte, sl.MaxBody(h)) // random: compression cannot help
		if _, err := rand.Read(m.Body); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Publish(Ctx(t), m); err != nil {
			t.Fatalf("Publish of a body of MaxBody(%d) = %d bytes with %d bytes of key and headers: %v", h, len(m.Body), h, err)
		}
	}
	c := Consume(t, b, broker.ConsumerSpec{Topic: topic, Group: "conf"})
	for range msgs {
		d := Next(t, c)
		got := d.Message()
		if !slices.ContainsFunc(msgs, func(m *broker.Message) bool { return bytes.Equal(m.Body, got.Body) && m.Key == got.Key }) {
			t.Fatalf("delivered a message of %d bytes, key %d bytes, that was not published", len(got.Body), len(got.Key))
		}
		Ack(t, d)
	}

	big := &broker.Message{Topic: topic, Body: make([]byte, sl.MaxBody(0)+1<<20)}
	if _, err := rand.Read(big.Body); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(Ctx(t), big); !errors.Is(err, broker.ErrTooLarge) || !errors.Is(err, broker.ErrRejected) {
		t.Fatalf("Publish of MaxBody(0) + 1 MiB: %v, want ErrTooLarge", err)
	}
}

// confTopicChecker: ordinary topic names pass, and a name no broker holds
// (1000 bytes) is refused with ErrTopicConflict.
func confTopicChecker(t *testing.T, b broker.Broker) {
	tc, ok := b.(broker.TopicChecker)
	if !ok {
		t.Skip("the adapter does not implement broker.TopicChecker")
	}
	if err := tc.CheckTopics(Ctx(t), []string{"conf.orders", "conf.payments"}, []string{"conf.audit"}); err != nil {
		t.Fatalf("CheckTopics of ordinary names: %v", err)
	}
	long := strings.Repeat("t", 1000)
	if err := tc.CheckTopics(Ctx(t), []string{"conf.orders", long}, nil); !errors.Is(err, broker.ErrTopicConflict) {
		t.Fatalf("CheckTopics of a 1000-byte name: %v, want ErrTopicConflict", err)
	}
}
