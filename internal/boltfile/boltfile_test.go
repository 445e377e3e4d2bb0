package boltfile

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

var errTestLocked = errors.New("test: locked")

func TestOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	spec := Spec{Format: "1", Buckets: [][]byte{[]byte("a"), []byte("b")}, Locked: errTestLocked, Holder: "another test"}
	db, err := Open(path, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		for _, b := range spec.Buckets {
			if tx.Bucket(b) == nil {
				t.Errorf("bucket %s missing", b)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A second opener gives up after LockTimeout with the caller's sentinel.
	if _, err := Open(path, spec); !errors.Is(err, errTestLocked) || !strings.Contains(err.Error(), "another test") {
		t.Fatalf("second Open while locked: %v, want the Locked sentinel naming the holder", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Another format version is refused; the same one reopens.
	other := spec
	other.Format = "2"
	if _, err := Open(path, other); err == nil || !strings.Contains(err.Error(), `format "1"`) {
		t.Fatalf("Open with another format: %v, want a format error", err)
	}
	db, err = Open(path, spec)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	_ = db.Close()
}
