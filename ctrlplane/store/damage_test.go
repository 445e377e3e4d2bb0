package store_test

import (
	"context"
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
	open := func(path string) (store.Store, error) {
		return store.Open(context.Background(), "", filepath.Dir(path), nil)
	}
	bolttest.Refuses(t, store.BoltFile, func(t *testing.T, path string) {
		st, err := open(path)
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
	}, func(path string) error {
		st, err := open(path)
		if err == nil {
			_ = st.Close()
		}
		return err
	}, store.ErrCorrupt, "no apps")
}
