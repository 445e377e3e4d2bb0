package schema

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/internal/boltfile/bolttest"
)

// A damaged schema store file is refused with ErrCorrupt and a message
// naming it and how to recover, never opened as an empty store or crashed
// on.
func TestOpenBoltStoreRefusesDamagedFile(t *testing.T) {
	for _, d := range bolttest.Damages {
		t.Run(d.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "schemas.db")
			s, err := OpenBoltStore(path)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 50; i++ {
				v := SchemaVersion{Subject: fmt.Sprintf("topic%d-value", i), Version: 1, ID: i, Schema: userV1}
				if err := s.AddVersion(context.Background(), v); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			d.Apply(t, path)
			s, err = OpenBoltStore(path)
			if err == nil {
				_ = s.Close()
				t.Fatal("OpenBoltStore accepted the damaged file")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("OpenBoltStore: %v, want ErrCorrupt", err)
			}
			for _, want := range []string{path, "move it aside", "no schemas"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q does not mention %q", err, want)
				}
			}
		})
	}
}
