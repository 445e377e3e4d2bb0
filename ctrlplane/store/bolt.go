package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/msgmesh/msgmesh/internal/boltfile"
	"os"
	"path/filepath"
	"sync"

	"github.com/msgmesh/msgmesh/core"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// boltFormat is the file layout described in the package doc.
const boltFormat = "1"

// maxWatchQueue is how many events a bbolt watcher may have queued before
// they are replaced by one Reset.
const maxWatchQueue = 1024

// boltSpec is how boltfile opens the store's file.
var boltSpec = boltfile.Spec{Format: boltFormat, Buckets: [][]byte{bucketKV}, Locked: ErrLocked, Holder: "another ctrlplane",
	StartEmpty: "with no apps, instances, weights, credentials or topology (create them again, and give the sidecars their apps' new credentials)"}

var (
	bucketMeta = []byte("meta") // also holds the revision counter
	bucketKV   = []byte("kv")
	keyRev     = []byte("rev")
)

// Bolt is the embedded store: one bbolt file. Only one process can have it
// open, so its watches need only see its own writes.
type Bolt struct {
	db   *bolt.DB
	path string

	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	routines core.Routines

	writeMu  sync.Mutex // held across a write transaction and its fan-out
	watchMu  sync.Mutex // guards watchers; taken inside writeMu
	watchers map[*boltWatcher]struct{}

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens the bbolt file at path, creating it (mode 0600) if
// needed; its directory is created too. The file is locked while open: if
// another process holds it, OpenBolt gives up after 2 s with an error
// wrapping ErrLocked.
func OpenBolt(path string) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open %q: %w", path, err)
	}
	db, err := boltfile.Open(path, boltSpec)
	if err != nil {
		return nil, fmt.Errorf("store: open %q: %w", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Bolt{db: db, path: path, ctx: ctx, cancel: cancel, watchers: map[*boltWatcher]struct{}{}}, nil
}

// BoltPath is the bbolt file's path in a data directory.
func BoltPath(dataDir string) string { return filepath.Join(dataDir, BoltFile) }

// CompactBolt rewrites the bbolt file at path with only its live values
// (boltfile.Compact), so that values overwritten or deleted can no longer
// be read from it. The file must not be open.
func CompactBolt(path string) error {
	if err := boltfile.Compact(path, boltSpec); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// Get implements Store.
func (b *Bolt) Get(ctx context.Context, key string) (Entry, error) {
	var e Entry
	err := b.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketKV).Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		var err error
		e, err = decodeEntry(key, v)
		return err
	})
	if err != nil {
		return Entry{}, fmt.Errorf("store: get %q: %w", key, err)
	}
	return e, nil
}

// List implements Store.
func (b *Bolt) List(ctx context.Context, prefix string) ([]Entry, error) {
	out := []Entry{}
	err := b.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketKV).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			e, err := decodeEntry(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list %q: %w", prefix, err)
	}
	return out, nil
}

// Put implements Store.
func (b *Bolt) Put(ctx context.Context, key string, value []byte, prev uint64) (uint64, error) {
	if key == "" {
		return 0, fmt.Errorf("store: put: empty key")
	}
	rev, err := b.write(ctx, key, false, func(kv *bolt.Bucket, cur uint64, exists bool, rev uint64) error {
		if cur != prev {
			return ErrConflict
		}
		v := make([]byte, 8+len(value))
		binary.BigEndian.PutUint64(v, rev)
		copy(v[8:], value)
		return kv.Put([]byte(key), v)
	})
	if err != nil {
		return 0, fmt.Errorf("store: put %q: %w", key, err)
	}
	return rev, nil
}

// Delete implements Store.
func (b *Bolt) Delete(ctx context.Context, key string, prev uint64) (uint64, error) {
	rev, err := b.write(ctx, key, true, func(kv *bolt.Bucket, cur uint64, exists bool, rev uint64) error {
		switch {
		case !exists:
			return ErrNotFound
		case cur != prev:
			return ErrConflict
		}
		return kv.Delete([]byte(key))
	})
	if err != nil {
		return 0, fmt.Errorf("store: delete %q: %w", key, err)
	}
	return rev, nil
}

// write runs one read-write transaction that bumps the revision counter,
// lets apply change key, and on commit tells the watchers.
func (b *Bolt) write(ctx context.Context, key string, deleted bool, apply func(kv *bolt.Bucket, cur uint64, exists bool, rev uint64) error) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	var rev uint64
	err := b.db.Update(func(tx *bolt.Tx) error {
		meta, kv := tx.Bucket(bucketMeta), tx.Bucket(bucketKV)
		if v := meta.Get(keyRev); len(v) == 8 {
			rev = binary.BigEndian.Uint64(v)
		}
		rev++
		var cur uint64
		v := kv.Get([]byte(key))
		if len(v) >= 8 {
			cur = binary.BigEndian.Uint64(v)
		}
		if err := apply(kv, cur, v != nil, rev); err != nil {
			return err
		}
		var rb [8]byte
		binary.BigEndian.PutUint64(rb[:], rev)
		return meta.Put(keyRev, rb[:])
	})
	if err != nil {
		return 0, boltErr(err)
	}
	b.fanOut(Event{Key: key, ModRev: rev, Deleted: deleted})
	return rev, nil
}

func (b *Bolt) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return boltErr(b.db.View(fn))
}

func decodeEntry(key string, v []byte) (Entry, error) {
	if len(v) < 8 {
		return Entry{}, fmt.Errorf("key %q: stored value is %d bytes, shorter than its revision", key, len(v))
	}
	return Entry{Key: key, ModRev: binary.BigEndian.Uint64(v), Value: bytes.Clone(v[8:])}, nil
}

// boltErr maps bbolt's closed-database error to ErrClosed.
func boltErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Close implements Store.
func (b *Bolt) Close() error {
	b.closeOnce.Do(func() {
		b.routines.Stop()
		b.cancel()
		b.routines.Wait()
		if err := b.db.Close(); err != nil {
			b.closeErr = fmt.Errorf("store: close %q: %w", b.path, err)
		}
	})
	return b.closeErr
}

// boltWatcher is one Watch on a Bolt store. Writers append to queue (never
// blocking: past maxWatchQueue the queue becomes one Reset) and poke wake;
// the watcher's goroutine moves the queue to the consumer's channel.
type boltWatcher struct {
	prefix string
	wake   chan struct{} // capacity 1

	mu    sync.Mutex // guards queue
	queue []Event
}

// Watch implements Store.
func (b *Bolt) Watch(ctx context.Context, prefix string) (<-chan Event, error) {
	w := &boltWatcher{prefix: prefix, wake: make(chan struct{}, 1)}
	out := make(chan Event)
	// Register under writeMu so that no write is between "before Watch"
	// and "after Watch".
	b.writeMu.Lock()
	b.watchMu.Lock()
	b.watchers[w] = struct{}{}
	b.watchMu.Unlock()
	b.writeMu.Unlock()
	if !b.routines.Go(func() { b.runWatcher(ctx, w, out) }) {
		b.dropWatcher(w)
		return nil, fmt.Errorf("store: watch %q: %w", prefix, ErrClosed)
	}
	return out, nil
}

func (b *Bolt) dropWatcher(w *boltWatcher) {
	b.watchMu.Lock()
	delete(b.watchers, w)
	b.watchMu.Unlock()
}

// fanOut queues ev for every watcher whose prefix it matches. writeMu held
// on entry.
func (b *Bolt) fanOut(ev Event) {
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	for w := range b.watchers {
		if len(ev.Key) < len(w.prefix) || ev.Key[:len(w.prefix)] != w.prefix {
			continue
		}
		w.mu.Lock()
		if len(w.queue) >= maxWatchQueue {
			w.queue = append(w.queue[:0], Event{Reset: true})
		}
		w.queue = append(w.queue, ev)
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

func (b *Bolt) runWatcher(ctx context.Context, w *boltWatcher, out chan<- Event) {
	defer close(out)
	defer b.dropWatcher(w)
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.ctx.Done():
			return
		case <-w.wake:
		}
		w.mu.Lock()
		batch := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, ev := range batch {
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			case <-b.ctx.Done():
				return
			}
		}
	}
}
