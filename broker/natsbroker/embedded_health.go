package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/msgmesh/msgmesh/broker"
)

// ErrStoreDamaged: the embedded server found its JetStream store damaged
// (a corrupt or missing message block, a stream it could not load, lost
// messages). nats-server repairs what it can and serves on; the messages
// it could not read are gone. Embedded.Check returns it until the process
// restarts (see StoreProblems).
var ErrStoreDamaged = errors.New("natsbroker: embedded JetStream store damaged")

// maxStoreProblems bounds the problems kept (a badly damaged store can
// report one per message block).
const maxStoreProblems = 20

// storeDamageSigns are the parts of nats-server's warnings that mean a
// store file was found damaged or data lost (server/filestore.go and
// jetstream.go, v2.15). Warnings a crash leaves behind ("Stream state
// outdated ... will rebuild": the index written at a clean shutdown is
// older than the blocks) are not among them: a SIGKILL is not damage.
var storeDamageSigns = []string{
	"corrupt",                     // indexCacheBuf corrupt (record) state, corrupt subject
	"could not locate msg block",  // a block the stream's index lists is gone
	"checksum did not match",      // the stream's index file (then rebuilt from the blocks)
	"checksums do not match",      // a stream's or consumer's meta file: it is not loaded
	"internal inconsistency",      // stream state on recover or write
	"loadblock error",             // a block that cannot be read
	"error reading metafile",      // a stream that is not loaded
	"missing stream metafile",     //
	"missing stream checksum",     //
	"error unmarshalling stream",  //
	"error recreating stream",     //
	"missing consumer metafile",   // a consumer that is not loaded: its group restarts
	"missing consumer checksum",   //
	"error reading consumer meta", //
	"error unmarshalling consumer",
	"error adding consumer",
}

// isStoreDamage reports whether a nats-server warning or error says the
// store is damaged.
func isStoreDamage(msg string) bool {
	m := strings.ToLower(msg)
	for _, s := range storeDamageSigns {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// storeHealth collects the damage the embedded server reports about its
// store: through its log (healthLogger) while it loads the store and
// later, and by looking at the streams once it runs (checkStreams).
type storeHealth struct {
	storeDir string
	log      *slog.Logger // never nil

	mu       sync.Mutex
	problems []string
	more     int // problems past maxStoreProblems
}

func newStoreHealth(storeDir string, log *slog.Logger) *storeHealth {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &storeHealth{storeDir: storeDir, log: log}
}

// add records a problem and logs it as an error.
func (h *storeHealth) add(problem string) {
	h.mu.Lock()
	if len(h.problems) < maxStoreProblems {
		h.problems = append(h.problems, problem)
	} else {
		h.more++
	}
	h.mu.Unlock()
	h.log.Error("embedded NATS JetStream store is damaged; messages in it may be lost (docs/operations.md)",
		"problem", problem, "store", h.storeDir)
}

// snapshot returns the problems recorded so far and how many more there
// were.
func (h *storeHealth) snapshot() ([]string, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.problems...), h.more
}

// serverLogger is the nats-server logger: the server's log goes to l (as
// slogServerLogger routes it, nothing when l is nil), and its warnings
// and errors about a damaged store are also recorded, and logged as
// errors, by h.
func (h *storeHealth) serverLogger(l *slog.Logger) server.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return healthLogger{slogServerLogger: slogServerLogger{l.With("component", "nats-server")}, h: h}
}

type healthLogger struct {
	slogServerLogger
	h *storeHealth
}

func (l healthLogger) Warnf(format string, v ...any)  { l.check(slog.LevelWarn, format, v) }
func (l healthLogger) Errorf(format string, v ...any) { l.check(slog.LevelError, format, v) }
func (l healthLogger) Fatalf(format string, v ...any) { l.check(slog.LevelError, format, v) }

func (l healthLogger) check(level slog.Level, format string, v []any) {
	msg := fmt.Sprintf(format, v...)
	if isStoreDamage(msg) {
		l.h.add(strings.TrimSpace(msg)) // logged there, as an error
		return
	}
	l.log(level, "%s", []any{msg})
}

// checkStreams looks at the streams of the running server: a stream that
// reports lost messages, and a stream directory in the store that the
// server did not load, are problems.
func (h *storeHealth) checkStreams(srv *server.Server) {
	info, err := srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Limit: 1 << 20})
	if err != nil {
		h.add(fmt.Sprintf("cannot list the streams to check them: %v", err))
		return
	}
	loaded := map[string]bool{}
	for _, acc := range info.AccountDetails {
		for _, st := range acc.Streams {
			loaded[filepath.Join(acc.Name, "streams", st.Name)] = true
			if lost := st.State.Lost; lost != nil && (len(lost.Msgs) > 0 || lost.Bytes > 0) {
				h.add(fmt.Sprintf("stream %s (account %s) lost %d messages (%d bytes) while loading its store", st.Name, acc.Name, len(lost.Msgs), lost.Bytes))
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(h.storeDir, server.JetStreamStoreDir, "*", "streams", "*"))
	for _, d := range dirs {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			continue
		}
		rel, err := filepath.Rel(filepath.Join(h.storeDir, server.JetStreamStoreDir), d)
		if err == nil && !loaded[rel] {
			h.add(fmt.Sprintf("stream directory %s is in the store but the server did not load it (see its earlier warnings); its messages are not available", d))
		}
	}
}

// StoreProblems lists the damage the server reported about its store
// since it started (at most 20; more counts the rest). Empty: none.
func (e *Embedded) StoreProblems() (problems []string, more int) {
	return e.health.snapshot()
}

// Check implements broker.Checker for the embedded server itself: an
// error while it is not running, while JetStream is off (nats-server
// turns JetStream off when its store cannot be written, out of space for
// one), while its store cannot take writes (StoreErr: a full disk, a
// restart after write errors), or once it has reported store damage (ErrStoreDamaged, until the
// process restarts: a restart after an operator looked is the
// acknowledgement; the store was repaired at the load that reported it).
// It does not block.
func (e *Embedded) Check(context.Context) error {
	srv := e.server()
	switch {
	case !srv.Running():
		return fmt.Errorf("natsbroker: embedded server is not running: %w", broker.ErrUnavailable)
	case !srv.JetStreamEnabled():
		return fmt.Errorf("natsbroker: embedded server has JetStream disabled (it turns it off when its store cannot be written; see its log): %w", broker.ErrUnavailable)
	}
	if err := e.StoreErr(); err != nil {
		return err
	}
	problems, more := e.health.snapshot()
	if len(problems) == 0 {
		return nil
	}
	shown := problems
	if len(shown) > 3 {
		shown, more = shown[:3], more+len(shown)-3
	}
	msg := strings.Join(shown, "; ")
	if more > 0 {
		msg += fmt.Sprintf("; and %d more", more)
	}
	return fmt.Errorf("%w in %s: %s. nats-server repaired what it could and serves on, without the messages it could not read; restart after checking (docs/operations.md)",
		ErrStoreDamaged, e.health.storeDir, msg)
}

var _ broker.Checker = (*Embedded)(nil)
