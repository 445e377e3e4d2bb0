package schema

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/msgmesh/msgmesh/internal/boltfile"
	"sync"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// boltFormat is the layout of the file, stored under meta/format:
//
//	meta/format               "1"
//	meta/compatibility        the global level, if set
//	schemas/<id: 8 bytes BE>  schema text
//	subjects/<subject>/<version: 4 bytes BE>  schema id, 8 bytes BE
//	config/<subject>          the subject's level
const boltFormat = "1"

var (
	bucketMeta     = []byte("meta") // also holds the id counter
	bucketSchemas  = []byte("schemas")
	bucketSubjects = []byte("subjects")
	bucketConfig   = []byte("config")
	keyGlobalLevel = []byte("compatibility")
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
	db, err := boltfile.Open(path, boltfile.Spec{Format: boltFormat, Buckets: [][]byte{bucketSchemas, bucketSubjects, bucketConfig}, Locked: ErrLocked, Holder: "another control plane",
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
		err = tx.Bucket(bucketSubjects).ForEachBucket(func(subject []byte) error {
			var ids []int
			// Keys iterate in byte order, which is version order.
			err := tx.Bucket(bucketSubjects).Bucket(subject).ForEach(func(k, v []byte) error {
				if len(k) != 4 || len(v) != 8 || int(binary.BigEndian.Uint32(k)) != len(ids)+1 {
					return fmt.Errorf("subject %q: bad version record %x", subject, k)
				}
				id := int(binary.BigEndian.Uint64(v))
				if _, ok := snap.Schemas[id]; !ok {
					return fmt.Errorf("subject %q version %d: schema id %d is not stored", subject, len(ids)+1, id)
				}
				ids = append(ids, id)
				return nil
			})
			if err != nil {
				return err
			}
			if len(ids) > 0 {
				snap.Subjects[string(subject)] = ids
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketConfig).ForEach(func(k, v []byte) error {
			c, err := ParseCompatibility(string(v))
			if err != nil {
				return fmt.Errorf("subject %q level: %w", k, err)
			}
			snap.Compatibility[string(k)] = c
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
		if err := checkAdd(v, make([]int, n), have); err != nil {
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
		return tx.Bucket(bucketConfig).Delete([]byte(subject))
	})
	if err != nil {
		return fmt.Errorf("schema: delete subject %q: %w", subject, storeErr(err))
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
