package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "registrations.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func mustPut(t *testing.T, s *Store, r Registration) Registration {
	t.Helper()
	got, err := s.Put(r)
	if err != nil {
		t.Fatalf("Put(%+v): %v", r, err)
	}
	return got
}

func mustList(t *testing.T, s *Store) []Registration {
	t.Helper()
	regs, err := s.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return regs
}

func TestStorePutGetListDelete(t *testing.T) {
	s, path := openTemp(t)

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode %v, want 0600", perm)
	}

	if regs := mustList(t, s); regs == nil || len(regs) != 0 {
		t.Fatalf("List of an empty store = %#v, want empty non-nil", regs)
	}

	in := Registration{App: "orders", Consume: []Binding{b("g2", "t"), b("g1", "t")}}
	before := time.Now()
	stored := mustPut(t, s, in)
	if stored.UpdatedAt.Before(before.Add(-time.Second)) || stored.UpdatedAt.Location() != time.UTC {
		t.Errorf("UpdatedAt = %v, want now in UTC", stored.UpdatedAt)
	}
	if want := []Binding{b("g1", "t"), b("g2", "t")}; !reflect.DeepEqual(stored.Consume, want) {
		t.Errorf("stored Consume = %v, want normalised %v", stored.Consume, want)
	}
	if want := []Binding{b("g2", "t"), b("g1", "t")}; !reflect.DeepEqual(in.Consume, want) {
		t.Errorf("Put reordered the caller's slice: %v", in.Consume)
	}

	got, err := s.Get("orders")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !reflect.DeepEqual(got, stored) {
		t.Errorf("Get = %+v, want %+v", got, stored)
	}

	mustPut(t, s, Registration{App: "billing", Produce: []Binding{b("p", "invoices")}})
	mustPut(t, s, Registration{App: "zeta", Consume: []Binding{b("g", "t")}})
	var apps []string
	for _, r := range mustList(t, s) {
		apps = append(apps, r.App)
	}
	if want := []string{"billing", "orders", "zeta"}; !slices.Equal(apps, want) {
		t.Errorf("List apps = %v, want %v", apps, want)
	}

	if err := s.Delete("orders"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get("orders"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := s.Delete("orders"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if _, err := s.Get("nobody"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"nobody"`) {
		t.Errorf("Get(nobody) = %v, want ErrNotFound naming the app", err)
	}
	if _, err := s.Get(""); !errors.Is(err, ErrNotFound) {
		t.Errorf(`Get("") = %v, want ErrNotFound`, err)
	}
}

func TestStorePutInvalid(t *testing.T) {
	s, _ := openTemp(t)
	_, err := s.Put(Registration{App: "a", Consume: []Binding{b("g", "bad topic")}})
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field != "consume[0].topic" {
		t.Fatalf("Put(invalid) = %v, want *ValidationError on consume[0].topic", err)
	}
	if regs := mustList(t, s); len(regs) != 0 {
		t.Fatalf("an invalid Put stored something: %+v", regs)
	}
}

func TestStorePutReplaces(t *testing.T) {
	s, _ := openTemp(t)
	first := mustPut(t, s, Registration{App: "a", Consume: []Binding{b("g1", "t1"), b("g1", "t2")}})
	second := mustPut(t, s, Registration{App: "a", Produce: []Binding{b("p", "t3")}})
	if second.UpdatedAt.Before(first.UpdatedAt) {
		t.Errorf("UpdatedAt went backwards: %v then %v", first.UpdatedAt, second.UpdatedAt)
	}
	regs := mustList(t, s)
	if len(regs) != 1 || !reflect.DeepEqual(regs[0], second) {
		t.Fatalf("List after replace = %+v, want only %+v", regs, second)
	}
	if regs[0].Consume != nil {
		t.Errorf("old consume bindings survived the replace: %v", regs[0].Consume)
	}
}

func TestStoreSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registrations.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, Registration{App: "gone", Consume: []Binding{b("g", "t")}})
	var want []Registration
	for _, r := range []Registration{
		{App: "b", Produce: []Binding{b("p", "x.y")}, Consume: []Binding{b("g", "z")}},
		{App: "a", Consume: []Binding{b("g1", "orders.created"), b("g0", "orders.created")}},
	} {
		want = append(want, mustPut(t, s, r))
	}
	slices.SortFunc(want, func(x, y Registration) int { return strings.Compare(x.App, y.App) })
	if err := s.Delete("gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2, err := Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if got := mustList(t, s2); !reflect.DeepEqual(got, want) {
		t.Fatalf("after reopen List = %+v\nwant %+v", got, want)
	}
}

func TestStoreClose(t *testing.T) {
	s, _ := openTemp(t)
	mustPut(t, s, Registration{App: "a", Consume: []Binding{b("g", "t")}})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Put(Registration{App: "a", Consume: []Binding{b("g", "t")}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Get("a"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	if err := s.Delete("a"); !errors.Is(err, ErrClosed) {
		t.Errorf("Delete after Close = %v, want ErrClosed", err)
	}
	if _, err := s.List(); !errors.Is(err, ErrClosed) {
		t.Errorf("List after Close = %v, want ErrClosed", err)
	}
}

func TestOpenLocked(t *testing.T) {
	s, path := openTemp(t)

	start := time.Now()
	s2, err := Open(path)
	elapsed := time.Since(start)
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("error %v does not wrap ErrLocked", err)
	}
	for _, want := range []string{path, "locked", "another msgmesh may be running on this data directory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if elapsed > lockTimeout+5*time.Second {
		t.Errorf("Open gave up after %v, want about %v", elapsed, lockTimeout)
	}

	// Once the holder closes, the file opens again.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(path)
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	s3.Close()
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()

	if _, err := Open(filepath.Join(dir, "missing", "registrations.db")); err == nil {
		t.Error("Open in a missing directory succeeded")
	}

	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, []byte(strings.Repeat("not a bbolt file\n", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(junk); err == nil || !strings.Contains(err.Error(), junk) {
		t.Errorf("Open of a non-bbolt file = %v, want an error naming the file", err)
	}

	future := filepath.Join(dir, "future.db")
	db, err := bolt.Open(future, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return meta.Put(keyFormat, []byte("99"))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(future); err == nil || !strings.Contains(err.Error(), `format "99"`) {
		t.Errorf("Open of a format-99 file = %v, want a format error", err)
	}
}

// TestStoreConcurrent runs Put, Delete, Get and List from 16 goroutines.
// Each goroutine owns some apps, whose final state is known, and all of
// them fight over one shared app, which must end up as one writer's
// registration or absent.
func TestStoreConcurrent(t *testing.T) {
	s, path := openTemp(t)
	const (
		workers = 16
		apps    = 4 // per worker
		rounds  = 4
	)
	owned := func(w, i int) string { return fmt.Sprintf("app-%02d-%d", w, i) }
	sharedFrom := func(w int) Registration {
		return Registration{App: "shared", Consume: []Binding{b(fmt.Sprintf("g%02d", w), "shared")}}
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				for i := range apps {
					reg := Registration{App: owned(w, i), Consume: []Binding{b("g", fmt.Sprintf("t%d", r))}}
					if _, err := s.Put(reg); err != nil {
						t.Errorf("Put(%s): %v", reg.App, err)
						return
					}
				}
				if _, err := s.Put(sharedFrom(w)); err != nil {
					t.Errorf("Put(shared): %v", err)
					return
				}
				if r == rounds-1 {
					for i := 1; i < apps; i += 2 {
						if err := s.Delete(owned(w, i)); err != nil {
							t.Errorf("Delete(%s): %v", owned(w, i), err)
							return
						}
					}
				}
				if w%4 == 0 {
					if err := s.Delete("shared"); err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("Delete(shared): %v", err)
						return
					}
				}
				if got, err := s.Get(owned(w, 0)); err != nil || got.Consume[0].Topic != fmt.Sprintf("t%d", r) {
					t.Errorf("Get(%s) = %+v, %v; want round %d's registration", owned(w, 0), got, err, r)
					return
				}
				regs, err := s.List()
				if err != nil {
					t.Errorf("List: %v", err)
					return
				}
				if !slices.IsSortedFunc(regs, func(x, y Registration) int { return strings.Compare(x.App, y.App) }) {
					t.Errorf("List not sorted by app")
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	check := func(s *Store) []Registration {
		t.Helper()
		regs := mustList(t, s)
		var names []string
		for _, r := range regs {
			if err := r.Validate(); err != nil {
				t.Errorf("stored registration %+v invalid: %v", r, err)
			}
			if r.App == "shared" {
				if len(r.Consume) != 1 || !strings.HasPrefix(r.Consume[0].Group, "g") || len(r.Produce) != 0 {
					t.Errorf("shared registration mixes writers: %+v", r)
				}
				continue
			}
			if len(r.Consume) != 1 || r.Consume[0] != b("g", fmt.Sprintf("t%d", rounds-1)) {
				t.Errorf("%s = %+v, want the last round's binding", r.App, r.Consume)
			}
			names = append(names, r.App)
		}
		var want []string
		for w := range workers {
			for i := 0; i < apps; i += 2 {
				want = append(want, owned(w, i))
			}
		}
		if !slices.Equal(names, want) {
			t.Errorf("apps = %v\nwant %v", names, want)
		}
		return regs
	}
	before := check(s)

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if after := check(s2); !reflect.DeepEqual(after, before) {
		t.Errorf("reopen changed the set:\n got %+v\nwant %+v", after, before)
	}
}

// TestStoreSecretHash: the secret hash is stored beside the registration,
// survives a reopen, is never part of the registration's JSON, and values
// written before the field existed read back without one.
func TestStoreSecretHash(t *testing.T) {
	s, path := openTemp(t)
	hash := sha256.Sum256([]byte("s3cret"))
	mustPut(t, s, Registration{App: "orders", Consume: []Binding{b("g1", "t")}, SecretHash: hash[:]})
	mustPut(t, s, Registration{App: "plain", Produce: []Binding{b("p", "t")}})

	if _, err := s.Put(Registration{App: "bad", Produce: []Binding{b("p", "t")}, SecretHash: []byte("short")}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Put with a 5-byte hash: %v, want ErrInvalid", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	got, err := s.Get("orders")
	if err != nil || !bytes.Equal(got.SecretHash, hash[:]) {
		t.Fatalf("after reopen: hash %x, %v; want %x", got.SecretHash, err, hash)
	}
	if got, _ := s.Get("plain"); got.SecretHash != nil {
		t.Fatalf("an app without a secret reads back with hash %x", got.SecretHash)
	}
	js, err := json.Marshal(got)
	if err != nil || strings.Contains(string(js), "secret") || strings.Contains(string(js), base64.StdEncoding.EncodeToString(hash[:])) {
		t.Fatalf("the registration's JSON shows the secret hash: %s (%v)", js, err)
	}

	// A value as a build before secrets wrote it.
	old := []byte(`{"app":"legacy","produce":[{"group":"p","topic":"t"}],"updated_at":"2026-01-02T03:04:05Z"}`)
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketRegistrations).Put([]byte("legacy"), old) }); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get("legacy"); err != nil || got.SecretHash != nil || got.App != "legacy" {
		t.Fatalf("legacy value: %+v, %v", got, err)
	}
}

// TestStorePutFuncDeleteFunc: the callbacks see the stored state with the
// secret hashes, their errors come back unchanged, and nothing is written
// or deleted when they refuse.
func TestStorePutFuncDeleteFunc(t *testing.T) {
	s, _ := openTemp(t)
	hash := sha256.Sum256([]byte("x"))
	mustPut(t, s, Registration{App: "a", Consume: []Binding{b("g", "t")}, SecretHash: hash[:]})
	refused := errors.New("refused by the caller")

	_, err := s.PutFunc(func(current []Registration) (Registration, error) {
		if len(current) != 1 || current[0].App != "a" || !bytes.Equal(current[0].SecretHash, hash[:]) {
			t.Errorf("PutFunc saw %+v", current)
		}
		return Registration{}, refused
	})
	if err != refused {
		t.Fatalf("PutFunc returned %v, want the callback's error unchanged", err)
	}
	if regs := mustList(t, s); len(regs) != 1 {
		t.Fatalf("a refused PutFunc wrote something: %+v", regs)
	}
	if err := s.DeleteFunc("a", func(cur Registration) error {
		if !bytes.Equal(cur.SecretHash, hash[:]) {
			t.Errorf("DeleteFunc saw hash %x", cur.SecretHash)
		}
		return refused
	}); err != refused {
		t.Fatalf("DeleteFunc returned %v, want the callback's error unchanged", err)
	}
	if _, err := s.Get("a"); err != nil {
		t.Fatalf("a refused DeleteFunc deleted: %v", err)
	}
	if err := s.DeleteFunc("nobody", func(Registration) error { t.Error("callback called for a missing app"); return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeleteFunc of a missing app: %v", err)
	}
	if err := s.DeleteFunc("a", func(Registration) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if regs := mustList(t, s); len(regs) != 0 {
		t.Fatalf("after DeleteFunc: %+v", regs)
	}
}
