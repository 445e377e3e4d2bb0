package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/ctrlplane/store/etcdtest"
)

// backend opens a fresh, empty store of one kind.
type backend struct {
	name string
	open func(t *testing.T) (store.Store, func(t *testing.T) store.Store) // the store, and how to open a second handle on the same data
}

func backends() []backend {
	return []backend{
		{"bolt", func(t *testing.T) (store.Store, func(*testing.T) store.Store) {
			path := filepath.Join(t.TempDir(), store.BoltFile)
			s, err := store.OpenBolt(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s, nil // one process per bbolt file: no second handle
		}},
		{"etcd", func(t *testing.T) (store.Store, func(*testing.T) store.Store) {
			srv := etcdtest.Start(t)
			open := func(t *testing.T) store.Store {
				s, err := store.Open(t.Context(), srv.Spec(""), "", nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				return s
			}
			return open(t), open
		}},
	}
}

func TestContract(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Run("CRUD", func(t *testing.T) { testCRUD(t, b) })
			t.Run("Watch", func(t *testing.T) { testWatch(t, b) })
			t.Run("WatchStops", func(t *testing.T) { testWatchStops(t, b) })
		})
	}
}

func testCRUD(t *testing.T, b backend) {
	s, _ := b.open(t)
	ctx := t.Context()
	if _, err := s.Get(ctx, "apps/a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
	}
	r1, err := s.Put(ctx, "apps/a", []byte("one"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "apps/a", []byte("again"), 0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("create of an existing key: %v, want ErrConflict", err)
	}
	r2, err := s.Put(ctx, "apps/b", []byte("two"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "global/x", []byte("g"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "apps/a", []byte("stale"), r1+1000); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("update with a wrong revision: %v, want ErrConflict", err)
	}
	r3, err := s.Put(ctx, "apps/a", []byte("uno"), r1)
	if err != nil {
		t.Fatal(err)
	}
	if !(r1 < r2 && r2 < r3) {
		t.Fatalf("revisions %d, %d, %d do not grow", r1, r2, r3)
	}
	e, err := s.Get(ctx, "apps/a")
	if err != nil || string(e.Value) != "uno" || e.ModRev != r3 || e.Key != "apps/a" {
		t.Fatalf("Get = %+v, %v; want uno at %d", e, err, r3)
	}
	list, err := s.List(ctx, "apps/")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Key != "apps/a" || list[1].Key != "apps/b" || string(list[1].Value) != "two" || list[1].ModRev != r2 {
		t.Fatalf("List(apps/) = %+v", list)
	}
	if none, err := s.List(ctx, "nothing/"); err != nil || none == nil || len(none) != 0 {
		t.Fatalf("List of an empty prefix = %#v, %v; want an empty, non-nil slice", none, err)
	}

	if _, err := s.Delete(ctx, "apps/zz", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if _, err := s.Delete(ctx, "apps/a", r1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Delete with a stale revision: %v", err)
	}
	r4, err := s.Delete(ctx, "apps/a", r3)
	if err != nil || r4 <= r3 {
		t.Fatalf("Delete = %d, %v (after %d)", r4, err, r3)
	}
	if _, err := s.Get(ctx, "apps/a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	// A deleted key can be created again, with a newer revision.
	if r5, err := s.Put(ctx, "apps/a", []byte("new"), 0); err != nil || r5 <= r4 {
		t.Fatalf("re-create = %d, %v (after %d)", r5, err, r4)
	}
}

func testWatch(t *testing.T, b backend) {
	s, _ := b.open(t)
	ctx := t.Context()
	ch, err := s.Watch(ctx, "apps/")
	if err != nil {
		t.Fatal(err)
	}
	r1, err := s.Put(ctx, "apps/a", []byte("1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "other/x", []byte("not watched"), 0); err != nil {
		t.Fatal(err)
	}
	r2, err := s.Put(ctx, "apps/a", []byte("2"), r1)
	if err != nil {
		t.Fatal(err)
	}
	r3, err := s.Delete(ctx, "apps/a", r2)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Event{{Key: "apps/a", ModRev: r1}, {Key: "apps/a", ModRev: r2}, {Key: "apps/a", ModRev: r3, Deleted: true}}
	for i, w := range want {
		got := recvEvent(t, ch)
		if got != w {
			t.Fatalf("event %d = %+v, want %+v", i, got, w)
		}
	}
}

func testWatchStops(t *testing.T, b backend) {
	s, _ := b.open(t)
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := s.Watch(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	drainUntilClosed(t, ch, "the watch after its context was cancelled")

	ch2, err := s.Watch(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	drainUntilClosed(t, ch2, "the watch after Close")
	if _, err := s.Watch(t.Context(), ""); err == nil {
		t.Fatal("Watch after Close succeeded")
	}
	if _, err := s.Get(t.Context(), "k"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestEtcdReplicas: two handles on one etcd cluster, as two ctrlplane
// replicas have. Writes through one are seen by the other's watch, their
// revisions interleave monotonically, and compare-and-swap holds across
// them.
func TestEtcdReplicas(t *testing.T) {
	_, open := backends()[1].open(t)
	a, b := open(t), open(t)
	ctx := t.Context()
	chB, err := b.Watch(ctx, "apps/")
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	var prev uint64
	for i := range 10 {
		s := a
		if i%2 == 1 {
			s = b
		}
		rev, err := s.Put(ctx, "apps/x", fmt.Appendf(nil, "%d", i), prev)
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if rev <= last {
			t.Fatalf("write %d: revision %d after %d", i, rev, last)
		}
		ev := recvEvent(t, chB)
		if ev.ModRev != rev || ev.Key != "apps/x" {
			t.Fatalf("replica B saw %+v, want apps/x at %d", ev, rev)
		}
		last, prev = rev, rev
	}
	// B did not read A's last write: its stale revision conflicts.
	if _, err := b.Put(ctx, "apps/x", []byte("stale"), prev-1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale write through B: %v, want ErrConflict", err)
	}
}

func TestBoltReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", store.BoltFile)
	s, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	r1, err := s.Put(t.Context(), "k", []byte("v"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.OpenBolt(path); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	e, err := s2.Get(t.Context(), "k")
	if err != nil || string(e.Value) != "v" || e.ModRev != r1 {
		t.Fatalf("after reopen Get = %+v, %v", e, err)
	}
	r2, err := s2.Put(t.Context(), "k2", nil, 0)
	if err != nil || r2 <= r1 {
		t.Fatalf("revision after reopen = %d, %v; want > %d", r2, err, r1)
	}
}

// TestBoltWatchOverflow: a watcher that does not read is never waited
// for; its backlog becomes a Reset and the events after it.
func TestBoltWatchOverflow(t *testing.T) {
	s, err := store.OpenBolt(filepath.Join(t.TempDir(), store.BoltFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ch, err := s.Watch(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	var last uint64
	for i := range n {
		if last, err = s.Put(t.Context(), fmt.Sprintf("k%d", i), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	sawReset := false
	for {
		ev := recvEvent(t, ch)
		sawReset = sawReset || ev.Reset
		if ev.ModRev == last {
			break
		}
	}
	if !sawReset {
		t.Fatalf("%d unread events and no Reset", n)
	}
}

func TestParseEtcdSpec(t *testing.T) {
	for _, c := range []struct {
		spec      string
		endpoints string
		prefix    string
		bad       bool
	}{
		{"etcd://127.0.0.1:2379", "127.0.0.1:2379", store.DefaultEtcdPrefix, false},
		{"etcd://a:2379,b:2380", "a:2379,b:2380", store.DefaultEtcdPrefix, false},
		{"etcd://a:2379/team/cp", "a:2379", "/team/cp/", false},
		{"etcd://a:2379/", "a:2379", store.DefaultEtcdPrefix, false},
		{"etcd://[::1]:2379", "[::1]:2379", store.DefaultEtcdPrefix, false},
		{"etcd://", "", "", true},
		{"etcd://a", "", "", true},
		{"etcd://a:2379,", "", "", true},
		{"etcd://user@a:2379", "", "", true},
		{"http://a:2379", "", "", true},
	} {
		eps, prefix, err := store.ParseEtcdSpec(c.spec)
		if c.bad {
			if !errors.Is(err, store.ErrBadSpec) {
				t.Errorf("%q: err %v, want ErrBadSpec", c.spec, err)
			}
			continue
		}
		if err != nil || strings.Join(eps, ",") != c.endpoints || prefix != c.prefix {
			t.Errorf("%q = %v, %q, %v; want %s, %q", c.spec, eps, prefix, err, c.endpoints, c.prefix)
		}
	}
}

func TestOpenSpecs(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(t.Context(), "", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	for _, spec := range []string{"mysql://x", "etcd://nohost"} {
		if _, err := store.Open(t.Context(), spec, dir, nil); !errors.Is(err, store.ErrBadSpec) {
			t.Errorf("Open(%q): %v, want ErrBadSpec", spec, err)
		}
	}
	if _, err := store.Open(t.Context(), "bolt", "", nil); !errors.Is(err, store.ErrBadSpec) {
		t.Errorf("bolt without a data dir: %v", err)
	}
	// Nothing listens on this port: OpenEtcd gives up after DialTimeout.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := store.OpenEtcd(ctx, store.EtcdConfig{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: 300 * time.Millisecond}); err == nil {
		t.Fatal("OpenEtcd of a closed port succeeded")
	}
}

func recvEvent(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	panic("unreachable")
}

func drainUntilClosed(t *testing.T, ch <-chan store.Event, what string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("%s did not close within 10s", what)
		}
	}
}
