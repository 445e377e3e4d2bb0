package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/internal/boltfile/bolttest"
)

// A damaged ctrlplane.db is refused with ErrCorrupt and a message naming
// it and how to recover, never opened as an empty store or crashed on.
func TestOpenRefusesDamagedFile(t *testing.T) {
	for _, d := range bolttest.Damages {
		t.Run(d.Name, func(t *testing.T) {
			dir := t.TempDir()
			st, err := store.Open(context.Background(), "", dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 50; i++ {
				if _, err := st.Put(context.Background(), fmt.Sprintf("apps/app%d", i), []byte(strings.Repeat("x", 100)), 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, store.BoltFile)
			d.Apply(t, path)
			st, err = store.Open(context.Background(), "", dir, nil)
			if err == nil {
				_ = st.Close()
				t.Fatal("Open accepted the damaged file")
			}
			if !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
			for _, want := range []string{path, "move it aside", "no apps"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q does not mention %q", err, want)
				}
			}
		})
	}
}
