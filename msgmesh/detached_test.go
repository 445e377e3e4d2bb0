package msgmesh_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
)

// TestPushSession: a push session (what the gRPC subscribe stream and HTTP
// push subscriptions are built on) gets deliveries within its in-flight
// bound, settles them by id (a nack comes again), hands back what it
// holds on Close (another consumer of the group gets it), and ends when
// the sidecar stops.
func TestPushSession(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	a := e.httpApp("orders", "")
	const n, window = 20, 4

	got := make(chan msgmesh.Delivery, window) // never blocks: push runs at most window times unanswered
	ps, err := e.sc.OpenPushSession("orders", "", "test", window, func(d msgmesh.Delivery) error {
		got <- d
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.Subscribe([]mesh.Subscription{{Group: "g2", Topic: topic}}); !errors.Is(err, msgmesh.ErrNotRegistered) {
		t.Fatalf("subscribe to an unregistered group: %v, want ErrNotRegistered", err)
	}
	if err := ps.Subscribe([]mesh.Subscription{{Group: "g1", Topic: topic}}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		a.publish(topic, fmt.Appendf(nil, "m%02d", i))
	}

	next := func() msgmesh.Delivery {
		t.Helper()
		select {
		case d := <-got:
			return d
		case <-time.After(sidecartest.Scaled(10 * time.Second)):
			t.Fatal("no delivery")
			return msgmesh.Delivery{}
		}
	}
	// The first delivery is nacked and must come again; all others are
	// acked.
	first := next()
	if !ps.Nack(first.ID(), 0) {
		t.Fatalf("nack %s: not in flight", first.ID())
	}
	if ps.Ack(first.ID()) {
		t.Fatal("a second answer to one delivery was taken")
	}
	seen := map[string]int{}
	for len(seen) < n {
		d := next()
		seen[string(d.Message().Body)]++
		if !ps.Ack(d.ID()) {
			t.Fatalf("ack %s: not in flight", d.ID())
		}
	}
	for body, c := range seen {
		if c != 1 {
			t.Errorf("%s delivered %d times after the first nack", body, c)
		}
	}

	// Hold the next ones unanswered (no more than the window comes), then
	// close: they go back to the broker and an HTTP pull of the same group
	// gets them.
	for i := range 2 * window {
		a.publish(topic, fmt.Appendf(nil, "h%02d", i))
	}
	held := map[string]bool{}
	for len(held) < window {
		held[string(next().Message().Body)] = true
	}
	select {
	case d := <-got:
		t.Fatalf("delivery %s beyond the in-flight bound %d", d.Message().Body, window)
	case <-time.After(sidecartest.Scaled(200 * time.Millisecond)):
	}
	ps.Close()
	select {
	case <-ps.Done():
	default:
		t.Fatal("Done open after Close")
	}
	pulled := map[string]bool{}
	for _, p := range a.pullUntil("g1", topic, 2*window) {
		pulled[p.body()] = true
		a.mustAnswer("ack", p.DeliveryID)
	}
	for body := range held {
		if !pulled[body] {
			t.Errorf("%s, held by the closed push session, was not delivered again", body)
		}
	}

	// A session open when the sidecar stops sees Done.
	ps2, err := e.sc.OpenPushSession("orders", "", "test", 0, func(msgmesh.Delivery) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(10*time.Second))
	defer cancel()
	if err := e.sc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ps2.Done():
	case <-time.After(sidecartest.Scaled(5 * time.Second)):
		t.Fatal("push session not ended by Shutdown")
	}
	ps2.Close()
	if _, err := e.sc.OpenPushSession("orders", "", "test", 0, func(msgmesh.Delivery) error { return nil }); !errors.Is(err, msgmesh.ErrShuttingDown) {
		t.Fatalf("open after Shutdown: %v, want ErrShuttingDown", err)
	}
}
