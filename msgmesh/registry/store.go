package registry

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/msgmesh/msgmesh/internal/boltfile"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// lockTimeout bounds how long Open waits for the file lock.
const lockTimeout = boltfile.LockTimeout

// formatVersion is the layout of the file: bucket "registrations", key the
// app name, value the Registration as JSON. It is stored under
// meta/format; Open refuses a file with another version.
const formatVersion = "1"

var (
	bucketRegistrations = []byte("registrations")
	bucketMeta          = []byte("meta")
	keyFormat           = []byte("format")
)

// Store is the durable set of registrations, one bbolt file in the
// sidecar's data directory. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string

	closeOnce sync.Once
	closeErr  error
}

// Open opens the store file at path, creating it (mode 0600) and its
// buckets if needed; the directory must exist. The file is locked while the
// Store is open: if another process or Store holds it, Open gives up after
// 2 s with an error wrapping ErrLocked.
func Open(path string) (*Store, error) {
	db, err := boltfile.Open(path, boltfile.Spec{Format: formatVersion, Buckets: [][]byte{bucketRegistrations}, Locked: ErrLocked, Holder: "another msgmesh",
		StartEmpty: "with no registrations (every app must register again; the consumer groups keep their positions at the broker)"})
	if err != nil {
		return nil, fmt.Errorf("registry: open %q: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Put validates r, normalises it, sets UpdatedAt to now (UTC) and stores it
// in place of any registration of the same app, SecretHash included. The
// write is on disk (fsync) when Put returns. It returns what was stored; r
// itself is not modified. An invalid r gives an error wrapping a
// *ValidationError.
func (s *Store) Put(r Registration) (Registration, error) {
	return s.PutFunc(func([]Registration) (Registration, error) { return r, nil })
}

// PutFunc stores, as Put does, the registration fn returns. fn is given
// every stored registration (sorted by app, with their secret hashes) and
// runs inside the read-write transaction that writes its result, so what fn
// decided from them (whether the caller may replace an app's registration,
// say) still holds when the result is written: no other Put or Delete can
// come in between. An error from fn is returned unchanged and nothing is
// written. fn must not call the Store.
func (s *Store) PutFunc(fn func(current []Registration) (Registration, error)) (Registration, error) {
	var reg Registration
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRegistrations)
		current, err := list(b)
		if err != nil {
			return err
		}
		r, err := fn(current)
		if err != nil {
			return &callerError{err}
		}
		reg = r.clone()
		if err := reg.Validate(); err != nil {
			return err
		}
		if n := len(reg.SecretHash); n != 0 && n != sha256.Size {
			return invalid("", "secret hash of %d bytes, want %d (SHA-256)", n, sha256.Size)
		}
		reg.Normalize()
		reg.UpdatedAt = time.Now().UTC()
		value, err := json.Marshal(stored{Registration: reg, SecretHash: reg.SecretHash})
		if err != nil {
			return err
		}
		return b.Put([]byte(reg.App), value)
	})
	var ce *callerError
	switch {
	case errors.As(err, &ce):
		return Registration{}, ce.err
	case err != nil:
		return Registration{}, fmt.Errorf("registry: put %q: %w", reg.App, s.storeErr(err))
	}
	return reg, nil
}

// callerError carries an error of a PutFunc or DeleteFunc callback out of
// the transaction unchanged.
type callerError struct{ err error }

func (e *callerError) Error() string { return e.err.Error() }

// stored is a registration as the file holds it: its JSON with the secret
// hash beside it (the registration's own JSON, the HTTP API's, leaves the
// hash out). Values written before the hash existed decode with none.
type stored struct {
	Registration
	SecretHash []byte `json:"secret_sha256,omitempty"`
}

// Get returns the registration of app, or an error wrapping ErrNotFound.
func (s *Store) Get(app string) (Registration, error) {
	var reg Registration
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRegistrations).Get([]byte(app))
		if v == nil {
			return ErrNotFound
		}
		return decodeStored(v, &reg)
	})
	if err != nil {
		return Registration{}, fmt.Errorf("registry: get %q: %w", app, s.storeErr(err))
	}
	return reg, nil
}

// Delete removes the registration of app; durable (fsync) when it returns.
// It returns an error wrapping ErrNotFound if there is none.
func (s *Store) Delete(app string) error {
	return s.DeleteFunc(app, nil)
}

// DeleteFunc is Delete after fn, if not nil, approved the registration
// being deleted, in the same read-write transaction. An error from fn is
// returned unchanged and nothing is deleted. fn must not call the Store.
func (s *Store) DeleteFunc(app string, fn func(current Registration) error) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRegistrations)
		v := b.Get([]byte(app))
		if v == nil {
			return ErrNotFound
		}
		if fn != nil {
			var reg Registration
			if err := decodeStored(v, &reg); err != nil {
				return err
			}
			if err := fn(reg); err != nil {
				return &callerError{err}
			}
		}
		return b.Delete([]byte(app))
	})
	var ce *callerError
	switch {
	case errors.As(err, &ce):
		return ce.err
	case err != nil:
		return fmt.Errorf("registry: delete %q: %w", app, s.storeErr(err))
	}
	return nil
}

// List returns every registration, sorted by app name. With none stored it
// returns an empty, non-nil slice.
func (s *Store) List() ([]Registration, error) {
	var regs []Registration
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		regs, err = list(tx.Bucket(bucketRegistrations))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("registry: list: %w", s.storeErr(err))
	}
	return regs, nil
}

// list decodes every registration of the bucket, in app name order (bbolt
// iterates keys in byte order).
func list(b *bolt.Bucket) ([]Registration, error) {
	regs := []Registration{}
	err := b.ForEach(func(k, v []byte) error {
		var reg Registration
		if err := decodeStored(v, &reg); err != nil {
			return fmt.Errorf("app %q: %w", k, err)
		}
		regs = append(regs, reg)
		return nil
	})
	return regs, err
}

// Close closes the file and releases its lock. It is safe to call more
// than once; every call returns the first call's result. Other methods
// return an error wrapping ErrClosed afterwards.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("registry: close %q: %w", s.path, err)
		}
	})
	return s.closeErr
}

func decodeStored(v []byte, reg *Registration) error {
	var st stored
	if err := json.Unmarshal(v, &st); err != nil {
		return fmt.Errorf("decode stored registration: %w", err)
	}
	*reg = st.Registration
	reg.SecretHash = st.SecretHash
	return nil
}

// storeErr maps bbolt's closed-database error to ErrClosed, and a full
// file system to ErrStorageFull.
func (s *Store) storeErr(err error) error {
	switch {
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return ErrClosed
	case boltfile.NoSpace(err):
		return fmt.Errorf("%w: the file system holding %s has no space left; nothing was changed, and the same request succeeds once space is freed: %w", ErrStorageFull, s.path, err)
	}
	return err
}
