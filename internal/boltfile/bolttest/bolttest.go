// Package bolttest breaks bbolt files the ways disks, crashes and careless
// people break them, for the tests of every store that opens its file
// through package boltfile (the registrations, the control plane's state,
// the schema registry) and of the binaries that use them.
package bolttest

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/internal/boltfile"
)

// Damage is one way a bbolt file gets broken.
type Damage struct {
	// Name says what happened to the file, for subtest names.
	Name string
	// Apply breaks the closed file at path in place.
	Apply func(t testing.TB, path string)
}

// Damages are the damages every store must refuse to open. Each needs a
// file holding data (more than bbolt's four initial pages), which a few
// writes give.
var Damages = []Damage{
	// Half of the pages the last transaction uses are gone: what a copy
	// cut short or a file system losing the tail leaves. bbolt's own Open
	// dies of SIGBUS or panics in loadFreelist on such a file.
	{Name: "truncated", Apply: func(t testing.TB, path string) {
		l := layout(t, path)
		truncate(t, path, l.Pages*int64(l.PageSize)/2)
	}},
	// Only the two meta pages are left.
	{Name: "cut after the meta pages", Apply: func(t testing.TB, path string) {
		truncate(t, path, 2*int64(layout(t, path).PageSize))
	}},
	// Same length, every byte zero (a file system that lost the blocks).
	{Name: "zeroed", Apply: func(t testing.TB, path string) {
		overwrite(t, path, func(b []byte) { clear(b) })
	}},
	// Zero bytes long (": > file", a crash of a non-atomic copy). bbolt's
	// own Open takes it for a new file and starts empty.
	{Name: "emptied", Apply: func(t testing.TB, path string) {
		truncate(t, path, 0)
	}},
	// Same length, random bytes (another file copied over it).
	{Name: "garbage", Apply: func(t testing.TB, path string) {
		rng := rand.New(rand.NewPCG(1, 2))
		overwrite(t, path, func(b []byte) {
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
		})
	}},
	// The meta pages are intact but the root page of the data is zeros:
	// damage that only reading the data finds.
	{Name: "root page zeroed", Apply: func(t testing.TB, path string) {
		l := layout(t, path)
		overwrite(t, path, func(b []byte) {
			off := l.Root * int64(l.PageSize)
			clear(b[off : off+int64(l.PageSize)])
		})
	}},
}

func layout(t testing.TB, path string) boltfile.Layout {
	t.Helper()
	l, err := boltfile.ReadLayout(path)
	if err != nil {
		t.Fatalf("bolttest: %v", err)
	}
	if l.Pages <= 4 {
		t.Fatalf("bolttest: %s holds %d pages: write some data first so that damage loses some", path, l.Pages)
	}
	return l
}

func truncate(t testing.TB, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatalf("bolttest: %v", err)
	}
}

func overwrite(t testing.TB, path string, fn func([]byte)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("bolttest: %v", err)
	}
	fn(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatalf("bolttest: %v", err)
	}
}

// Refuses runs one subtest per damage: fill writes some data into a new
// file at path (in a directory of its own) and closes it, the damage is
// applied, and open must then fail with an error that errors.Is sentinel
// and mentions the file's path, "move it aside" and each of mentions. A
// store passing it neither crashes on a damaged file nor opens it empty.
func Refuses(t *testing.T, file string, fill func(t *testing.T, path string), open func(path string) error, sentinel error, mentions ...string) {
	for _, d := range Damages {
		t.Run(d.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), file)
			fill(t, path)
			d.Apply(t, path)
			err := open(path)
			if err == nil {
				t.Fatal("the damaged file was opened")
			}
			if !errors.Is(err, sentinel) {
				t.Fatalf("open: %v, want %v", err, sentinel)
			}
			for _, want := range append([]string{path, "move it aside"}, mentions...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q does not mention %q", err, want)
				}
			}
		})
	}
}
