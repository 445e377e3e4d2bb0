package ctrlplane_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/ctrlplane/store/etcdtest"
)

// countingStore is a real bbolt store that counts its Gets. It is not a
// mock: every call goes to the store.
type countingStore struct {
	store.Store
	gets atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, key string) (store.Entry, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, key)
}

// The long polls one change wakes share one read of the config: the store
// is read a bounded number of times, not three times per waiting poll
// (BenchmarkFleet in cmd/ctrlplane measures what that is worth with 1,000
// sidecars). Each still gets the config with its own credential.
func TestWokenPollsShareOneRead(t *testing.T) {
	st := &countingStore{Store: openBolt(t, t.TempDir())}
	c := startCP(t, st, "")
	op := client(t, c.url, testToken)
	cred := mustCreate(t, op, "orders", "10.0.0.1:7610")
	cfg, err := op.Config(t.Context(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	const polls = 40
	type result struct {
		cfg api.AppConfig
		err error
	}
	results := make(chan result, polls)
	for range polls {
		sidecar := client(t, c.url, cred) // each with its own connection
		go func() {
			got, _, err := sidecar.PollConfig(t.Context(), "orders", cfg.Version, 30*time.Second)
			results <- result{got, err}
		}()
	}
	waitUntil(t, 10*time.Second, "every poll to wait", func() bool { return c.srv.LongPolls() == polls })
	before := st.gets.Load()
	if _, err := op.SetWeight(t.Context(), "orders", "10.0.0.1:7610", 30); err != nil {
		t.Fatal(err)
	}
	for range polls {
		select {
		case r := <-results:
			if r.err != nil || !weightIs("10.0.0.1:7610", 30)(r.cfg) || r.cfg.Credential != cred {
				t.Fatalf("poll answered %+v, %v; want weight 30 and the app's credential", r.cfg, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a woken poll did not answer")
		}
	}
	// The weight change itself reads the app (and retries on a conflict);
	// the shared read is three Gets. Without sharing: 3 per poll, 120.
	if n := st.gets.Load() - before; n > 12 {
		t.Fatalf("%d store reads for one change seen by %d polls, want a shared read", n, polls)
	}
}

// A config read right after a write shows the write, on etcd too, whose
// watch (which feeds the hub that keys shared reads) lags behind writes:
// plain GETs and new long polls that would answer never take a shared
// read from before the request. Long polls are kept waiting so that
// shared reads exist to be (wrongly) taken.
func TestReadAfterWriteWithSharedReads(t *testing.T) {
	c := startCP(t, openEtcd(t, etcdtest.Start(t)), "")
	op := client(t, c.url, testToken)
	cred := mustCreate(t, op, "orders", "10.0.0.1:7610")
	sidecar := client(t, c.url, cred)
	for w := range 40 {
		weight := 1 + w%99
		if _, err := op.SetWeight(t.Context(), "orders", "10.0.0.1:7610", weight); err != nil {
			t.Fatal(err)
		}
		cfg, err := sidecar.Config(t.Context(), "orders")
		if err != nil {
			t.Fatal(err)
		}
		if !weightIs("10.0.0.1:7610", weight)(cfg) {
			t.Fatalf("change %d: a read right after setting weight %d shows %+v", w, weight, cfg.Instances)
		}
		// A new long poll from the version before: it must answer with
		// the new config, not park on or answer with an older one.
		got, changed, err := sidecar.PollConfig(t.Context(), "orders", cfg.Version-1, 10*time.Second)
		if err != nil || !changed || !weightIs("10.0.0.1:7610", weight)(got) {
			t.Fatalf("change %d: a poll after the version before answered %+v, %v, %v", w, got.Instances, changed, err)
		}
	}
}
