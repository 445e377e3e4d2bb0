package natsbroker_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
)

// TestKeepPrefetched: a consumer told to Keep hands its prefetched
// messages over whole instead of naking them; a consumer of the same group
// on another connection (a successor process's) returns them first, as
// first deliveries with their content, and acks them through their ack
// subjects: the server counts each delivered once and none redelivered.
// What does not fit Kept's bound goes back to the server (one
// redelivery each), as an ordinary Pause would hand it back.
func TestKeepPrefetched(t *testing.T) {
	const n = 10
	for _, tc := range []struct {
		name  string
		limit int
		// carried: how many move with the carry; the rest are naked.
		carried int
	}{
		{"all carried", 1 << 20, n - 1},
		{"over the bound", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := newEnv(t, natsbroker.Config{})
			successor := brokertest.Open(t, func(ctx context.Context) (*natsbroker.Broker, error) {
				return natsbroker.New(ctx, natsbroker.Config{URL: ev.e.ClientURL(), Logger: quietLog})
			})
			ctx := brokertest.Ctx(t)
			keyed := &broker.Message{Topic: "jobs", Key: "k-1", Body: []byte("keyed"),
				Headers: []broker.Header{{Key: "h", Value: "1"}, {Key: "h", Value: "2"}}}
			brokertest.PublishN(t, ev.b, "jobs", 0, n-1)
			if _, err := ev.b.Publish(ctx, keyed); err != nil {
				t.Fatal(err)
			}
			// AckWait far beyond the test: any redelivery is a nak's.
			spec := broker.ConsumerSpec{Topic: "jobs", Group: "g", Prefetch: n, AckWait: 10 * brokertest.WaitLong}
			c := brokertest.Consume(t, ev.b, spec)
			first := brokertest.Next(t, c)
			brokertest.Ack(t, first)
			info := func() *jetstream.ConsumerInfo {
				cons, err := ev.js.Consumer(ctx, "MESH_jobs", "g__jobs")
				if err != nil {
					return nil
				}
				i, err := cons.Info(ctx)
				if err != nil {
					return nil
				}
				return i
			}
			// The other n-1 are prefetched: delivered, unacked.
			if !brokertest.Poll(func() bool {
				i := info()
				return i != nil && i.NumPending == 0 && i.NumAckPending == n-1
			}) {
				t.Fatalf("the consumer did not prefetch the rest: %+v", info())
			}

			c2, kept := handOver(t, c, successor, spec, tc.limit, nil)
			if (tc.carried == 0) != (kept == nil) || len(kept) > tc.limit {
				t.Fatalf("Kept gave %d bytes, limit %d, want %d messages", len(kept), tc.limit, tc.carried)
			}
			var got []broker.Delivery
			for range n - 1 {
				d := brokertest.Next(t, c2)
				got = append(got, d)
				brokertest.Ack(t, d)
			}
			var redelivered int
			for i, d := range got {
				if _, ok := broker.As[broker.Inherited](d); ok {
					t.Errorf("delivery %d is Inherited; a carried message has its body", i)
				}
				if d.Redelivered() > 0 {
					redelivered++
				}
			}
			// Carried ones come first, with the count of their first fetch.
			if want := n - 1 - tc.carried; redelivered != want {
				t.Errorf("%d of %d came redelivered, want %d", redelivered, n-1, want)
			}
			for i, d := range got[:tc.carried] {
				if d.Redelivered() != 0 {
					t.Errorf("carried delivery %d has redelivered %d", i, d.Redelivered())
				}
			}
			// The first, acked, was m-00000: the rest and the keyed one.
			want := brokertest.Bodies(1, n-2)
			want["keyed"] = true
			bodies := map[string]bool{}
			for _, d := range got {
				bodies[string(d.Message().Body)] = true
				if string(d.Message().Body) == "keyed" {
					m := d.Message()
					if m.Key != keyed.Key || !slices.Equal(m.Headers, keyed.Headers) || m.Topic != "jobs" {
						t.Errorf("keyed message came as %+v, want %+v", m, keyed)
					}
				}
			}
			if !maps.Equal(bodies, want) {
				t.Errorf("got %v, want %v", bodies, want)
			}
			if !brokertest.Poll(func() bool {
				i := info()
				return i != nil && i.NumAckPending == 0 && i.NumPending == 0
			}) {
				t.Fatalf("messages still pending after the successor's acks: %+v", info())
			}
			if i := info(); i.NumRedelivered != 0 || i.Delivered.Consumer != uint64(n+n-1-tc.carried) {
				t.Errorf("server: %d redelivered, %d deliveries; want 0 and %d", i.NumRedelivered, i.Delivered.Consumer, n+n-1-tc.carried)
			}
			brokertest.ExpectNothing(t, c2, 300*time.Millisecond)
		})
	}
}

// TestCarryRefused: a carry that is not a NATS consumer's (not JSON, or
// naming no ack subject) is refused, and no consumer starts.
func TestCarryRefused(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	for _, bad := range []string{`{`, `[{"reply":"orders.created"}]`, `[{"reply":"$JS.ACK.a b"}]`} {
		spec := broker.ConsumerSpec{Topic: "jobs", Group: "g", Carry: []byte(bad)}
		if c, err := ev.b.Consume(brokertest.Ctx(t), spec); !errors.Is(err, broker.ErrRejected) {
			if c != nil {
				_ = c.Close(brokertest.Ctx(t))
			}
			t.Errorf("Consume with carry %s: %v, want ErrRejected", bad, err)
		}
	}
}

// TestReturnFetched: a delivery Next returned just as a pause for a hot
// upgrade began (nobody took it) goes back to the front of the carry
// (Keeper.Return) instead of being naked, so the successor delivers it
// first and as a first delivery; the same for a carried one the
// successor fetched as its own pause began. A consumer that is not
// keeping, or a delivery of another durable, is refused: the caller naks.
func TestReturnFetched(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	successor := brokertest.Open(t, func(ctx context.Context) (*natsbroker.Broker, error) {
		return natsbroker.New(ctx, natsbroker.Config{URL: ev.e.ClientURL(), Logger: quietLog})
	})
	brokertest.PublishN(t, ev.b, "jobs", 0, 3)
	spec := broker.ConsumerSpec{Topic: "jobs", Group: "g", Prefetch: 3, AckWait: 10 * brokertest.WaitLong}
	c := brokertest.Consume(t, ev.b, spec)
	other := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: "jobs", Group: "h", Prefetch: 3, AckWait: 10 * brokertest.WaitLong})
	k := c.(broker.Keeper)
	first := brokertest.Next(t, c)
	foreign := brokertest.Next(t, other)
	if k.Return(first) {
		t.Fatal("Return before Keep took the delivery; it must be naked as usual")
	}
	c2, _ := handOver(t, c, successor, spec, 1<<20, func() {
		if k.Return(foreign) {
			t.Error("Return took another durable's delivery")
		}
		if !k.Return(first) {
			t.Fatal("Return while keeping refused the consumer's own delivery")
		}
	})
	d := brokertest.Next(t, c2)
	if string(d.Message().Body) != string(first.Message().Body) || d.Redelivered() != 0 {
		t.Fatalf("the successor's first delivery is %q (redelivered %d), want the returned %q as a first delivery",
			d.Message().Body, d.Redelivered(), first.Message().Body)
	}
	// The successor pauses for an upgrade of its own just as it fetched
	// that carried message: it goes back to the front of its carry.
	c3, _ := handOver(t, c2, successor, spec, 1<<20, func() {
		if !c2.(broker.Keeper).Return(d) {
			t.Fatal("Return refused a carried delivery")
		}
	})
	bodies := map[string]bool{}
	for i := range 3 {
		d := brokertest.Next(t, c3)
		if i == 0 && string(d.Message().Body) != string(first.Message().Body) {
			t.Errorf("third consumer's first delivery is %q, want the returned %q", d.Message().Body, first.Message().Body)
		}
		if d.Redelivered() != 0 {
			t.Errorf("%q came redelivered %d times", d.Message().Body, d.Redelivered())
		}
		bodies[string(d.Message().Body)] = true
		brokertest.Ack(t, d)
	}
	if want := brokertest.Bodies(0, 3); !maps.Equal(bodies, want) {
		t.Errorf("got %v, want %v", bodies, want)
	}
	brokertest.ExpectNothing(t, c3, 300*time.Millisecond)
}

// TestHandOverUnderTraffic: a consumer that has caught up is handed over
// (Keep, Pause, Close, Kept, a successor's Consume with the carry) twenty
// times while a producer publishes without pause and Next waits on the
// pull requests in flight. Every message arrives once, as a first
// delivery, long before the ack wait. With nats.go's endless iterator the
// pull request stayed open across the unsubscribe, and a message the
// server picked for it just then was dropped and offered again only after
// the ack wait (about half of the hot upgrades of a caught-up consumer).
func TestHandOverUnderTraffic(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	successor := brokertest.Open(t, func(ctx context.Context) (*natsbroker.Broker, error) {
		return natsbroker.New(ctx, natsbroker.Config{URL: ev.e.ClientURL(), Logger: quietLog})
	})
	ctx := brokertest.Ctx(t)
	brokertest.PublishN(t, ev.b, "live", 0, 1) // creates the stream
	published := 1
	// AckWait far beyond the test: a message dropped at a hand-over does
	// not come back in time, and a nak would count a redelivery.
	spec := broker.ConsumerSpec{Topic: "live", Group: "g", Prefetch: 16, AckWait: 10 * brokertest.WaitLong}

	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() { // the producer
		for i := 1; ; i++ {
			select {
			case <-stop:
				published = i
				pubDone <- nil
				return
			default:
			}
			if _, err := ev.b.Publish(ctx, &broker.Message{Topic: "live", Body: brokertest.Body(i)}); err != nil {
				pubDone <- err
				return
			}
		}
	}()

	var mu sync.Mutex
	got := map[string]int{}
	redelivered := 0
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	// The reader calls Next on each consumer in turn until it is paused.
	consumers := make(chan broker.Consumer)
	readerDone := make(chan error, 1)
	go func() {
		for c := range consumers {
			for {
				d, err := c.Next(ctx)
				if errors.Is(err, broker.ErrPaused) || errors.Is(err, broker.ErrClosed) {
					break
				}
				if err != nil {
					readerDone <- err
					return
				}
				mu.Lock()
				got[string(d.Message().Body)]++
				if d.Redelivered() > 0 {
					redelivered++
				}
				mu.Unlock()
				if err := d.Ack(ctx); err != nil {
					readerDone <- err
					return
				}
			}
		}
		readerDone <- nil
	}()

	c := brokertest.Consume(t, ev.b, spec)
	brokers := []*natsbroker.Broker{successor, ev.b}
	for round := range 20 {
		consumers <- c
		from := count()
		if !brokertest.Poll(func() bool { return count() >= from+20 }) {
			t.Fatalf("round %d: messages stopped flowing (%d received)", round, count())
		}
		c, _ = handOver(t, c, brokers[round%2], spec, 1<<20, nil)
	}
	consumers <- c
	close(stop)
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	if !brokertest.Poll(func() bool { return count() == published }) {
		t.Errorf("%d of %d messages received; the rest wait for the ack wait", count(), published)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	close(consumers)
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for body, n := range got {
		if n != 1 {
			t.Errorf("%s received %d times", body, n)
		}
	}
	if redelivered != 0 {
		t.Errorf("%d deliveries came redelivered; hand-overs should move them as first deliveries", redelivered)
	}
}

// handOver hands c over as a hot upgrade does: Keep, Pause, paused (if
// not nil: what happens while it is paused), Close, Kept (at most limit
// bytes), and a Consume of spec with that carry on successor, which it
// returns with the carry.
func handOver(t testing.TB, c broker.Consumer, successor broker.Broker, spec broker.ConsumerSpec, limit int, paused func()) (broker.Consumer, []byte) {
	t.Helper()
	ctx := brokertest.Ctx(t)
	k, ok := c.(broker.Keeper)
	if !ok {
		t.Fatal("a NATS consumer is not a broker.Keeper")
	}
	k.Keep()
	if err := c.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if paused != nil {
		paused()
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	kept, err := k.Kept(ctx, limit)
	if err != nil {
		t.Fatal(err)
	}
	spec.Carry = kept
	return brokertest.Consume(t, successor, spec), kept
}
