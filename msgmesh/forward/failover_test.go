package forward

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// peerDown reports whether the breaker of the sibling at addr is open.
func (f *Forwarder) peerDown(addr string) bool {
	f.mu.Lock()
	p := f.peers[addr]
	f.mu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

// A sibling whose path is cut silently (no FIN, no RST) while it holds
// taken deliveries and more are being forwarded: the forward under way fails
// over after the take timeout, the held ones go back to the broker once,
// the sibling is refused at once while the cut lasts (without reaching the
// network), and once the path is back a probe reconnects before any
// Forward asks. Every delivery is
// accounted for exactly once: forwarded and settled, or given back to the
// caller untouched.
func TestSilentCutFailsOver(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")
	r := startRelay(t, sib.addr)
	var lostSilent, lostOther atomic.Int64
	f := newForwarder(t, p, func(c *ClientConfig) {
		c.TakeTimeout = scaled(500 * time.Millisecond)
		c.DialTimeout = scaled(500 * time.Millisecond)
		c.OnLost = func(_, _, _ string, err error) {
			if errors.Is(err, ErrConnLost) && errors.Is(err, ErrSilent) {
				lostSilent.Add(1)
			} else {
				lostOther.Add(1)
			}
		}
	})
	ctx := ctxTimeout(t, 60*time.Second)
	var all []*testDelivery
	local := map[string]bool{} // deliveries Forward gave back to the caller
	forward := func(i int) error {
		d := newDelivery(i, []byte("cut"))
		all = append(all, d)
		err := f.Forward(ctx, r.Addr(), "g", "t", d)
		if err != nil {
			d.untouched(t)
			local[d.id] = true
		}
		return err
	}

	// Before the cut: 20 forwarded and acked, 10 taken and held by the app.
	for i := range 20 {
		if err := forward(i); err != nil {
			t.Fatalf("Forward %d before the cut: %v", i, err)
		}
		tk := recvWithin(t, app.got, 10*time.Second, "a delivery before the cut")
		_ = tk.d.Ack(context.Background())
	}
	const held = 10
	var holding []taken
	for i := range held {
		if err := forward(100 + i); err != nil {
			t.Fatalf("Forward %d before the cut: %v", i, err)
		}
		holding = append(holding, recvWithin(t, app.got, 10*time.Second, "a held delivery"))
	}
	callsAtCut := app.calls.Load()

	r.Cut()
	start := time.Now()
	err := forward(200)
	t.Logf("the first Forward into the cut failed over after %v", time.Since(start))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrSilent) {
		t.Fatalf("Forward into the cut = %v, want ErrUnavailable and ErrSilent", err)
	}
	if !f.peerDown(r.Addr()) {
		t.Fatal("the silent sibling is not marked down")
	}
	// The held deliveries went back to the broker, each exactly once.
	for _, d := range all[20 : 20+held] {
		recvWithin(t, d.settled, 10*time.Second, "the hand-back of "+d.id)
	}
	// While the path stays cut every Forward is refused at once: none
	// reaches the network, so the sibling's app can get none of them even
	// after the path is back.
	for i := range 200 {
		if err := forward(300 + i); !errors.Is(err, ErrSiblingDown) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Forward %d during the cut = %v, want ErrSiblingDown", i, err)
		}
	}

	r.Heal()
	// The app answers what it held: the forwarder has handed those back, so
	// the answers change nothing there.
	for _, tk := range holding {
		_ = tk.d.Ack(context.Background())
	}
	// A probe of the breaker's own reconnects, with no Forward asking:
	// the first Forward after it gets through.
	waitFor(t, 30*time.Second, "the breaker to close after the heal", func() bool { return !f.peerDown(r.Addr()) })
	if err := forward(1000); err != nil {
		t.Fatalf("the first Forward after the probe reconnected: %v", err)
	}
	tk := recvWithin(t, app.got, 10*time.Second, "the delivery after the heal")
	for tk.d.MessageID() != all[len(all)-1].id {
		// The DELIVER sent into the cut may reach the sibling late (the
		// duplicate docs/forwarding.md §4 allows); nothing else may.
		if tk.d.MessageID() != "msg-200" {
			t.Fatalf("the sibling's app got %s after the heal; only msg-200 (sent into the cut) or the new one may arrive", tk.d.MessageID())
		}
		_ = tk.d.Ack(context.Background())
		tk = recvWithin(t, app.got, 10*time.Second, "the delivery after the heal")
	}
	_ = tk.d.Ack(context.Background())
	if err := f.Drain(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}

	// Count every delivery: given back to the caller untouched, or settled
	// exactly once; the held ones by Nack(0) (the broker redelivers them:
	// the duplicates of a cut are the deliveries in flight at the cut).
	var acked, nacked int
	for _, d := range all {
		a, n, _ := d.counts()
		switch {
		case local[d.id]:
			if a+n != 0 {
				t.Errorf("%s was given back to the caller and also settled", d.id)
			}
		case a+n != 1:
			t.Errorf("%s: %d acks and %d nacks; want exactly one", d.id, a, n)
		case a == 1:
			acked++
		default:
			nacked++
		}
	}
	if acked != 21 || nacked != held {
		t.Errorf("%d acked and %d handed back; want 21 and %d", acked, nacked, held)
	}
	if got := lostSilent.Load(); got != held || lostOther.Load() != 0 {
		t.Errorf("OnLost heard %d silent losses and %d others; want %d and 0", got, lostOther.Load(), held)
	}
	// The sibling saw only what was sent before the cut, at most the one
	// DELIVER sent into it, and what came after the heal.
	if extra := app.calls.Load() - callsAtCut - 1; extra > 1 {
		t.Errorf("the sibling was offered %d deliveries from the cut; want at most 1", extra)
	}

}

// A sibling whose app is slow to take deliveries is alive: it answers
// heartbeats, so Forward waits (backpressure) instead of failing over.
func TestSlowTakeIsNotSilence(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	take := scaled(time.Second)
	app.during = func(ctx context.Context, _ taken) {
		// The app has no room for 2 take timeouts.
		select {
		case <-time.After(2 * take):
		case <-ctx.Done():
		}
	}
	sib := startSibling(t, p, app, "")
	f := newForwarder(t, p, func(c *ClientConfig) { c.TakeTimeout = take })
	d := newDelivery(1, nil)
	if err := f.Forward(ctxTimeout(t, 30*time.Second), sib.addr, "g", "t", d); err != nil {
		t.Fatalf("Forward to a slow but live sibling = %v, want it taken", err)
	}
	tk := recvWithin(t, app.got, 10*time.Second, "the delivery")
	_ = tk.d.Ack(context.Background())
	recvWithin(t, d.settled, 10*time.Second, "the ack")
	if a, n, _ := d.counts(); a != 1 || n != 0 {
		t.Errorf("%d acks, %d nacks; want the app's ack", a, n)
	}
	if f.peerDown(sib.addr) {
		t.Error("a slow sibling was marked down")
	}
}

// An idle connection whose path is cut is found by the next heartbeat going
// unanswered for the take timeout, long before the read deadline.
func TestIdleSilentCutFoundByHeartbeat(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")
	r := startRelay(t, sib.addr)
	f := newForwarder(t, p, func(c *ClientConfig) { c.TakeTimeout = scaled(500 * time.Millisecond) })
	f.hbEvery, f.dead = 50*time.Millisecond, time.Hour
	d := newDelivery(1, nil)
	if err := f.Forward(ctxTimeout(t, 10*time.Second), r.Addr(), "g", "t", d); err != nil {
		t.Fatal(err)
	}
	tk := recvWithin(t, app.got, 10*time.Second, "the delivery")
	_ = tk.d.Ack(context.Background())
	recvWithin(t, d.settled, 10*time.Second, "the ack")
	r.Cut()
	waitFor(t, 20*time.Second, "the idle sibling to be marked down", func() bool { return f.peerDown(r.Addr()) })
	d2 := newDelivery(2, nil)
	if err := f.Forward(ctxTimeout(t, 10*time.Second), r.Addr(), "g", "t", d2); !errors.Is(err, ErrSiblingDown) {
		t.Fatalf("Forward to a sibling marked down = %v, want ErrSiblingDown", err)
	}
	d2.untouched(t)
}
