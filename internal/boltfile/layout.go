package boltfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// The on-disk layout of a bbolt file (go.etcd.io/bbolt, format version 2),
// as far as checking a file before bbolt maps it needs: the file starts
// with two meta pages (page 0 and page 1), each a 16-byte page header
// followed by the meta. bbolt writes them in the machine's byte order and
// uses the valid one with the higher transaction id.
const (
	pageHeaderSize = 16
	metaSize       = 64 // magic .. checksum
	metaMagic      = 0xED0CDAED
	metaVersion    = 2
	noFreelist     = ^uint64(0) // the freelist is not stored (NoFreelistSync)
)

// Layout is what a bbolt file's current meta page says about it.
type Layout struct {
	// Size is the file's length in bytes.
	Size int64
	// PageSize is the size of a page in bytes.
	PageSize int
	// Pages is the high water mark: pages 0..Pages-1 hold the data of the
	// last committed transaction, so the file needs Pages*PageSize bytes.
	Pages int64
	// Root is the page of the root bucket; Freelist the page of the free
	// list (^uint64(0) when it is not stored).
	Root, Freelist int64
	// TxID is the id of the last committed transaction.
	TxID uint64
}

// errNotBolt: neither meta page is valid.
var errNotBolt = errors.New("neither of its two meta pages is valid (it is not a bbolt file, or its first pages were overwritten)")

// ReadLayout reads the meta pages of the bbolt file at path without
// mapping it, and returns the layout bbolt would use. It fails on a file
// whose meta pages are both invalid.
func ReadLayout(path string) (Layout, error) {
	f, err := os.Open(path)
	if err != nil {
		return Layout{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Layout{}, err
	}
	l, err := readLayout(f, st.Size())
	if err != nil {
		return Layout{}, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

func readLayout(r io.ReaderAt, size int64) (Layout, error) {
	var best *Layout
	consider := func(l Layout, ok bool) {
		if ok && (best == nil || l.TxID > best.TxID) {
			best = &l
		}
	}
	// Meta page 0 is at offset 0 and names the page size, which places
	// meta page 1; if page 0 is invalid, look for page 1 at every page
	// size bbolt supports (1 KiB to 16 MiB), as bbolt itself does.
	m0, ok0 := readMeta(r, 0)
	consider(m0, ok0)
	if ok0 {
		m1, ok1 := readMeta(r, int64(m0.PageSize))
		consider(m1, ok1 && m1.PageSize == m0.PageSize)
	} else {
		for i := 0; i <= 14; i++ {
			off := int64(1024) << i
			if off >= size {
				break
			}
			if m1, ok := readMeta(r, off); ok && int64(m1.PageSize) == off {
				consider(m1, true)
				break
			}
		}
	}
	if best == nil {
		return Layout{}, errNotBolt
	}
	best.Size = size
	return *best, nil
}

// readMeta decodes and validates (magic, version, checksum) the meta page
// at off.
func readMeta(r io.ReaderAt, off int64) (Layout, bool) {
	var b [pageHeaderSize + metaSize]byte
	if _, err := r.ReadAt(b[:], off); err != nil {
		return Layout{}, false
	}
	m := b[pageHeaderSize:]
	e := binary.NativeEndian
	h := fnv.New64a()
	_, _ = h.Write(m[:56])
	if e.Uint32(m[0:]) != metaMagic || e.Uint32(m[4:]) != metaVersion || e.Uint64(m[56:]) != h.Sum64() {
		return Layout{}, false
	}
	ps := e.Uint32(m[8:])
	if ps < 512 || ps > 1<<24 {
		return Layout{}, false
	}
	return Layout{
		PageSize: int(ps),
		Root:     int64(e.Uint64(m[16:])),
		Freelist: int64(e.Uint64(m[32:])),
		Pages:    int64(e.Uint64(m[40:])),
		TxID:     e.Uint64(m[48:]),
	}, true
}

// check says what is wrong with a file of this layout, or nil: every page
// the last transaction uses must be in the file, which is what bbolt
// assumes when it maps the file (a page past the end is a SIGBUS).
func (l Layout) check() error {
	ps := int64(l.PageSize)
	switch {
	case l.Pages < 4: // bbolt creates files with 4 pages
		return fmt.Errorf("its meta page says it has %d pages, which cannot be", l.Pages)
	case l.Pages > l.Size/ps:
		return fmt.Errorf("it is %d bytes long but its last transaction uses %d pages of %d bytes (%d bytes): it was cut short",
			l.Size, l.Pages, ps, uint64(l.Pages)*uint64(ps))
	case l.Root < 2 || l.Root >= l.Pages:
		return fmt.Errorf("its root page %d is outside its %d pages", l.Root, l.Pages)
	case uint64(l.Freelist) != noFreelist && (l.Freelist < 2 || l.Freelist >= l.Pages):
		return fmt.Errorf("its free list page %d is outside its %d pages", l.Freelist, l.Pages)
	}
	return nil
}
