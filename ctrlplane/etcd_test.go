package ctrlplane_test

import (
	"slices"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/ctrlplane/store/etcdtest"
	"github.com/msgmesh/msgmesh/topology"
)

func openEtcd(t *testing.T, srv *etcdtest.Server) store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), srv.Spec("cp"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// TestEtcdReplicas: two control-plane replicas on one (real, embedded)
// etcd. A write through replica A reaches a watcher connected to replica
// B; versions grow whichever replica writes; when B dies the watcher
// fails over to A (its client has both URLs, B first) and keeps getting
// changes.
func TestEtcdReplicas(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := startCP(t, openEtcd(t, etcd), "")
	b := startCP(t, openEtcd(t, etcd), "")
	opA, opB := client(t, a.url, testToken), client(t, b.url, testToken)
	cred := mustCreate(t, opA, "orders", "10.0.0.1:7610", "10.0.0.2:7610")

	rec := newConfigs()
	w := watch(t, client(t, b.url+","+a.url, cred), "orders", rec)
	first := rec.waitFor(t, 10*time.Second, "the first config (through B)", func(api.AppConfig) bool { return true }).cfg
	waitUntil(t, 10*time.Second, "the watcher to wait on B", func() bool { return b.srv.LongPolls() == 1 })

	var delays []time.Duration
	version := first.Version
	// Alternate the replica that writes; the watcher stays on B.
	for i := range 10 {
		op := opA
		if i%2 == 1 {
			op = opB
		}
		start := time.Now()
		if _, err := op.SetWeight(t.Context(), "orders", "10.0.0.1:7610", i); err != nil {
			t.Fatal(err)
		}
		got := rec.waitFor(t, 10*time.Second, "the weight written through the other replica", weightIs("10.0.0.1:7610", i))
		delays = append(delays, got.at.Sub(start))
		if got.cfg.Version <= version {
			t.Fatalf("write %d: version %d, not above %d", i, got.cfg.Version, version)
		}
		version = got.cfg.Version
		waitUntil(t, 10*time.Second, "the watcher to wait on B", func() bool { return b.srv.LongPolls() == 1 })
	}
	// A change of the global topology through A reaches the app's watcher.
	topo := &topology.Topology{Clusters: []topology.Cluster{{Name: "m", Kind: topology.KindNATS, Endpoints: []string{"nats://x:4222"}}}}
	if _, err := opA.SetTopology(t.Context(), topo); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 10*time.Second, "the global topology", func(cfg api.AppConfig) bool { return cfg.Brokers != nil })

	// Replica B dies: its connections are cut.
	b.srv.Close()
	waitUntil(t, 10*time.Second, "the watcher to fail over to A", func() bool { return a.srv.LongPolls() == 1 })
	start := time.Now()
	if _, err := opA.SetWeight(t.Context(), "orders", "10.0.0.2:7610", 0); err != nil {
		t.Fatal(err)
	}
	got := rec.waitFor(t, 10*time.Second, "a change after the failover", weightIs("10.0.0.2:7610", 0))
	delays = append(delays, got.at.Sub(start))
	if s := w.Status(); !s.Connected {
		t.Fatalf("watcher status after failover: %+v", s)
	}
	slices.Sort(delays)
	t.Logf("etcd, write on one replica to a watcher on the other: p50 %v, max %v over %d changes", delays[len(delays)/2], delays[len(delays)-1], len(delays))
	if worst := delays[len(delays)-1]; worst > maxPropagation {
		t.Fatalf("a change took %v; the limit is %v", worst, maxPropagation)
	}
}
