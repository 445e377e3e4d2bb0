package msgmesh_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/topology"
)

// countingDialer counts the connections an SDK client opens, so a test can
// tell that it never had to reconnect.
type countingDialer struct{ n atomic.Int32 }

func (d *countingDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", addr)
}

// traffic publishes and consumes through a sidecar until stopped, counting
// what was acknowledged and what was consumed.
type traffic struct {
	pubDial, subDial countingDialer
	consumed         *tally
	mu               sync.Mutex
	acked            map[string]bool
	stop             chan struct{}
	done             sync.WaitGroup
}

func startTraffic(t *testing.T, addr, group string) *traffic {
	tr := &traffic{consumed: newTally(), acked: map[string]bool{}, stop: make(chan struct{})}
	sub := dialAt(t, addr, client.WithDialer(tr.subDial.dial))
	subscribe(t, sub, group, "sub", tr.consumed)
	pub := dialAt(t, addr, client.WithDialer(tr.pubDial.dial))
	for w := 0; w < 4; w++ {
		tr.done.Add(1)
		go func() {
			defer tr.done.Done()
			for i := 0; ; i++ {
				select {
				case <-tr.stop:
					return
				default:
				}
				body := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: []byte(body)})
				cancel()
				if err == nil {
					tr.mu.Lock()
					tr.acked[body] = true
					tr.mu.Unlock()
				}
			}
		}()
	}
	return tr
}

func (tr *traffic) ackedCount() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.acked)
}

// finish stops publishing and waits until every acknowledged message was
// consumed; it fails on loss, on a duplicate, and on a reconnect.
func (tr *traffic) finish(t *testing.T) {
	t.Helper()
	close(tr.stop)
	tr.done.Wait()
	waitFor(t, 60*time.Second, "every acknowledged message to be consumed", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		tr.consumed.mu.Lock()
		defer tr.consumed.mu.Unlock()
		for b := range tr.acked {
			if tr.consumed.bodies[b] == 0 {
				return false
			}
		}
		return true
	})
	tr.consumed.mu.Lock()
	defer tr.consumed.mu.Unlock()
	for b, n := range tr.consumed.bodies {
		if n > 1 {
			t.Errorf("%s delivered %d times", b, n)
		}
	}
	if p, s := tr.pubDial.n.Load(), tr.subDial.n.Load(); p != 1 || s != 1 {
		t.Errorf("clients dialled %d (publisher) and %d (subscriber) times; a connection broke", p, s)
	}
	t.Logf("%d acknowledged, %d consumed", len(tr.acked), tr.consumed.total)
}

// TestHandoffInProcess: a sidecar hands its listeners and live app
// connections to a successor on the same data directory while traffic
// runs, three times; no connection breaks, nothing is lost or doubled.
func TestHandoffInProcess(t *testing.T) {
	c := natsCluster(t)
	dataDir := t.TempDir()
	start := func(inherit *msgmesh.HandoffState) *msgmesh.Sidecar { return startOn(t, c, dataDir, inherit) }
	sc := start(nil)
	addr := sc.Addr().String()
	if status, body := registerAt(t, sc.HTTPAddr().String(), "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != 201 {
		t.Fatalf("register: %d %s", status, body)
	}
	tr := startTraffic(t, addr, "g1")
	for round := 0; round < 3; round++ {
		before := tr.ackedCount()
		waitFor(t, 30*time.Second, "traffic to flow", func() bool { return tr.ackedCount() > before+200 })
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
	tr.finish(t)
}

// startOn starts a sidecar on cluster c and dataDir, adopting inherit when
// it is set, with tweak applied to its config; it stops in t.Cleanup.
func startOn(t *testing.T, c topology.Cluster, dataDir string, inherit *msgmesh.HandoffState, tweak ...func(*msgmesh.Config)) *msgmesh.Sidecar {
	t.Helper()
	b, err := brokers.Open(context.Background(), c, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	cfg := msgmesh.Config{DataDir: dataDir, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Broker: b, Logger: testLogger(), Inherit: inherit}
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
	c := natsCluster(t)
	dataDir := t.TempDir()
	sc := startOn(t, c, dataDir, nil)
	if status, body := registerAt(t, sc.HTTPAddr().String(), "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != 201 {
		t.Fatalf("register: %d %s", status, body)
	}
	const held = 16
	var dials countingDialer
	sub := dialAt(t, sc.Addr().String(), client.WithDialer(dials.dial))
	release := make(chan struct{})
	got := newTally()
	var redelivered atomic.Int32
	if _, err := sub.Subscribe(context.Background(), "g1", topic, func(ctx context.Context, d *client.Delivery) error {
		got.add("sub", string(d.Body))
		if d.Redelivered > 0 {
			redelivered.Add(1)
		}
		<-release
		return nil
	}, client.WithConcurrency(held)); err != nil {
		t.Fatal(err)
	}
	pub := dialAt(t, sc.Addr().String())
	publishN(t, pub, topic, "held-", held, held)
	waitFor(t, 30*time.Second, "every message to be held by the app", func() bool { return got.count() == held })

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
	waitFor(t, 30*time.Second, "JetStream to see every held delivery acked", func() bool {
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
	if got.count() != held || got.distinct() != held || redelivered.Load() != 0 {
		t.Fatalf("app saw %d deliveries (%d distinct, %d redelivered), want %d once each", got.count(), got.distinct(), redelivered.Load(), held)
	}
	if d := dials.n.Load(); d != 1 {
		t.Errorf("the subscriber dialled %d times; its connection broke", d)
	}
	if st := sc.Stats(); st.Acked < held {
		t.Errorf("successor stats: %d acked, want at least %d", st.Acked, held)
	}
}
