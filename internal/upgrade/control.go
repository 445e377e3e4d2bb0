package upgrade

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"
)

// Step timeouts of a hot upgrade (docs/upgrade.md, "What happens").
const (
	// SettleTimeout bounds the freeze: apps answering what they hold,
	// calls in flight finishing, connections stopping at a boundary.
	SettleTimeout = 30 * time.Second
	// ReadyTimeout bounds the successor starting and adopting.
	ReadyTimeout = 60 * time.Second
)

// ErrHandoffFailed: the running process could not hand over (a component
// could not freeze); it stopped, the successor was told, and the process
// exits non-zero with the reason (docs/upgrade.md says what the operator
// does next).
var ErrHandoffFailed = errors.New("hot upgrade failed")

// controlName is the control socket's name in a Set: it moves too, so
// that the successor answers on the same socket file.
const controlName = "control"

// Control is the running process's end of the control socket.
type Control struct {
	ln  *net.UnixListener
	log *slog.Logger
}

// OpenControl adopts the control socket a predecessor handed over in from,
// or, with none, opens sock (replacing a stale socket file: call it only
// when Takeover found no live process).
func OpenControl(sock string, from *Set, log *slog.Logger) (*Control, error) {
	if from != nil {
		ln, err := from.TakeListener(controlName)
		if err != nil {
			return nil, err
		}
		if ul, ok := ln.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
			return &Control{ln: ul, log: log}, nil
		}
		if ln != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("upgrade: the control socket handed over is a %T", ln)
		}
	}
	ln, err := Listen(sock)
	if err != nil {
		return nil, err
	}
	return &Control{ln: ln, log: log}, nil
}

// Close stops listening; the socket file stays for a successor that holds
// the same socket.
func (c *Control) Close() { _ = c.ln.Close() }

// Status is a status answer naming this process and its listeners by name
// ("mesh", "http", "forwarding", "grpc", "rpc egress", "rpc ingress").
func Status(listeners map[string]string) Msg {
	return Msg{Op: OpStatus, PID: os.Getpid(), Listeners: listeners}
}

// Serve answers status requests with status() in the background until a
// successor asks to take over or msgmesh reload asks for a reload, and
// delivers that request. It stops when the Control is closed.
func (c *Control) Serve(status func() Msg) <-chan *Request {
	ch := make(chan *Request, 1)
	go func() { // ends when the listener closes or a takeover comes
		for {
			conn, err := c.ln.AcceptUnix()
			if err != nil {
				return // closed: the runtime stopped listening
			}
			if op := request(conn, status(), c.log); op != "" {
				ch <- &Request{c: conn, ctl: c, log: c.log, reload: op == OpReload}
				return
			}
			conn.Close()
		}
	}()
	return ch
}

// request reads a connection's requests, answering a status request,
// until one asks to take over or to reload (that op), or the peer goes
// away or dawdles ("").
func request(c *net.UnixConn, status Msg, log *slog.Logger) string {
	for range 2 {
		_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
		m, err := Read(c)
		if err != nil {
			return ""
		}
		switch m.Op {
		case OpStatus:
			log.Debug("control socket: status requested", "by_pid", m.PID)
			if Write(c, status) != nil {
				return ""
			}
		case OpTakeover:
			_ = c.SetReadDeadline(time.Time{})
			log.Info("a successor asks to take over", "pid", m.PID)
			return m.Op
		case OpReload:
			_ = c.SetReadDeadline(time.Time{})
			log.Info("msgmesh reload: asked to apply the config file again", "by_pid", m.PID)
			return m.Op
		default:
			return ""
		}
	}
	return ""
}

// Request is a successor's request to take over, or msgmesh reload's.
type Request struct {
	c      *net.UnixConn
	ctl    *Control
	log    *slog.Logger
	reload bool
}

// IsReload says the request is msgmesh reload's: answer it with Answer
// (HandOver is for a successor's).
func (r *Request) IsReload() bool { return r.reload }

// Answer tells msgmesh reload how its reload went: nil, the new
// configuration serves; an error, why the old one stays.
func (r *Request) Answer(err error) {
	defer r.c.Close()
	m := Msg{Op: OpReady}
	if err != nil {
		// RequestReload says "reload refused" itself.
		m = Msg{Op: OpRefused, Error: strings.TrimPrefix(err.Error(), ErrReloadRefused.Error()+": ")}
	}
	if werr := Write(r.c, m); werr != nil {
		r.log.Warn("msgmesh reload went away before its answer", "err", werr)
	}
}

// Freezer stops a process's components where what they hold can move and
// registers it in into by name. When it returns an error the components
// are stopped and nothing can move.
type Freezer func(ctx context.Context, into *Set) error

// HandOver runs the old side of a hot upgrade: freeze (bounded by
// SettleTimeout), then the Set and the control socket go to the successor.
// It returns nil, nil when the successor said it serves (this process is
// done: it exits 0); the Set to adopt again when the successor failed
// first (the control socket stays this process's); and an error wrapping
// ErrHandoffFailed when freeze failed (the successor was told why).
func (r *Request) HandOver(ctx context.Context, freeze Freezer) (*Set, error) {
	defer r.c.Close()
	start := time.Now()
	set, err := freezeSet(ctx, freeze)
	if err != nil {
		r.log.Error("handoff failed", "err", err)
		_ = Write(r.c, Msg{Op: OpRefused, Error: err.Error()})
		return nil, fmt.Errorf("%w: the sidecar stopped; start it again without --upgrade (docs/upgrade.md): %w", ErrHandoffFailed, err)
	}
	frozen := time.Since(start)
	if err = set.AddListener(controlName, r.ctl.ln); err == nil {
		msg, files := set.message()
		if err = Write(r.c, msg); err == nil {
			err = SendFiles(r.c, files)
		}
	}
	if err == nil {
		_ = r.c.SetReadDeadline(time.Now().Add(ReadyTimeout))
		var m Msg
		if m, err = Read(r.c); err == nil && m.Op != OpReady {
			err = fmt.Errorf("successor answered %q", m.Op)
		}
	}
	if ctl := set.Take(controlName); ctl != nil {
		_ = ctl.Close() // this process's own listener stays open
	}
	if err != nil {
		r.log.Error("successor failed before adopting; resuming", "err", err)
		return set, nil
	}
	set.Close()
	r.ctl.Close()
	r.log.Info("handed over to the successor; exiting", "freeze", frozen, "total", time.Since(start))
	return nil, nil
}

// freezeSet runs freeze into a new Set, bounded by SettleTimeout. When it
// fails the Set is closed: the components stopped and nothing moves.
func freezeSet(ctx context.Context, freeze Freezer) (*Set, error) {
	set := NewSet()
	fctx, cancel := context.WithTimeout(ctx, SettleTimeout)
	defer cancel()
	if err := freeze(fctx, set); err != nil {
		set.Close()
		return nil, err
	}
	return set, nil
}
