package schema

import (
	"context"
	"fmt"
	"testing"

	"github.com/msgmesh/msgmesh/internal/boltfile/bolttest"
)

// A damaged schema store file is refused with ErrCorrupt and a message
// naming it and how to recover, never opened as an empty store or crashed
// on.
func TestOpenBoltStoreRefusesDamagedFile(t *testing.T) {
	bolttest.Refuses(t, "schemas.db", func(t *testing.T, path string) {
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
	}, func(path string) error {
		s, err := OpenBoltStore(path)
		if err == nil {
			_ = s.Close()
		}
		return err
	}, ErrCorrupt, "no schemas")
}
