package registry

import (
	"fmt"
	"testing"

	"github.com/msgmesh/msgmesh/internal/boltfile/bolttest"
)

// A damaged registrations file is refused with ErrCorrupt and a message
// naming it and how to recover, never opened as an empty store or crashed
// on.
func TestOpenRefusesDamagedFile(t *testing.T) {
	bolttest.Refuses(t, "registrations.db", func(t *testing.T, path string) {
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 50; i++ {
			b, _ := ParseBinding(fmt.Sprintf("g:orders.t%d", i))
			if _, err := s.Put(Registration{App: fmt.Sprintf("app%d", i), Consume: []Binding{b}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}, func(path string) error {
		s, err := Open(path)
		if err == nil {
			_ = s.Close()
		}
		return err
	}, ErrCorrupt, "no registrations")
}
