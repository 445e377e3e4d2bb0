package natsbroker

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/topology"
)

// How the embedded server's store is watched (storeWatch).
const (
	// storeCheckInterval is how often the watch looks at the store.
	storeCheckInterval = time.Second
	// restartMinBackoff and restartMaxBackoff space out attempts to
	// restart JetStream that failed.
	restartMinBackoff = time.Second
	restartMaxBackoff = time.Minute
	// reserveMin and reserveMax bound the free space the store keeps in
	// reserve: 1% of its file system's size, within these bounds.
	reserveMin = 1 << 20
	reserveMax = 1 << 30
)

// storeLimit is the JetStream storage limit for a store in dir: configured
// if set, else 75% of what the store could use now (the file system's free
// space plus what dir holds already).
func storeLimit(dir string, configured int64) (int64, error) {
	if configured > 0 {
		return configured, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	free, _, err := diskSpace(dir)
	if err != nil {
		return 0, err
	}
	held, err := dirSize(dir)
	if err != nil {
		return 0, err
	}
	return max((free+held)/4*3, 1), nil
}

// diskSpace returns the bytes available to this process, and the size, of
// the file system holding dir.
func diskSpace(dir string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// dirSize sums the sizes of the files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n, err
}

// reserveFor is the free space the store keeps in reserve on a file system
// of total bytes: while less is free, publishes are refused before they can
// fail half-way in nats-server (whose file store, once a write failed for
// lack of space, refuses every later write to that stream until JetStream
// restarts).
func reserveFor(total int64) int64 {
	return min(max(total/100, reserveMin), reserveMax)
}

// noSpace reports whether a write error says the file system is full or
// over quota (the server reports errors as text).
func noSpace(msg string) bool {
	return strings.Contains(msg, "no space left on device") || strings.Contains(msg, "disk quota exceeded")
}

// storeWatch watches the embedded server's store: it answers for the
// store while it cannot take writes, and brings JetStream back once it can.
//
// nats-server handles a full disk in two ways. At its storage limit
// (EmbeddedConfig.MaxStore) it refuses publishes with "insufficient
// resources" and takes them again as soon as space is freed: the adapter
// maps that refusal to broker.ErrStorageFull, and nothing here is needed.
// When the file system itself is full (something else filled it, or the
// limit is above what the disk holds), a write fails: the stream keeps
// that error and refuses every later write, without answering the
// publish, until it is loaded again; and some failures (a full disk under
// a mirror, permissions) shut JetStream down until the server restarts.
// So the watch:
//
//   - refuses publishes (Broker.Publish asks storeErr) while the file
//     system has less free than its reserve (reserveFor), so that writes
//     rarely get that far;
//   - notices streams with write errors (the server's health check) and a
//     disabled JetStream, and answers publishes with ErrStorageFull (while
//     space is short) or ErrUnavailable meanwhile;
//   - restarts the server once twice the reserve is free (and at least
//     reserveMin): a new server on the same store and port, which loads
//     every stream and consumer from disk. Connections reconnect to it,
//     and the adapter's consumers pull again once they have.
//     (Enabling JetStream again in the same server would do too, but
//     nats-server races with the requests it is serving while it does.)
//
// One goroutine (run) does all checks and restarts; Embedded.Shutdown
// stops it. mu guards the state the Brokers read.
type storeWatch struct {
	e        *Embedded
	dir      string
	maxStore int64
	log      *slog.Logger
	// reserve is reserveFor; tests switch the reserve off to reach the
	// write errors it is there to avoid.
	reserve func(total int64) int64

	quit chan struct{}
	done chan struct{}
	once sync.Once

	// checkMu serialises check: the watch's own ticks, and a Broker
	// asking right after a publish got no answer (checkNow).
	checkMu sync.Mutex

	mu      sync.Mutex
	err     error             // nil while the store takes writes
	bad     map[string]string // stream → write error, from the last check
	retryAt time.Time         // no restart attempt before this
	backoff time.Duration
}

func watchStore(e *Embedded, dir string, maxStore int64, log *slog.Logger) *storeWatch {
	w := &storeWatch{
		e:        e,
		dir:      dir,
		maxStore: maxStore,
		log:      log.With("component", "nats-store", "store", dir),
		reserve:  reserveFor,
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	w.checkNow() // before the first publish can come
	go w.run()
	return w
}

func (w *storeWatch) run() {
	defer close(w.done)
	t := time.NewTicker(storeCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-w.quit:
			return
		case <-t.C:
		}
		w.checkNow()
	}
}

// stop ends the watch and waits for it. Idempotent.
func (w *storeWatch) stop() {
	w.once.Do(func() { close(w.quit) })
	<-w.done
}

// storeErr is nil while the store takes writes; otherwise it says why not,
// wrapping broker.ErrStorageFull or broker.ErrUnavailable.
func (w *storeWatch) storeErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// streamFull reports whether the last check found stream unable to write
// for lack of space.
func (w *storeWatch) streamFull(stream string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	msg, ok := w.bad[stream]
	return ok && noSpace(msg)
}

// checkNow looks at the store once and restarts the server when it should.
func (w *storeWatch) checkNow() {
	w.checkMu.Lock()
	defer w.checkMu.Unlock()
	w.check()
}

// check does checkNow's work. checkMu held.
func (w *storeWatch) check() {
	free, total, err := diskSpace(w.dir)
	if err != nil {
		w.log.Warn("cannot read the store's free space", "error", err)
		return
	}
	reserve := w.reserve(total)
	srv := w.e.server()
	enabled := srv.JetStreamEnabled()
	bad := map[string]string{}
	if enabled {
		h := srv.Healthz(&server.HealthzOptions{Details: true})
		for _, e := range h.Errors {
			if e.Stream != "" && strings.Contains(e.Error, "write error") {
				bad[e.Stream] = e.Error
			}
		}
	}
	resume := max(2*reserve, reserveMin)
	cannotWrite := !enabled || len(bad) > 0
	w.mu.Lock()
	wasFull := w.err != nil
	w.bad = bad
	if free < reserve || ((wasFull || cannotWrite) && free < resume) {
		// Short of space, or not yet enough free again.
		w.err = w.fullErr(free, resume, enabled, bad)
		w.mu.Unlock()
		if !wasFull {
			w.log.Error("store full: publishes are refused until space is freed", "free", topology.ByteSize(free), "resume_at", topology.ByteSize(resume))
		}
		return
	}
	if !cannotWrite {
		w.err = nil
		w.backoff = 0
		w.mu.Unlock()
		if wasFull {
			w.log.Info("store takes writes again", "free", topology.ByteSize(free))
		}
		return
	}
	// JetStream is off, or streams hold write errors, and there is space:
	// restart it (which reloads every stream from disk).
	w.err = fmt.Errorf("natsbroker: embedded: %w: the server is restarting after it failed to write to %s (%s)",
		broker.ErrUnavailable, w.dir, describeBad(enabled, bad))
	if time.Now().Before(w.retryAt) {
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()

	err = w.e.restart()

	w.mu.Lock()
	if err != nil {
		w.backoff = min(max(2*w.backoff, restartMinBackoff), restartMaxBackoff)
		w.retryAt = time.Now().Add(w.backoff)
		w.mu.Unlock()
		w.log.Error("restarting the embedded server failed; trying again", "error", err, "retry_in", w.backoff)
		return
	}
	w.err, w.bad, w.backoff = nil, nil, 0
	w.mu.Unlock()
	w.log.Warn("embedded server restarted after write errors; publishes and consumers resume", "free", topology.ByteSize(free), "was", describeBad(enabled, bad))
}

// restart replaces the server by a new one on the same store and port.
// Connections lose the old one and reconnect to the new one.
func (e *Embedded) restart() error {
	old := e.server()
	old.Shutdown()
	old.WaitForShutdown()
	srv, err := startServer(e.opts, e.logger, e.health)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
	return nil
}

// fullErr is the error publishes get while the store is short of space.
// w.mu held.
func (w *storeWatch) fullErr(free, resume int64, enabled bool, bad map[string]string) error {
	msg := fmt.Sprintf("the file system holding the embedded broker's store (%s) has %s free; publishes resume once %s is free",
		w.dir, topology.ByteSize(free), topology.ByteSize(resume))
	if len(bad) > 0 || !enabled {
		msg += " (" + describeBad(enabled, bad) + "; the server restarts by itself then)"
	}
	return fmt.Errorf("natsbroker: embedded: %w: %s; nothing was stored", broker.ErrStorageFull, msg)
}

func describeBad(enabled bool, bad map[string]string) string {
	if !enabled {
		return "JetStream is disabled"
	}
	parts := make([]string, 0, len(bad))
	for _, e := range bad {
		parts = append(parts, e)
	}
	if len(parts) > 3 {
		parts = append(parts[:3], fmt.Sprintf("and %d more", len(parts)-3))
	}
	return strings.Join(parts, "; ")
}

// limitReason explains a refusal at the store's limit (MaxStore).
func (w *storeWatch) limitReason() string {
	used := "?"
	if info, err := w.e.server().Jsz(nil); err == nil {
		used = topology.ByteSize(int64(info.Store)).String()
	}
	return fmt.Sprintf("the embedded broker's store (%s) holds %s, its limit (max_store) is %s",
		w.dir, used, topology.ByteSize(w.maxStore))
}
