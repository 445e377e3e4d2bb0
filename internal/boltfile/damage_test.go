package boltfile_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/msgmesh/msgmesh/internal/boltfile"
	"github.com/msgmesh/msgmesh/internal/boltfile/bolttest"
)

var errLocked = errors.New("test: locked")

var spec = boltfile.Spec{Format: "1", Buckets: [][]byte{[]byte("a")}, Locked: errLocked, Holder: "another test", StartEmpty: "with nothing in it"}

// writeData fills bucket "a" of a new file at path so that it spans more
// than bbolt's four initial pages, and closes it.
func writeData(t *testing.T, path string) {
	t.Helper()
	db, err := boltfile.Open(path, spec)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for i := 0; i < 300; i++ {
			if err := tx.Bucket([]byte("a")).Put(fmt.Appendf(nil, "key-%04d", i), bytes.Repeat([]byte{'v'}, 100)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// Every damage is refused with ErrCorrupt and a message that names the
// file and says how to recover, instead of a SIGBUS, a panic, or an
// empty database; the file is left as it was, and no lock stays behind
// (the second attempt says the same, not "locked").
func TestOpenRefusesDamagedFiles(t *testing.T) {
	for _, d := range bolttest.Damages {
		t.Run(d.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.db")
			writeData(t, path)
			d.Apply(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for attempt := 1; attempt <= 2; attempt++ {
				db, err := boltfile.Open(path, spec)
				if err == nil {
					_ = db.Close()
					t.Fatalf("attempt %d: Open accepted the damaged file", attempt)
				}
				if !errors.Is(err, boltfile.ErrCorrupt) {
					t.Fatalf("attempt %d: Open: %v, want ErrCorrupt", attempt, err)
				}
				var ce *boltfile.CorruptError
				if !errors.As(err, &ce) || ce.Path != path {
					t.Fatalf("attempt %d: Open: %v, want a *CorruptError for %s", attempt, err, path)
				}
				for _, want := range []string{path, "backup", "move it aside", "with nothing in it"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("attempt %d: message %q does not mention %q", attempt, err, want)
					}
				}
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Fatalf("Open changed the damaged file (%d bytes before, %d after)", len(before), len(after))
			}
		})
	}
}

// An intact file with data, reopened many times, is never taken for a
// damaged one.
func TestOpenAcceptsIntactFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	writeData(t, path)
	for i := 0; i < 3; i++ {
		db, err := boltfile.Open(path, spec)
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		var n int
		_ = db.View(func(tx *bolt.Tx) error { n = tx.Bucket([]byte("a")).Stats().KeyN; return nil })
		if n != 300 {
			t.Fatalf("reopen %d: %d keys, want 300", i, n)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A new file appears under its name only once it is a complete database,
// so a crash while creating it never leaves the empty file that Open
// refuses; leftovers of such a crash are removed.
func TestOpenCreatesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.db")
	stale := path + boltfile.CreateSuffix + "12345"
	if err := os.WriteFile(stale, []byte("half a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	db, err := boltfile.Open(path, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "x.db" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only x.db", names)
	}
	l, err := boltfile.ReadLayout(path)
	if err != nil || l.Pages < 4 {
		t.Fatalf("new file: %+v, %v; want a complete bbolt file", l, err)
	}
}
