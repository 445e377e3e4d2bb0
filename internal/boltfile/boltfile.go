// Package boltfile opens the bbolt files msgmesh keeps durable state in
// (the sidecar's registrations, the control plane's state, the schema
// registry) one way: mode 0600, a bounded wait for the file lock so a
// second process on the same data directory fails clearly instead of
// hanging, a format version checked in a "meta" bucket, the buckets
// created, and the directory entry fsynced when the file is new so the
// file itself survives a crash.
package boltfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
}

// Open opens (creating if needed) the bbolt file at path. Its directory
// must exist.
func Open(path string, spec Spec) (*bolt.DB, error) {
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: LockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: gave up after %s; %s may be running on this data directory", spec.Locked, LockTimeout, spec.Holder)
	}
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
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
	})
	if err == nil && created {
		err = SyncDir(filepath.Dir(path))
	}
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
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
