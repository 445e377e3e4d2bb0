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
	// User and Password, when set, are required of every client, on TCP
	// and in process (Connect presents them): set them whenever Listen is,
	// or whoever reaches the address controls every stream. Zero: no
	// authentication.
	User, Password string
	// Logger receives the server's log: warnings and errors at their
	// level, everything else (notices, debug) at debug level.
	// Zero: the server does not log.
	Logger *slog.Logger
}

// Embedded is a nats-server with JetStream running in this process: what
// msgmesh uses when no broker is configured, and what tests use.
type Embedded struct {
	srv            *server.Server
	user, password string // what Connect presents; "" without authentication
	shutdown       sync.Once
}

// StartEmbedded starts a nats-server with JetStream enabled, storing in
// cfg.StoreDir, and waits (at most 10 s) until it accepts connections.
// Signal handling is off; logging is off unless cfg.Logger is set.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsbroker: embedded: StoreDir is required")
	}
	opts := &server.Options{
		ServerName: "msgmesh-embedded",
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      cfg.Logger == nil,
		Username:   cfg.User,
		Password:   cfg.Password,
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
	return &Embedded{srv: srv, user: cfg.User, password: cfg.Password}, nil
}

// Connect opens an in-process connection to the server (no TCP). The
// caller closes it.
func (e *Embedded) Connect() (*nats.Conn, error) {
	opts := []nats.Option{nats.InProcessServer(e.srv), nats.Name("msgmesh-inprocess")}
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
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// Shutdown stops the server and waits until it has stopped. Idempotent.
func (e *Embedded) Shutdown() {
	e.shutdown.Do(func() {
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
