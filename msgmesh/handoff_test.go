package msgmesh_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/topology"
)

// TestHandoffInProcess: a sidecar hands its listeners and live app
// connections to a successor on the same data directory while traffic
// runs, three times; no connection breaks, nothing is lost or doubled.
func TestHandoffInProcess(t *testing.T) {
	c := sidecartest.NATSCluster(t)
	dataDir := t.TempDir()
	start := func(inherit *msgmesh.HandoffState) *msgmesh.Sidecar { return startOn(t, c, dataDir, inherit) }
	sc := start(nil)
	addr := sc.Addr().String()
	if status, body := sidecartest.Register(t, sc.HTTPAddr().String(), "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != 201 {
		t.Fatalf("register: %d %s", status, body)
	}
	tr := sidecartest.StartTraffic(t, addr, "g1", topic)
	for round := 0; round < 3; round++ {
		before := tr.AckedCount()
		sidecartest.WaitFor(t, 30*time.Second, "traffic to flow", func() bool { return tr.AckedCount() > before+200 })
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err := sc.Handoff(ctx)
		cancel()
		if err != nil {
			t.Fatalf("handoff %d: %v", round, err)
		}
		if len(st.Conns) != 2 {
			t.Errorf("handoff %d carried %d connections, want the 2 app connections", round, len(st.Conns))
		}
		sc = start(st)
		if got := sc.Addr().String(); got != addr {
			t.Fatalf("successor listens on %s, want the inherited %s", got, addr)
		}
	}
	tr.Finish(t)
}

// startOn starts a sidecar on cluster c and dataDir, adopting inherit when
// it is set, with tweak applied to its config; it stops in t.Cleanup.
func startOn(t *testing.T, c topology.Cluster, dataDir string, inherit *msgmesh.HandoffState, tweak ...func(*msgmesh.Config)) *msgmesh.Sidecar {
	t.Helper()
	b, err := brokers.Open(context.Background(), c, sidecartest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	cfg := msgmesh.Config{DataDir: dataDir, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Broker: b, Logger: sidecartest.Logger(), Inherit: inherit}
	for _, f := range tweak {
		f(&cfg)
	}
	sc, err := msgmesh.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Shutdown(context.Background()) })
	return sc
}

// TestHandoffMovesHeldDeliveries: an app holding deliveries unanswered
// does not hold up a hot upgrade on NATS: the handoff carries them with
// the connection (without waiting for the app), the successor settles the
// app's later acks, and JetStream redelivers none of them.
func TestHandoffMovesHeldDeliveries(t *testing.T) {
	c := sidecartest.NATSCluster(t)
	dataDir := t.TempDir()
	sc := startOn(t, c, dataDir, nil)
	if status, body := sidecartest.Register(t, sc.HTTPAddr().String(), "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != 201 {
		t.Fatalf("register: %d %s", status, body)
	}
	const held = 16
	var dials sidecartest.CountingDialer
	sub := sidecartest.Dial(t, sc.Addr().String(), client.WithDialer(dials.Dial))
	release := make(chan struct{})
	got := sidecartest.NewTally()
	var redelivered atomic.Int32
	if _, err := sub.Subscribe(context.Background(), "g1", topic, func(ctx context.Context, d *client.Delivery) error {
		got.Add("sub", string(d.Body))
		if d.Redelivered > 0 {
			redelivered.Add(1)
		}
		<-release
		return nil
	}, client.WithConcurrency(held)); err != nil {
		t.Fatal(err)
	}
	pub := sidecartest.Dial(t, sc.Addr().String())
	sidecartest.PublishN(t, pub, topic, "held-", held, held)
	sidecartest.WaitFor(t, 30*time.Second, "every message to be held by the app", func() bool { return got.Count() == held })

	// The app answers nothing yet: with nothing to wait for but the app,
	// the handoff must not wait for it (its ctx would end first).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	st, err := sc.Handoff(ctx)
	cancel()
	if err != nil {
		t.Fatalf("handoff: %v", err)
	}
	n := 0
	for _, cs := range st.Conns {
		n += len(cs.Held)
	}
	if n != held {
		t.Fatalf("handoff carried %d held deliveries, want %d", n, held)
	}
	sc = startOn(t, c, dataDir, st)
	close(release) // the app acks everything, on the moved connection

	js := operatorJS(t, c.Endpoints[0])
	sidecartest.WaitFor(t, 30*time.Second, "JetStream to see every held delivery acked", func() bool {
		st, err := js.Stream(context.Background(), "MESH_"+strings.ReplaceAll(topic, ".", "_"))
		if err != nil {
			return false
		}
		n := 0
		for ci := range st.ListConsumers(context.Background()).Info() {
			n += int(ci.NumPending) + ci.NumAckPending
		}
		return n == 0
	})
	if got.Count() != held || got.Distinct() != held || redelivered.Load() != 0 {
		t.Fatalf("app saw %d deliveries (%d distinct, %d redelivered), want %d once each", got.Count(), got.Distinct(), redelivered.Load(), held)
	}
	if d := dials.Count(); d != 1 {
		t.Errorf("the subscriber dialled %d times; its connection broke", d)
	}
	if st := sc.Stats(); st.Acked < held {
		t.Errorf("successor stats: %d acked, want at least %d", st.Acked, held)
	}
}
