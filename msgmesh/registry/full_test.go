package registry

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/internal/tmpfstest"
)

// A write on a full disk fails with ErrStorageFull, naming the file,
// changes nothing, and the same Store takes writes again once space is
// back; everything stored before is still there, also after a reopen.
func TestStoreFullDisk(t *testing.T) {
	dir := tmpfstest.Mount(t, "2m")
	path := filepath.Join(dir, "registrations.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reg := func(i int) Registration {
		return Registration{App: fmt.Sprintf("app-%04d", i), Produce: []Binding{{Group: "p", Topic: fmt.Sprintf("t.%d", i)}}}
	}
	mustPut(t, s, reg(0))
	ballast := filepath.Join(dir, "ballast")
	tmpfstest.Fill(t, ballast, 0)
	var err2 error
	stored := 1
	for ; stored < 1000; stored++ {
		if _, err2 = s.Put(reg(stored)); err2 != nil {
			break
		}
	}
	if !errors.Is(err2, ErrStorageFull) || !strings.Contains(err2.Error(), path) {
		t.Fatalf("Put on a full disk: %v; want ErrStorageFull naming %s", err2, path)
	}
	if _, err := s.Get(reg(stored).App); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the failed Put left %s behind: %v", reg(stored).App, err)
	}
	if err := s.Delete(reg(0).App); err != nil && !errors.Is(err, ErrStorageFull) {
		t.Fatalf("Delete on a full disk: %v; want success or ErrStorageFull", err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, reg(stored))
	mustPut(t, s, reg(0))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := len(mustList(t, s2)); got != stored+1 {
		t.Fatalf("after reopening: %d registrations, want %d", got, stored+1)
	}
}
