package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// embeddedReadyTimeout bounds how long StartEmbedded waits for the server.
const embeddedReadyTimeout = 10 * time.Second

// EmbeddedConfig configures StartEmbedded.
type EmbeddedConfig struct {
	// StoreDir is the JetStream store directory. Required.
	StoreDir string
	// Listen is "host:port" on which the server also accepts TCP clients
	// (port 0: a random free port; see ClientURL). Zero: no TCP listener,
	// in-process connections (Connect) only.
	Listen string
	// Logger receives the server's log: warnings and errors at their
	// level, everything else (notices, debug) at debug level.
	// Zero: the server does not log.
	Logger *slog.Logger
	// MaxStore bounds the bytes JetStream keeps in StoreDir. A publish
	// beyond it is refused with broker.ErrStorageFull until messages are
	// deleted (they expire, or are acked on an interest stream). Zero: 75%
	// of what the store could use at start, its file system's free space
	// plus what it holds already (nats-server's own rule, but fixed here at
	// start, so that it does not shrink when JetStream restarts on a fuller
	// disk).
	MaxStore int64
	// SyncInterval is how often the store fsyncs its files. Zero: every
	// write is fsynced before the publish is acked (nats-server's
	// sync_always), so an acked publish survives a power loss. A positive
	// interval writes each message to the operating system before the ack
	// (it survives a crash of this process) but to the disk only every
	// interval: a power loss or kernel crash can lose up to that much of
	// acked messages. nats-server's own default is 2 minutes.
	SyncInterval time.Duration
}

// Embedded is a nats-server with JetStream running in this process: what
// msgmesh uses when no broker is configured, and what tests use.
type Embedded struct {
	srv      *server.Server
	shutdown sync.Once
	store    *storeWatch // see storage.go
}

// StartEmbedded starts a nats-server with JetStream enabled, storing in
// cfg.StoreDir, and waits (at most 10 s) until it accepts connections.
// Signal handling is off; logging is off unless cfg.Logger is set.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsbroker: embedded: StoreDir is required")
	}
	if cfg.MaxStore < 0 || cfg.SyncInterval < 0 {
		return nil, fmt.Errorf("natsbroker: embedded: MaxStore %d and SyncInterval %v must not be negative", cfg.MaxStore, cfg.SyncInterval)
	}
	maxStore, err := storeLimit(cfg.StoreDir, cfg.MaxStore)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: embedded: %w", err)
	}
	opts := &server.Options{
		ServerName:        "msgmesh-embedded",
		JetStream:         true,
		StoreDir:          cfg.StoreDir,
		JetStreamMaxStore: maxStore,
		SyncAlways:        cfg.SyncInterval == 0,
		SyncInterval:      cfg.SyncInterval,
		NoSigs:            true,
		NoLog:             cfg.Logger == nil,
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, portStr, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("natsbroker: embedded: Listen %q: %w", cfg.Listen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 0 || port > 65535 {
			return nil, fmt.Errorf("natsbroker: embedded: Listen %q: bad port", cfg.Listen)
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, port
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: embedded: %w", err)
	}
	if cfg.Logger != nil {
		srv.SetLogger(slogServerLogger{cfg.Logger.With("component", "nats-server")}, true, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(embeddedReadyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("natsbroker: embedded: server not ready after %v (store %s, listen %q)",
			embeddedReadyTimeout, cfg.StoreDir, cfg.Listen)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("natsbroker: embedded: JetStream did not start (store %s)", cfg.StoreDir)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Embedded{srv: srv, store: watchStore(srv, cfg.StoreDir, maxStore, log)}, nil
}

// Connect opens an in-process connection to the server (no TCP). The
// caller closes it.
func (e *Embedded) Connect() (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(e.srv), nats.Name("msgmesh-inprocess"))
	if err != nil {
		return nil, fmt.Errorf("natsbroker: embedded: connect: %w", err)
	}
	return nc, nil
}

// ClientURL is the URL TCP clients connect to, "" without a listener.
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// MaxStore is the store's limit in bytes (EmbeddedConfig.MaxStore, or the
// one chosen at start).
func (e *Embedded) MaxStore() int64 { return e.store.maxStore }

// Sync says when the store fsyncs: "always" or "every <interval>".
func (e *Embedded) Sync() string {
	if c := e.store.jsCfg; !c.SyncAlways {
		return "every " + c.SyncInterval.String()
	}
	return "always"
}

// StoreErr says why the store cannot take writes right now, nil while it
// can: its file system is short of space (wrapping broker.ErrStorageFull),
// or JetStream is restarting after write errors (broker.ErrUnavailable).
// Brokers with Config.Embedded refuse publishes with it meanwhile.
func (e *Embedded) StoreErr() error { return e.store.storeErr() }

// Shutdown stops the server and waits until it has stopped. Idempotent.
func (e *Embedded) Shutdown() {
	e.shutdown.Do(func() {
		e.store.stop()
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	})
}

// slogServerLogger routes nats-server's log to slog. Notices go to debug
// level: the embedded server is an implementation detail of msgmesh, but
// its warnings and errors (store full, ...) matter to the operator.
type slogServerLogger struct{ l *slog.Logger }

func (s slogServerLogger) log(level slog.Level, format string, v []any) {
	if s.l.Enabled(context.Background(), level) {
		s.l.Log(context.Background(), level, fmt.Sprintf(format, v...))
	}
}

func (s slogServerLogger) Noticef(format string, v ...any) { s.log(slog.LevelDebug, format, v) }
func (s slogServerLogger) Warnf(format string, v ...any)   { s.log(slog.LevelWarn, format, v) }
func (s slogServerLogger) Fatalf(format string, v ...any)  { s.log(slog.LevelError, format, v) }
func (s slogServerLogger) Errorf(format string, v ...any)  { s.log(slog.LevelError, format, v) }
func (s slogServerLogger) Debugf(format string, v ...any)  { s.log(slog.LevelDebug, format, v) }
func (s slogServerLogger) Tracef(format string, v ...any)  { s.log(slog.LevelDebug, format, v) }
