package registry

import (
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
// in place of any registration of the same app. The write is on disk
// (fsync) when Put returns. It returns what was stored; r itself is not
// modified. An invalid r gives an error wrapping a *ValidationError.
func (s *Store) Put(r Registration) (Registration, error) {
	reg := r.clone()
	if err := reg.Validate(); err != nil {
		return Registration{}, fmt.Errorf("registry: put %q: %w", r.App, err)
	}
	reg.Normalize()
	reg.UpdatedAt = time.Now().UTC()
	value, err := json.Marshal(reg)
	if err != nil {
		return Registration{}, fmt.Errorf("registry: put %q: %w", r.App, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRegistrations).Put([]byte(reg.App), value)
	})
	if err != nil {
		return Registration{}, fmt.Errorf("registry: put %q: %w", r.App, storeErr(err))
	}
	return reg, nil
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
		return Registration{}, fmt.Errorf("registry: get %q: %w", app, storeErr(err))
	}
	return reg, nil
}

// Delete removes the registration of app; durable (fsync) when it returns.
// It returns an error wrapping ErrNotFound if there is none.
func (s *Store) Delete(app string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRegistrations)
		if b.Get([]byte(app)) == nil {
			return ErrNotFound
		}
		return b.Delete([]byte(app))
	})
	if err != nil {
		return fmt.Errorf("registry: delete %q: %w", app, storeErr(err))
	}
	return nil
}

// List returns every registration, sorted by app name. With none stored it
// returns an empty, non-nil slice.
func (s *Store) List() ([]Registration, error) {
	var regs []Registration
	err := s.db.View(func(tx *bolt.Tx) error {
		regs = []Registration{}
		// bbolt iterates keys in byte order, which is app name order.
		return tx.Bucket(bucketRegistrations).ForEach(func(k, v []byte) error {
			var reg Registration
			if err := decodeStored(v, &reg); err != nil {
				return fmt.Errorf("app %q: %w", k, err)
			}
			regs = append(regs, reg)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("registry: list: %w", storeErr(err))
	}
	return regs, nil
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
	if err := json.Unmarshal(v, reg); err != nil {
		return fmt.Errorf("decode stored registration: %w", err)
	}
	return nil
}

// storeErr maps bbolt's closed-database error to ErrClosed.
func storeErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}
