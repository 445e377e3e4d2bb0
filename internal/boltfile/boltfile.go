// Package boltfile opens the bbolt files msgmesh keeps durable state in
// (the sidecar's registrations, the control plane's state, the schema
// registry) one way: mode 0600, a bounded wait for the file lock so a
// second process on the same data directory fails clearly instead of
// hanging, a format version checked in a "meta" bucket, the buckets
// created, and the directory entry fsynced when the file is new so the
// file itself survives a crash.
//
// # Damaged files
//
// bbolt trusts its file: on one cut short it dies of SIGBUS or panics, and
// an empty one it takes for a new database. Open checks before it trusts:
//
//   - a new file is built under a temporary name and linked into place
//     only once complete, so the file never legitimately exists empty;
//   - an existing file must be non-empty, have a valid meta page, and be
//     long enough for every page its last transaction uses (read with
//     plain reads, before bbolt maps it);
//   - then bbolt opens it read-only and every bucket, key and value is
//     read, and bbolt's own consistency check (Tx.Check) runs, with
//     faults turned into panics (runtime/debug.SetPanicOnFault) and
//     panics into errors.
//
// Any of these failing gives a *CorruptError (errors.Is ErrCorrupt) naming
// the file and the ways out, and leaves the file as it was. What cannot be
// caught: damage that keeps bbolt's structure valid (a value's bytes
// changed in place), and a file replaced by an older or empty but valid
// bbolt file. A failure inside bbolt's Open leaks that attempt's memory
// map; the caller is expected to exit.
package boltfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// LockTimeout is how long Open waits for a file another process holds.
const LockTimeout = 2 * time.Second

var (
	bucketMeta = []byte("meta")
	keyFormat  = []byte("format")
)

// Spec says what a file holds.
type Spec struct {
	// Format is the file format version kept in meta/format; a file of
	// another version is refused.
	Format string
	// Buckets are created if missing.
	Buckets [][]byte
	// Locked is the caller's sentinel error for a file another process
	// holds; Holder names that process in the message ("another msgmesh").
	Locked error
	Holder string
	// StartEmpty says, for the message about a damaged file, what starting
	// without the file means: "with no registrations (apps register
	// again)".
	StartEmpty string
}

// ErrCorrupt: the file is damaged and was not opened (see the package
// doc). The error is a *CorruptError.
var ErrCorrupt = errors.New("damaged file")

// CorruptError reports a damaged file. It unwraps to ErrCorrupt.
type CorruptError struct {
	// Path is the file.
	Path string
	// Problem says what is wrong with it.
	Problem string
	// StartEmpty is Spec.StartEmpty.
	StartEmpty string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s is damaged: %s. It was not opened and is left as it is. "+
		"Restore it from a backup, or move it aside (mv %s %s.damaged) to start %s",
		e.Path, e.Problem, e.Path, e.Path, e.StartEmpty)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// createSuffix marks a file being created: <path>.creating-<pid>.
const createSuffix = ".creating-"

// staleAge is how old a leftover of an interrupted creation must be before
// Open removes it (a younger one may be another process's, in progress).
const staleAge = time.Minute

// Open opens the bbolt file at path, creating it if it does not exist. Its
// directory must exist. A damaged file gives a *CorruptError; another
// process holding the file gives spec.Locked after LockTimeout.
func Open(path string, spec Spec) (*bolt.DB, error) {
	created := false
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if err := create(path, spec); err != nil {
			return nil, err
		}
		created = true
	} else if err != nil {
		return nil, err
	}
	if err := verify(path, spec); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: LockTimeout})
	if err != nil {
		return nil, openError(path, spec, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return prepare(tx, spec) }); err != nil {
		_ = db.Close()
		return nil, err
	}
	if created {
		// The link made the name; make it durable too.
		if err := SyncDir(filepath.Dir(path)); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	return db, nil
}

// prepare checks the format version (setting it in a new file) and
// creates missing buckets.
func prepare(tx *bolt.Tx, spec Spec) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	switch v := meta.Get(keyFormat); {
	case v == nil:
		if err := meta.Put(keyFormat, []byte(spec.Format)); err != nil {
			return err
		}
	case string(v) != spec.Format:
		return fmt.Errorf("file format %q, this build reads format %q", v, spec.Format)
	}
	for _, b := range spec.Buckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return nil
}

// create builds a new file at a temporary name and links it to path, so
// that path only ever names a complete database. If another process
// linked its file first, that one stays.
func create(path string, spec Spec) error {
	removeStale(path)
	tmp := path + createSuffix + strconv.Itoa(os.Getpid())
	_ = os.Remove(tmp) // ours from a pid reused after a crash
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: LockTimeout})
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return prepare(tx, spec) }) // fsynced on commit
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if err = os.Link(tmp, path); errors.Is(err, fs.ErrExist) {
			err = nil
		}
	}
	if rerr := os.Remove(tmp); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// removeStale removes leftovers of creations interrupted by a crash.
func removeStale(path string) {
	dir, base := filepath.Split(path)
	entries, err := os.ReadDir(filepath.Clean(dir))
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), base+createSuffix) {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleAge {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// verify checks an existing file as the package doc says, without changing
// it: its layout with plain reads, then everything in it through a
// read-only bbolt.
func verify(path string, spec Spec) error {
	corrupt := func(problem string) error {
		return &CorruptError{Path: path, Problem: problem, StartEmpty: spec.StartEmpty}
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() == 0 {
		return corrupt("it is empty (0 bytes), and msgmesh never leaves a file it created empty")
	}
	l, err := ReadLayout(path)
	if errors.Is(err, errNotBolt) {
		return corrupt(fmt.Sprintf("%v (%d bytes)", errNotBolt, st.Size()))
	}
	if err != nil {
		return err
	}
	if err := l.check(); err != nil {
		return corrupt(err.Error())
	}
	var (
		file    *os.File // bbolt's, so a panic inside bolt.Open can still close it
		db      *bolt.DB
		openErr error
	)
	err = protect(func() error {
		db, openErr = bolt.Open(path, 0o600, &bolt.Options{
			ReadOnly:        true,
			PreLoadFreelist: true, // here, where a panic is caught
			Timeout:         LockTimeout,
			OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
				f, err := os.OpenFile(name, flag, perm)
				file = f
				return f, err
			},
		})
		if openErr != nil {
			return nil
		}
		return db.View(readAll)
	})
	switch {
	case db != nil:
		_ = db.Close()
	case file != nil:
		_ = file.Close()
	}
	switch {
	case err != nil: // a panic, a fault, or what readAll found
		return corrupt("reading it failed: " + err.Error())
	case openErr != nil:
		return openError(path, spec, openErr)
	}
	return nil
}

// readAll reads every bucket, key and value, then runs bbolt's own
// consistency check. The reading comes first, on the caller's goroutine
// (where protect catches a fault), so that Tx.Check, which runs on a
// goroutine of its own, meets only pages known to be readable.
func readAll(tx *bolt.Tx) error {
	var walk func(b *bolt.Bucket) error
	walk = func(b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					return walk(nb)
				}
				return nil
			}
			if len(v) > 0 {
				_ = v[0] + v[len(v)-1] // touch the value's first and last page
			}
			return nil
		})
	}
	if err := tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(b) }); err != nil {
		return err
	}
	var errs []error
	for err := range tx.Check() {
		if len(errs) < 5 {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("bbolt's consistency check: %w", errors.Join(errs...))
	}
	return nil
}

// panicError is a panic (a fault included) caught by protect.
type panicError struct{ v any }

func (p panicError) Error() string { return fmt.Sprint(p.v) }

// protect runs fn, turning a panic, and a memory fault on the mapped file
// (which debug.SetPanicOnFault makes a panic), into a panicError.
func protect(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = panicError{r}
		}
	}()
	return fn()
}

// openError maps bbolt's open errors: the lock timeout to spec.Locked, an
// invalid or checksum-failing file to a *CorruptError.
func openError(path string, spec Spec, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("%w: gave up after %s; %s may be running on this data directory", spec.Locked, LockTimeout, spec.Holder)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return &CorruptError{Path: path, Problem: err.Error(), StartEmpty: spec.StartEmpty}
	}
	return err
}

// SyncDir fsyncs a directory, making a new entry in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %q: %w", dir, err)
	}
	return nil
}

// Compact rewrites the file at path with only its live keys, the way
// "bbolt compact" does, and replaces it: bbolt reuses freed pages but
// never clears them, so a value overwritten or deleted may still be read
// from the file until it is compacted. Nobody else may have the file open;
// Compact takes its lock like Open.
func Compact(path string, spec Spec) error {
	src, err := Open(path, spec)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := path + ".compact"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: LockTimeout})
	if err != nil {
		return err
	}
	err = bolt.Compact(dst, src, 0)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("compact %q: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}
