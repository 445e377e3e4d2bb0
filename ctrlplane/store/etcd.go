package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/msgmesh/msgmesh/core"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultEtcdPrefix is where the control plane keeps its keys in etcd.
const DefaultEtcdPrefix = "/msgmesh/ctrlplane/"

// Backoff of a watch that restarts after it ended (compaction, lost
// leader, closed stream).
const (
	etcdWatchRetryMin = 50 * time.Millisecond
	etcdWatchRetryMax = 5 * time.Second
)

// EtcdConfig says how to reach an etcd cluster.
type EtcdConfig struct {
	// Endpoints are host:port of the cluster's client URLs (plain HTTP;
	// TLS and etcd authentication are not supported yet).
	Endpoints []string
	// Prefix is prepended to every key. Default DefaultEtcdPrefix.
	Prefix string
	// DialTimeout bounds OpenEtcd's first contact. Default 5 s.
	DialTimeout time.Duration
	// Log gets watch restarts. Default: discard.
	Log *slog.Logger
}

// Etcd is the store of replicated control planes: keys live in an etcd
// cluster, revisions are etcd revisions, and watches are etcd watches, so
// every replica sees every other replica's writes.
type Etcd struct {
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger

	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	routines core.Routines

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*Etcd)(nil)

// OpenEtcd connects to the cluster and checks that it answers within
// DialTimeout.
func OpenEtcd(ctx context.Context, cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: no etcd endpoints", ErrBadSpec)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultEtcdPrefix
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		Logger:      zap.NewNop(),
		// Notice a dead member in seconds and move to another.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("store: etcd %v: %w", cfg.Endpoints, err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	_, err = cli.Get(pctx, cfg.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("store: etcd %v: not reachable: %w", cfg.Endpoints, err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	return &Etcd{cli: cli, prefix: cfg.Prefix, log: cfg.Log, ctx: sctx, cancel: scancel}, nil
}

// Get implements Store.
func (s *Etcd) Get(ctx context.Context, key string) (Entry, error) {
	if s.ctx.Err() != nil {
		return Entry{}, fmt.Errorf("store: get %q: %w", key, ErrClosed)
	}
	resp, err := s.cli.Get(ctx, s.prefix+key)
	if err != nil {
		return Entry{}, fmt.Errorf("store: get %q: %w", key, s.err(err))
	}
	if len(resp.Kvs) == 0 {
		return Entry{}, fmt.Errorf("store: get %q: %w", key, ErrNotFound)
	}
	kv := resp.Kvs[0]
	return Entry{Key: key, Value: kv.Value, ModRev: uint64(kv.ModRevision)}, nil
}

// List implements Store.
func (s *Etcd) List(ctx context.Context, prefix string) ([]Entry, error) {
	if s.ctx.Err() != nil {
		return nil, fmt.Errorf("store: list %q: %w", prefix, ErrClosed)
	}
	resp, err := s.cli.Get(ctx, s.prefix+prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("store: list %q: %w", prefix, s.err(err))
	}
	out := make([]Entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, Entry{Key: strings.TrimPrefix(string(kv.Key), s.prefix), Value: kv.Value, ModRev: uint64(kv.ModRevision)})
	}
	return out, nil
}

// Put implements Store: one etcd transaction comparing key's
// mod_revision with prev (etcd reports 0 for a missing key).
func (s *Etcd) Put(ctx context.Context, key string, value []byte, prev uint64) (uint64, error) {
	if key == "" {
		return 0, fmt.Errorf("store: put: empty key")
	}
	if s.ctx.Err() != nil {
		return 0, fmt.Errorf("store: put %q: %w", key, ErrClosed)
	}
	k := s.prefix + key
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", int64(prev))).
		Then(clientv3.OpPut(k, string(value))).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("store: put %q: %w", key, s.err(err))
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("store: put %q: %w", key, ErrConflict)
	}
	return uint64(resp.Header.Revision), nil
}

// Delete implements Store.
func (s *Etcd) Delete(ctx context.Context, key string, prev uint64) (uint64, error) {
	if s.ctx.Err() != nil {
		return 0, fmt.Errorf("store: delete %q: %w", key, ErrClosed)
	}
	k := s.prefix + key
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", int64(prev))).
		Then(clientv3.OpDelete(k)).
		Else(clientv3.OpGet(k, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("store: delete %q: %w", key, s.err(err))
	}
	switch {
	case !resp.Succeeded && resp.Responses[0].GetResponseRange().Count == 0:
		return 0, fmt.Errorf("store: delete %q: %w", key, ErrNotFound)
	case !resp.Succeeded:
		return 0, fmt.Errorf("store: delete %q: %w", key, ErrConflict)
	case resp.Responses[0].GetResponseDeleteRange().Deleted == 0:
		return 0, fmt.Errorf("store: delete %q: %w", key, ErrNotFound)
	}
	return uint64(resp.Header.Revision), nil
}

// Watch implements Store. It reads the current revision first and watches
// from the next one, so no write after Watch returns is missed however
// late etcd sets the watch up.
func (s *Etcd) Watch(ctx context.Context, prefix string) (<-chan Event, error) {
	rev, err := s.currentRev(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: watch %q: %w", prefix, err)
	}
	out := make(chan Event)
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	started := s.routines.Go(func() {
		defer stop()
		defer cancel()
		s.runWatch(wctx, prefix, rev, out)
	})
	if !started {
		stop()
		cancel()
		return nil, fmt.Errorf("store: watch %q: %w", prefix, ErrClosed)
	}
	return out, nil
}

func (s *Etcd) currentRev(ctx context.Context) (int64, error) {
	if s.ctx.Err() != nil {
		return 0, ErrClosed
	}
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, s.err(err)
	}
	return resp.Header.Revision, nil
}

// runWatch forwards etcd watch events from revision rev+1 on. When the
// etcd watch ends (compaction, lost leader, stream error) it starts again
// from the current revision after a backoff and sends a Reset first.
func (s *Etcd) runWatch(ctx context.Context, prefix string, rev int64, out chan<- Event) {
	defer close(out)
	send := func(ev Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	backoff := etcdWatchRetryMin
	for {
		// WithRequireLeader: a member cut off from its cluster ends the
		// watch instead of going silent.
		wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.prefix+prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		var werr error
		for wr := range wch {
			if werr = wr.Err(); werr != nil {
				break
			}
			for _, ev := range wr.Events {
				e := Event{Key: strings.TrimPrefix(string(ev.Kv.Key), s.prefix), ModRev: uint64(ev.Kv.ModRevision), Deleted: ev.Type == clientv3.EventTypeDelete}
				if !send(e) {
					return
				}
				rev = ev.Kv.ModRevision
				backoff = etcdWatchRetryMin
			}
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("etcd watch ended; restarting", "prefix", prefix, "after_rev", rev, "err", werr)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, etcdWatchRetryMax)
			r, err := s.currentRev(ctx)
			if err == nil {
				rev = r
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("etcd watch: reading the current revision", "err", err)
		}
		if !send(Event{Reset: true}) {
			return
		}
	}
}

// err wraps ErrClosed around the errors of a closed client.
func (s *Etcd) err(err error) error {
	if s.ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ErrClosed, err)
	}
	return err
}

// Close implements Store.
func (s *Etcd) Close() error {
	s.closeOnce.Do(func() {
		s.routines.Stop()
		s.cancel()
		s.routines.Wait()
		if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			s.closeErr = fmt.Errorf("store: close etcd client: %w", err)
		}
	})
	return s.closeErr
}
