package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/msgmesh/msgmesh/internal/boltfile"
)

// Entry is one key with its value and the revision of its last write.
type Entry struct {
	Key    string
	Value  []byte
	ModRev uint64
}

// Event is one change seen by a watch.
type Event struct {
	// Key is the key written or deleted; empty for a Reset.
	Key string
	// ModRev is the revision of the write (of the deletion for Deleted).
	ModRev uint64
	// Deleted: the key was deleted, not written.
	Deleted bool
	// Reset: the watch may have missed events before this one. The
	// consumer must treat every key under its prefix as changed.
	Reset bool
}

// Store is a versioned key-value store (see the package doc). Keys are
// non-empty strings; values are opaque bytes.
type Store interface {
	// Get returns key's entry, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) (Entry, error)
	// List returns the entries whose keys start with prefix, sorted by
	// key; an empty, non-nil slice when there are none.
	List(ctx context.Context, prefix string) ([]Entry, error)
	// Put writes value under key if key's current ModRev is prev (0: key
	// must not exist) and returns the write's revision. Otherwise it
	// writes nothing and returns an error wrapping ErrConflict.
	Put(ctx context.Context, key string, value []byte, prev uint64) (uint64, error)
	// Delete removes key if its current ModRev is prev and returns the
	// deletion's revision. It returns an error wrapping ErrNotFound if key
	// does not exist, ErrConflict if its ModRev is not prev.
	Delete(ctx context.Context, key string, prev uint64) (uint64, error)
	// Watch reports the writes and deletions under prefix made after
	// Watch returns, in revision order, and Reset events (see Event). The
	// channel is closed when ctx is done or the store is closed; the
	// consumer must keep receiving until then.
	Watch(ctx context.Context, prefix string) (<-chan Event, error)
	// Close stops every watch, waits for their goroutines and releases the
	// store. Safe to call more than once.
	Close() error
}

// Sentinel errors; callers branch on them with errors.Is.
var (
	// ErrNotFound: no such key.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: the key's ModRev was not the one the caller gave:
	// another write came first. Read again and retry.
	ErrConflict = errors.New("store: conflicting write")
	// ErrLocked: the bbolt file is held by another process (most likely
	// another ctrlplane on the same data directory).
	ErrLocked = errors.New("store: file is locked")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrCorrupt: the bbolt file is damaged (cut short, emptied,
	// overwritten) and was not opened; the message names the file and how
	// to recover (docs/operations.md).
	ErrCorrupt = boltfile.ErrCorrupt
	// ErrBadSpec: a --store value this package does not understand.
	ErrBadSpec = errors.New("store: bad store spec")
)

// BoltFile is the name of the bbolt file in the data directory.
const BoltFile = "ctrlplane.db"

// Open opens the store a --store value names:
//
//   - "" or "bolt": the bbolt file BoltFile in dataDir (created if needed);
//   - "etcd://host:port[,host:port...][/prefix]": an etcd cluster, keys
//     under prefix (default DefaultEtcdPrefix).
func Open(ctx context.Context, spec, dataDir string, log *slog.Logger) (Store, error) {
	switch {
	case spec == "" || spec == "bolt":
		if dataDir == "" {
			return nil, fmt.Errorf("%w: the bolt store needs a data directory", ErrBadSpec)
		}
		return OpenBolt(filepath.Join(dataDir, BoltFile))
	case strings.HasPrefix(spec, "etcd://"):
		endpoints, prefix, err := ParseEtcdSpec(spec)
		if err != nil {
			return nil, err
		}
		return OpenEtcd(ctx, EtcdConfig{Endpoints: endpoints, Prefix: prefix, Log: log})
	}
	return nil, fmt.Errorf("%w: %q: expected \"bolt\" or etcd://host:port[,host:port...][/prefix]", ErrBadSpec, spec)
}

// ParseEtcdSpec splits "etcd://h1:2379,h2:2379/prefix" into endpoints
// ("h1:2379", "h2:2379") and prefix ("/prefix/", DefaultEtcdPrefix when
// absent). Every endpoint needs a port.
func ParseEtcdSpec(spec string) (endpoints []string, prefix string, err error) {
	rest, ok := strings.CutPrefix(spec, "etcd://")
	if !ok {
		return nil, "", fmt.Errorf("%w: %q does not start with etcd://", ErrBadSpec, spec)
	}
	hosts, path, hasPath := strings.Cut(rest, "/")
	prefix = DefaultEtcdPrefix
	if hasPath && strings.Trim(path, "/") != "" {
		prefix = "/" + strings.Trim(path, "/") + "/"
	}
	for h := range strings.SplitSeq(hosts, ",") {
		if h == "" {
			return nil, "", fmt.Errorf("%w: %q: empty endpoint", ErrBadSpec, spec)
		}
		i := strings.LastIndexByte(h, ':')
		if i <= 0 || i == len(h)-1 || strings.ContainsAny(h, " @?#") {
			return nil, "", fmt.Errorf("%w: %q: endpoint %q is not host:port", ErrBadSpec, spec, h)
		}
		endpoints = append(endpoints, h)
	}
	return endpoints, prefix, nil
}
