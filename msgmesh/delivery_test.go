package msgmesh_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
)

const topic = "orders.created"

// TestFanOutAndSplit is docs/design.md flows 3–5 end to end: 10,000 messages
// published through the sidecar are consumed exactly once by each group;
// the three connections of group g1 split them, each message to exactly one
// connection; group g2 on one connection gets all of them too.
func TestFanOutAndSplit(t *testing.T) {
	const n = 10_000
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic, "g2:" + topic})

	g1, g2 := sidecartest.NewTally(), sidecartest.NewTally()
	for i := 0; i < 3; i++ {
		who := fmt.Sprintf("g1-conn%d", i)
		c := e.dial(client.WithApp("orders"))
		if _, err := c.Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
			g1.Add(who, string(d.Body))
			return nil
		}); err != nil {
			t.Fatalf("subscribe g1: %v", err)
		}
	}
	c2 := e.dial(client.WithApp("orders"))
	if _, err := c2.Subscribe(context.Background(), "g2", topic, func(_ context.Context, d *client.Delivery) error {
		g2.Add("g2", string(d.Body))
		return nil
	}); err != nil {
		t.Fatalf("subscribe g2: %v", err)
	}

	pub := e.dial(client.WithApp("orders"))
	sidecartest.PublishN(t, pub, topic, "m", n, 512)

	sidecartest.WaitFor(t, 60*time.Second, "both groups to receive every message", func() bool {
		return g1.Count() >= n && g2.Count() >= n
	})
	g1.ExactlyOnce(t, "m", n)
	g2.ExactlyOnce(t, "m", n)
	by := g1.By()
	for i := 0; i < 3; i++ {
		if got := by[fmt.Sprintf("g1-conn%d", i)]; got == 0 {
			t.Errorf("connection %d of g1 got no message; deliveries should spread: %v", i, by)
		}
	}
	t.Logf("g1 split over its connections: %v", by)
}

// TestNackRedelivers: a message the app nacks comes back, marked redelivered.
func TestNackRedelivers(t *testing.T) {
	const n = 50
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	var mu sync.Mutex
	seen := map[string]int{}
	redelivered := map[string]int{}
	c := e.dial()
	if _, err := c.Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		seen[string(d.Body)]++
		if seen[string(d.Body)] == 1 {
			return &client.RetryAfter{Delay: 10 * time.Millisecond, Err: errors.New("not yet")}
		}
		redelivered[string(d.Body)] = d.Redelivered
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sidecartest.PublishN(t, e.dial(), topic, "m", n, 16)
	sidecartest.WaitFor(t, 30*time.Second, "every nacked message to come back", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(redelivered) == n
	})
	mu.Lock()
	defer mu.Unlock()
	for body, r := range redelivered {
		if r < 1 {
			t.Errorf("%s: second delivery has Redelivered=%d, want >= 1", body, r)
		}
		if seen[body] != 2 {
			t.Errorf("%s delivered %d times, want 2 (one nack, one ack)", body, seen[body])
		}
	}
}

// TestDisconnectRedelivers: deliveries held by a connection that goes away
// unanswered are redelivered to another connection of the group.
func TestDisconnectRedelivers(t *testing.T) {
	const n = 200
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})

	// The hoarder takes deliveries and never answers them.
	hoarder := dialRaw(t, e.addr)
	hoarder.hello(mesh.Subscription{Group: "g1", Topic: topic, Mode: mesh.ModePush})
	sidecartest.PublishN(t, e.dial(), topic, "m", n, 64)
	held := 0
	for held < 10 {
		if f := hoarder.read(); f.Kind == mesh.KindDeliver {
			held++
		}
	}

	got := sidecartest.NewTally()
	c := e.dial()
	if _, err := c.Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		got.Add("survivor", string(d.Body))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_ = hoarder.c.Close()
	sidecartest.WaitFor(t, 30*time.Second, "the survivor to receive every message", func() bool { return got.Distinct() == n })
	if got.Count() != n {
		t.Fatalf("survivor got %d deliveries of %d messages; want each once", got.Count(), n)
	}
}

// TestPull: the same connection can pull instead of being pushed to, and a
// pull with nothing to give answers empty at its deadline.
func TestPull(t *testing.T) {
	const n = 300
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	c := e.dial()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	empty, err := c.Pull(ctx, "g1", topic, 10)
	cancel()
	if err != nil || len(empty) != 0 {
		t.Fatalf("pull on an empty topic: %d messages, err %v; want 0, nil", len(empty), err)
	}

	sidecartest.PublishN(t, c, topic, "m", n, 64)
	got := sidecartest.NewTally()
	deadline := time.Now().Add(sidecartest.Scaled(30 * time.Second))
	for got.Count() < n && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ds, err := c.Pull(ctx, "g1", topic, 64)
		cancel()
		if err != nil {
			t.Fatalf("pull: %v", err)
		}
		if len(ds) > 64 {
			t.Fatalf("pull of 64 returned %d", len(ds))
		}
		for _, d := range ds {
			got.Add("puller", string(d.Body))
			if err := d.Ack(context.Background()); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
	}
	got.ExactlyOnce(t, "m", n)
}

// TestBackpressure: with a connection that holds every delivery, the
// sidecar stops at the in-flight bound instead of buffering.
func TestBackpressure(t *testing.T) {
	const limit = 8
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	raw := dialRaw(t, e.addr)
	if f := raw.request(mesh.KindHello, &mesh.Hello{App: sidecartest.App, Client: "slow", MaxInflight: limit}); f.Kind != mesh.KindOK {
		t.Fatalf("HELLO: %s", f.Kind)
	}
	if f := raw.request(mesh.KindDeclare, &mesh.Declare{Subs: []mesh.Subscription{{Group: "g1", Topic: topic, Mode: mesh.ModePush}}}); f.Kind != mesh.KindOK {
		t.Fatalf("DECLARE: %s", f.Kind)
	}
	sidecartest.PublishN(t, e.dial(), topic, "m", 100, 32)
	var ids []uint64
	for len(ids) < limit {
		if f := raw.read(); f.Kind == mesh.KindDeliver {
			ids = append(ids, f.ID)
		}
	}
	// No ninth delivery may come while eight are unanswered: a heartbeat
	// round trip proves the sidecar had its chance to send one.
	for i := 0; i < 5; i++ {
		raw.ids++
		raw.send(mesh.KindHeartbeat, 0, raw.ids, nil)
		for {
			f := raw.read()
			if f.Kind == mesh.KindDeliver {
				t.Fatalf("delivery beyond the in-flight bound of %d", limit)
			}
			if f.Kind == mesh.KindHeartbeat && f.IsResponse() {
				break
			}
		}
	}
	// Answering one frees exactly one slot.
	raw.send(mesh.KindAck, mesh.FlagResponse, ids[0], nil)
	for {
		if f := raw.read(); f.Kind == mesh.KindDeliver {
			break
		}
	}
}

// TestDeliveryTimeout: a delivery nobody answers goes back to the broker
// and is delivered again.
func TestDeliveryTimeout(t *testing.T) {
	e := newEnv(t, func(c *msgmesh.Config) { c.DeliveryTimeout = 300 * time.Millisecond })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	raw := dialRaw(t, e.addr)
	raw.hello(mesh.Subscription{Group: "g1", Topic: topic, Mode: mesh.ModePush})
	sidecartest.PublishN(t, e.dial(), topic, "m", 1, 1)
	var first, second mesh.Message
	for _, m := range []*mesh.Message{&first, &second} {
		for {
			f := raw.read()
			if f.Kind == mesh.KindDeliver {
				if err := m.Decode(f.Payload); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
	}
	if first.MessageID != second.MessageID || second.Redelivered < 1 || first.DeliveryID == second.DeliveryID {
		t.Fatalf("want the same message redelivered under a new delivery id: first %+v, second %+v", first, second)
	}
	// A late answer to the timed-out delivery is ignored; the connection stays usable.
	raw.send(mesh.KindAck, mesh.FlagResponse, first.DeliveryID, nil)
	if f := raw.request(mesh.KindHeartbeat, nil); f.Kind != mesh.KindHeartbeat {
		t.Fatalf("heartbeat answered %s", f.Kind)
	}
}

// TestIdleGroupDoesNotStarveAnother: one connection with room for a single
// delivery serves two groups; the idle group must not hold that room while
// the other group has messages waiting.
func TestIdleGroupDoesNotStarveAnother(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:busy.topic"}, []string{"g1:idle.topic", "g2:busy.topic"})
	raw := dialRaw(t, e.addr)
	if f := raw.request(mesh.KindHello, &mesh.Hello{App: sidecartest.App, Client: "one-slot", MaxInflight: 1}); f.Kind != mesh.KindOK {
		t.Fatalf("HELLO: %s", f.Kind)
	}
	if f := raw.request(mesh.KindDeclare, &mesh.Declare{Subs: []mesh.Subscription{
		{Group: "g1", Topic: "idle.topic", Mode: mesh.ModePush},
		{Group: "g2", Topic: "busy.topic", Mode: mesh.ModePush},
	}}); f.Kind != mesh.KindOK {
		t.Fatalf("DECLARE: %s", f.Kind)
	}
	sidecartest.PublishN(t, e.dial(), "busy.topic", "m", 3, 3)
	for got := 0; got < 3; {
		f := raw.read()
		if f.Kind != mesh.KindDeliver {
			continue
		}
		var m mesh.Message
		if err := m.Decode(f.Payload); err != nil || m.Group != "g2" {
			t.Fatalf("delivery %+v, err %v; want group g2", m, err)
		}
		got++
		raw.send(mesh.KindAck, mesh.FlagResponse, f.ID, nil)
	}
}
