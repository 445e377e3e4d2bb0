package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// embeddedReadyTimeout bounds how long StartEmbedded waits for the server.
const embeddedReadyTimeout = 10 * time.Second

// inProcessReconnectWait is how long an in-process connection waits
// between attempts to reconnect while the server is being replaced.
const inProcessReconnectWait = 50 * time.Millisecond

// EmbeddedConfig configures StartEmbedded.
type EmbeddedConfig struct {
	// StoreDir is the JetStream store directory. Required.
	StoreDir string
	// Listen is "host:port" on which the server also accepts TCP clients
	// (port 0: a random free port; see ClientURL). Zero: no TCP listener,
	// in-process connections (Connect) only.
	Listen string
	// User and Password, when set, are required of every client, on TCP
	// and in process (Connect presents them): set them whenever Listen is,
	// or whoever reaches the address controls every stream. Zero: no
	// authentication.
	User, Password string
	// Logger receives the server's log: warnings and errors at their
	// level, everything else (notices, debug) at debug level, and damage
	// the server reports about its store as errors (see Embedded.Check).
	// Zero: the server does not log.
	Logger *slog.Logger
	// MaxPayload is the server's max_payload: the largest message, body
	// and headers, it takes (see PayloadFor). Zero: nats-server's default
	// (1 MiB).
	MaxPayload int
	// MaxStore bounds the bytes JetStream keeps in StoreDir. A publish
	// beyond it is refused with broker.ErrStorageFull until messages are
	// deleted (they expire, or are acked on an interest stream). Zero: 75%
	// of what the store could use at start, its file system's free space
	// plus what it holds already (nats-server's own rule, but fixed here at
	// start, so that it does not shrink when the server restarts on a fuller
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
// msgmesh uses when no broker is configured, and what tests use. After
// write errors it may replace the server by a new one on the same store and
// port (see storage.go); connections from Connect, and TCP clients,
// reconnect to it.
type Embedded struct {
	opts           *server.Options // to start the server again; the port fixed
	logger         *slog.Logger    // nil: the server does not log
	health         *storeHealth    // embedded_health.go
	shutdown       sync.Once
	user, password string      // what Connect presents; "" without authentication
	store          *storeWatch // see storage.go

	mu  sync.Mutex // guards srv
	srv *server.Server
}

// StartEmbedded starts a nats-server with JetStream enabled, storing in
// cfg.StoreDir, and waits (at most 10 s) until it accepts connections.
// Signal handling is off; logging is off unless cfg.Logger is set.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsbroker: embedded: StoreDir is required")
	}
	if cfg.MaxPayload < 0 || cfg.MaxPayload > math.MaxInt32 {
		return nil, fmt.Errorf("natsbroker: embedded: MaxPayload %d is out of range", cfg.MaxPayload)
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
		MaxPayload:        int32(cfg.MaxPayload),
		Username:          cfg.User,
		Password:          cfg.Password,
	}
	if (cfg.User == "") != (cfg.Password == "") {
		return nil, errors.New("natsbroker: embedded: set both User and Password, or neither")
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
	health := newStoreHealth(cfg.StoreDir, cfg.Logger)
	srv, err := startServer(opts, cfg.Logger, health)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: embedded: %w (store %s, listen %q)", err, cfg.StoreDir, cfg.Listen)
	}
	if addr, ok := srv.Addr().(*net.TCPAddr); ok {
		opts.Port = addr.Port // a restarted server listens where this one does
	}
	e := &Embedded{opts: opts, logger: cfg.Logger, srv: srv, health: health, user: cfg.User, password: cfg.Password}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e.store = watchStore(e, cfg.StoreDir, maxStore, log)
	return e, nil
}

// startServer starts a server with opts and waits until it serves
// connections with JetStream enabled. Its log goes to logger (nil: none)
// and through health, which records the damage it reports about its store.
func startServer(opts *server.Options, logger *slog.Logger, health *storeHealth) (*server.Server, error) {
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	srv.SetLogger(health.serverLogger(logger), logger != nil, false)
	srv.Start()
	if !srv.ReadyForConnections(embeddedReadyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("server not ready after %v", embeddedReadyTimeout)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("JetStream did not start")
	}
	health.checkStreams(srv)
	return srv, nil
}

// server is the running server.
func (e *Embedded) server() *server.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.srv
}

// InProcessConn connects to the server running now; Connect's connections
// call it again to reconnect after the server was replaced.
func (e *Embedded) InProcessConn() (net.Conn, error) { return e.server().InProcessConn() }

// Connect opens an in-process connection to the server (no TCP). The
// caller closes it.
func (e *Embedded) Connect() (*nats.Conn, error) {
	opts := []nats.Option{nats.InProcessServer(e), nats.Name("msgmesh-inprocess"),
		nats.MaxReconnects(-1), nats.ReconnectWait(inProcessReconnectWait)}
	if e.user != "" {
		opts = append(opts, nats.UserInfo(e.user, e.password))
	}
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: embedded: connect: %w", err)
	}
	return nc, nil
}

// ClientURL is the URL TCP clients connect to, "" without a listener.
func (e *Embedded) ClientURL() string {
	srv := e.server()
	if srv.Addr() == nil {
		return ""
	}
	return srv.ClientURL()
}

// MaxStore is the store's limit in bytes (EmbeddedConfig.MaxStore, or the
// one chosen at start).
func (e *Embedded) MaxStore() int64 { return e.store.maxStore }

// Sync says when the store fsyncs: "always" or "every <interval>".
func (e *Embedded) Sync() string {
	if !e.opts.SyncAlways {
		return "every " + e.opts.SyncInterval.String()
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
		e.store.stop() // no server replaced after this
		srv := e.server()
		srv.Shutdown()
		srv.WaitForShutdown()
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
