package schema

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/msgmesh/msgmesh/internal/boltfile"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// boltFormat is the layout of the file, stored under meta/format:
//
//	meta/format               "1"
//	meta/compatibility        the global level, if set
//	meta/mode                 the global mode, if set
//	schemas/<id: 8 bytes BE>  schema text
//	subjects/<subject>/<version: 4 bytes BE>  schema id, 8 bytes BE; a 9th byte 1 when soft-deleted
//	config/<subject>          the subject's level
//	mode/<subject>            the subject's mode
//
// Versions ascend and may have gaps (versions deleted permanently). Files
// written before soft deletes and modes existed are read as they are; a
// file with a soft-deleted version is refused by those older binaries
// ("bad version record").
const boltFormat = "1"

var (
	bucketMeta     = []byte("meta") // also holds the id counter
	bucketSchemas  = []byte("schemas")
	bucketSubjects = []byte("subjects")
	bucketConfig   = []byte("config")
	bucketMode     = []byte("mode")
	keyGlobalLevel = []byte("compatibility")
	keyGlobalMode  = []byte("mode")
)

// BoltStore is a Store in one bbolt file. Every write is one bbolt
// read-write transaction, which bbolt fsyncs when it commits: a change is
// on disk before the method returns. It is safe for concurrent use.
type BoltStore struct {
	db   *bolt.DB
	path string

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*BoltStore)(nil)

// OpenBoltStore opens the store file at path, creating it (mode 0600) and
// its buckets if needed; the directory must exist. The file is locked while
// open: if another process or BoltStore holds it, OpenBoltStore gives up
// after 2 s with an error wrapping ErrLocked.
func OpenBoltStore(path string) (*BoltStore, error) {
	db, err := boltfile.Open(path, boltfile.Spec{Format: boltFormat, Buckets: [][]byte{bucketSchemas, bucketSubjects, bucketConfig, bucketMode}, Locked: ErrLocked, Holder: "another control plane",
		StartEmpty: "with no schemas (register them again; their ids will differ)"})
	if err != nil {
		return nil, fmt.Errorf("schema: open %q: %w", path, err)
	}
	return &BoltStore{db: db, path: path}, nil
}

func idKey(id int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(id)) }

func versionKey(v int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }

// Load implements Store.
func (s *BoltStore) Load(context.Context) (Snapshot, error) {
	snap := newSnapshot()
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyGlobalLevel); v != nil {
			c, err := ParseCompatibility(string(v))
			if err != nil {
				return fmt.Errorf("global level: %w", err)
			}
			snap.Compatibility[""] = c
		}
		err := tx.Bucket(bucketSchemas).ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("schema key %x is not 8 bytes", k)
			}
			snap.Schemas[int(binary.BigEndian.Uint64(k))] = string(v)
			return nil
		})
		if err != nil {
			return err
		}
		if v := tx.Bucket(bucketMeta).Get(keyGlobalMode); v != nil {
			m, err := ParseMode(string(v))
			if err != nil {
				return fmt.Errorf("global mode: %w", err)
			}
			snap.Modes[""] = m
		}
		err = tx.Bucket(bucketSubjects).ForEachBucket(func(subject []byte) error {
			var vs []StoredVersion
			// Keys iterate in byte order, which is version order.
			err := tx.Bucket(bucketSubjects).Bucket(subject).ForEach(func(k, v []byte) error {
				if len(k) != 4 || (len(v) != 8 && !(len(v) == 9 && v[8] == 1)) || int(binary.BigEndian.Uint32(k)) <= lastVersion(vs) {
					return fmt.Errorf("subject %q: bad version record %x", subject, k)
				}
				sv := StoredVersion{Version: int(binary.BigEndian.Uint32(k)), ID: int(binary.BigEndian.Uint64(v[:8])), Deleted: len(v) == 9}
				if _, ok := snap.Schemas[sv.ID]; !ok {
					return fmt.Errorf("subject %q version %d: schema id %d is not stored", subject, sv.Version, sv.ID)
				}
				vs = append(vs, sv)
				return nil
			})
			if err != nil {
				return err
			}
			if len(vs) > 0 {
				snap.Subjects[string(subject)] = vs
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketConfig).ForEach(func(k, v []byte) error {
			c, err := ParseCompatibility(string(v))
			if err != nil {
				return fmt.Errorf("subject %q level: %w", k, err)
			}
			snap.Compatibility[string(k)] = c
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketMode).ForEach(func(k, v []byte) error {
			m, err := ParseMode(string(v))
			if err != nil {
				return fmt.Errorf("subject %q mode: %w", k, err)
			}
			snap.Modes[string(k)] = m
			return nil
		})
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("schema: load %q: %w", s.path, storeErr(err))
	}
	return snap, nil
}

// AddVersion implements Store.
func (s *BoltStore) AddVersion(_ context.Context, v SchemaVersion) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		sub, err := tx.Bucket(bucketSubjects).CreateBucketIfNotExists([]byte(v.Subject))
		if err != nil {
			return err
		}
		var n int
		if k, _ := sub.Cursor().Last(); k != nil {
			n = int(binary.BigEndian.Uint32(k))
		}
		schemas := tx.Bucket(bucketSchemas)
		var have map[int]string
		if text := schemas.Get(idKey(v.ID)); text != nil {
			have = map[int]string{v.ID: string(text)}
		}
		if err := checkAdd(v, n, have); err != nil {
			return err
		}
		if have == nil {
			if err := schemas.Put(idKey(v.ID), []byte(v.Schema)); err != nil {
				return err
			}
		}
		return sub.Put(versionKey(v.Version), idKey(v.ID))
	})
	if err != nil {
		return fmt.Errorf("schema: add version %d of %q: %w", v.Version, v.Subject, storeErr(err))
	}
	return nil
}

// DeleteSubject implements Store.
func (s *BoltStore) DeleteSubject(_ context.Context, subject string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketSubjects).DeleteBucket([]byte(subject))
		if err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return err
		}
		if err := tx.Bucket(bucketMode).Delete([]byte(subject)); err != nil {
			return err
		}
		return tx.Bucket(bucketConfig).Delete([]byte(subject))
	})
	if err != nil {
		return fmt.Errorf("schema: delete subject %q: %w", subject, storeErr(err))
	}
	return nil
}

// DeleteVersions implements Store.
func (s *BoltStore) DeleteVersions(_ context.Context, subject string, versions []int, permanent bool) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		sub := tx.Bucket(bucketSubjects).Bucket([]byte(subject))
		if sub == nil {
			return nil
		}
		for _, n := range versions {
			k := versionKey(n)
			v := sub.Get(k)
			switch {
			case v == nil:
				continue
			case permanent:
				if err := sub.Delete(k); err != nil {
					return err
				}
			default:
				if err := sub.Put(k, append(slices.Clone(v[:8]), 1)); err != nil {
					return err
				}
			}
		}
		if k, _ := sub.Cursor().First(); k == nil {
			return tx.Bucket(bucketSubjects).DeleteBucket([]byte(subject))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("schema: delete versions %v of %q: %w", versions, subject, storeErr(err))
	}
	return nil
}

// SetMode implements Store.
func (s *BoltStore) SetMode(_ context.Context, subject string, m Mode) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, key := tx.Bucket(bucketMode), []byte(subject)
		if subject == "" {
			b, key = tx.Bucket(bucketMeta), keyGlobalMode
		}
		if m == "" {
			return b.Delete(key)
		}
		return b.Put(key, []byte(m))
	})
	if err != nil {
		return fmt.Errorf("schema: set mode of %q: %w", subject, storeErr(err))
	}
	return nil
}

// SetCompatibility implements Store.
func (s *BoltStore) SetCompatibility(_ context.Context, subject string, c Compatibility) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, key := tx.Bucket(bucketConfig), []byte(subject)
		if subject == "" {
			b, key = tx.Bucket(bucketMeta), keyGlobalLevel
		}
		if c == "" {
			return b.Delete(key)
		}
		return b.Put(key, []byte(c))
	})
	if err != nil {
		return fmt.Errorf("schema: set compatibility of %q: %w", subject, storeErr(err))
	}
	return nil
}

// Close closes the file and releases its lock. It is safe to call more than
// once; every call returns the first call's result. Other methods return an
// error wrapping ErrClosed afterwards.
func (s *BoltStore) Close() error {
	s.closeOnce.Do(func() {
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("schema: close %q: %w", s.path, err)
		}
	})
	return s.closeErr
}

// storeErr maps bbolt's closed-database error to ErrClosed.
func storeErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}
