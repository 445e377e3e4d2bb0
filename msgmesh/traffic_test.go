package msgmesh_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// TestTrafficReportsReachControlPlane: two msgmesh processes of app
// "orders" register themselves at a real control plane and report their
// traffic with their lease renewals. A is drained (weight 0): what it
// takes from the broker goes to B. After N messages published and
// consumed, the control plane's traffic endpoint counts them: at least N
// taken from the broker and delivered and acked in all, A forwarded some
// and B took exactly those from its sibling; the topology names the topic
// with its cluster, its producer and its consumer group. Counts only,
// nothing timed.
func TestTrafficReportsReachControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	// A 3 s lease: reports every second.
	cpURL, _ := controlPlaneAt(t, t.TempDir(), "127.0.0.1:0", func(o *ctrlplane.Options) { o.LeaseTTL = 3 * time.Second })
	ctx := context.Background()
	op, created, cfgPath := ordersAt(t, cpURL)

	type node struct{ mesh, http, fwd string }
	var nodes []node
	got := sidecartest.NewTally()
	for i := range 2 {
		n := node{mesh: freePort(t), http: freePort(t), fwd: freePort(t)}
		p := sidecartest.StartProcEnv(t, []string{"MSGMESH_APP_CREDENTIAL=" + created.Credential}, bin,
			"--data-dir", t.TempDir(), "--listen", n.mesh, "--http", n.http, "--config", cfgPath,
			"--ctrlplane", cpURL, "--app", "orders", "--forward-listen", n.fwd, "--log-level", "warn")
		sidecartest.WaitHealthy(t, p, n.http)
		if status, body := sidecartest.Register(t, n.http, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
			t.Fatalf("register: %d %s", status, body)
		}
		subscribe(t, sidecartest.Dial(t, n.mesh), "g1", fmt.Sprint("node", i), got)
		nodes = append(nodes, n)
	}
	a, b := nodes[0], nodes[1]
	sidecartest.WaitFor(t, 30*time.Second, "both sidecars to register themselves", func() bool {
		ins, err := op.Instances(ctx, "orders")
		return err == nil && len(ins) == 2
	})
	if _, err := op.SetWeight(ctx, "orders", a.fwd, 0); err != nil {
		t.Fatal(err)
	}
	sidecartest.WaitFor(t, 30*time.Second, "A to see weight 0", func() bool { return statsAt(t, a.http)["weight"] == 0 })

	const n = 300
	sidecartest.PublishN(t, sidecartest.Dial(t, a.mesh), topic, "m", n, 64)
	sidecartest.WaitFor(t, 60*time.Second, "every message", func() bool { return got.Distinct() >= n })

	var tr api.AppTraffic
	byID := func(id string) api.InstanceTraffic {
		for _, in := range tr.Instances {
			if in.ID == id {
				return in
			}
		}
		return api.InstanceTraffic{}
	}
	// The counters reach the control plane with the next renewals.
	sidecartest.WaitFor(t, 60*time.Second, "the control plane to count the traffic", func() bool {
		if tr, err = op.Traffic(ctx, "orders"); err != nil {
			t.Fatal(err)
		}
		ia, ib := byID(a.fwd), byID(b.fwd)
		return ia.Totals.FromBroker+ib.Totals.FromBroker >= n && ia.Totals.Acked+ib.Totals.Acked >= n &&
			ia.Totals.Forwarded > 0 && ib.Totals.FromSiblings == ia.Totals.Forwarded
	})
	ia, ib := byID(a.fwd), byID(b.fwd)
	t.Logf("A: %+v weight %d; B: %+v weight %d", ia.Totals, ia.Weight, ib.Totals, ib.Weight)
	if ia.Weight != 0 || ib.Weight != 100 || ia.State != api.StateOnline || ia.Boot == "" || ib.Boot == ia.Boot {
		t.Fatalf("instances: A %+v, B %+v", ia, ib)
	}
	if d := ia.Totals.Delivered + ib.Totals.Delivered; d < n {
		t.Fatalf("delivered %d in all, want at least %d", d, n)
	}
	if pub := ia.Totals.Published; pub < n {
		t.Fatalf("A published %d, want at least %d", pub, n)
	}
	// The topology: the topic on the cluster "nats", produced by orders
	// and consumed by its group g1, on both instances.
	i := slices.IndexFunc(tr.Topology, func(v api.TopicView) bool { return v.Topic == topic })
	if i < 0 {
		t.Fatalf("no topic %s in the topology %+v", topic, tr.Topology)
	}
	tv := tr.Topology[i]
	if tv.Cluster != "nats" || !slices.Equal(tv.Producers, []string{"orders"}) || len(tv.Consumers) != 1 ||
		tv.Consumers[0].App != "orders" || tv.Consumers[0].Group != "g1" || len(tv.Instances) != 2 {
		t.Fatalf("topic %s: %+v", topic, tv)
	}
	// NATS says the group's lag; every message was acked, so once a
	// renewal after the last ack is in, it is 0.
	sidecartest.WaitFor(t, 30*time.Second, "the reported lag of g1 to be 0", func() bool {
		tr, err := op.Traffic(t.Context(), "orders")
		if err != nil {
			return false
		}
		for _, v := range tr.Topology {
			if v.Topic == topic && len(v.Consumers) == 1 && v.Consumers[0].Lag != nil && *v.Consumers[0].Lag == 0 {
				return true
			}
		}
		return false
	})
}

// TestStatsCounters: the counters a sidecar reports to the control plane
// count what happened. Two messages, one nacked once: 2 published, 3
// taken from the broker and delivered, 2 acked, 1 nacked, nothing in
// flight at the end, no error.
func TestStatsCounters(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	var mu sync.Mutex
	seen := map[string]int{}
	if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		mu.Lock()
		seen[string(d.Body)]++
		n := seen[string(d.Body)]
		mu.Unlock()
		if string(d.Body) == "flaky" && n == 1 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pub := e.dial()
	for _, body := range []string{"flaky", "fine"} {
		if _, err := pub.Publish(context.Background(), &client.Message{Topic: topic, Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	sidecartest.WaitFor(t, 60*time.Second, "two acks, one nack, nothing in flight", func() bool {
		st := e.sc.Stats()
		return st.Acked == 2 && st.Nacked == 1 && st.InFlight == 0
	})
	st := e.sc.Stats()
	if st.Published != 2 || st.FromBroker != 3 || st.Delivered != 3 || st.Kept() != 3 || st.Errors != 0 || st.TimedOut != 0 || st.Forwarded != 0 {
		t.Fatalf("counters: %+v", st)
	}
}

// ConsumerLag reports, for NATS upstream consumers, the messages their
// group has not acked: 0 once an app acked everything, then what is
// published while no app of the group is connected.
func TestConsumerLag(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	sub := e.dial()
	var got atomic.Int64
	if _, err := sub.Subscribe(context.Background(), "g1", topic, func(context.Context, *client.Delivery) error {
		got.Add(1)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pub := e.dial()
	publish := func(n int) {
		for i := range n {
			if _, err := pub.Publish(context.Background(), &client.Message{Topic: topic, Body: []byte{byte(i)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	lagOf := func() (int64, bool) {
		for _, l := range e.sc.ConsumerLag(t.Context()) {
			if l.Group == "g1" && l.Topic == topic {
				return l.Lag, true
			}
		}
		return 0, false
	}
	publish(3)
	sidecartest.WaitFor(t, 30*time.Second, "the app to ack all three and the lag to be 0", func() bool {
		n, ok := lagOf()
		return got.Load() == 3 && ok && n == 0
	})
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	publish(5)
	sidecartest.WaitFor(t, 30*time.Second, "a lag of 5 with no app connected", func() bool {
		n, ok := lagOf()
		return ok && n == 5
	})
}
