package registry

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/internal/boltfile/bolttest"
)

// A damaged registrations file is refused with ErrCorrupt and a message
// naming it and how to recover, never opened as an empty store or crashed
// on.
func TestOpenRefusesDamagedFile(t *testing.T) {
	for _, d := range bolttest.Damages {
		t.Run(d.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "registrations.db")
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
			d.Apply(t, path)
			s, err = Open(path)
			if err == nil {
				regs, _ := s.List()
				_ = s.Close()
				t.Fatalf("Open accepted the damaged file (%d registrations)", len(regs))
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
			for _, want := range []string{path, "move it aside", "no registrations"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q does not mention %q", err, want)
				}
			}
		})
	}
}
