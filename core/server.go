package core

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ConnHandler serves one accepted connection until ctx ends or the
// connection fails. It owns the connection and closes it before returning.
type ConnHandler func(ctx context.Context, conn net.Conn)

// Server accepts connections on one listener and runs a ConnHandler for each
// in a goroutine it owns. It is the network layer of the core: the mesh
// listener, and later the RPC and forwarding listeners, are Servers with
// different handlers.
type Server struct {
	handler ConnHandler
	log     *slog.Logger

	ctx      context.Context
	cancel   context.CancelFunc
	routines Routines

	mu   sync.Mutex
	ln   net.Listener
	done bool

	limit    ConnLimit    // set by LimitConns before Serve
	active   atomic.Int64 // connections whose handler runs
	refusing atomic.Int64 // Refuse calls running
	refused  atomic.Uint64
	clog     connLog
	sum      summary
}

// NewServer returns a Server that will run handler for every connection.
// The handler's context is cancelled by Shutdown.
func NewServer(handler ConnHandler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{handler: handler, log: log, ctx: ctx, cancel: cancel, limit: ConnLimit{SummaryEvery: DefaultSummaryEvery}}
	s.sum.s = s
	return s
}

// Serve accepts on ln until Close or Shutdown; it returns nil then, or the
// accept error that stopped it. Temporary accept errors (too many open
// files) are retried with a short backoff instead of ending the server.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	stopSummary := s.summarize(ln.Addr().String())
	defer stopSummary()
	backoff := 5 * time.Millisecond
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.closing() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				s.log.Warn("accept failed; retrying", "addr", ln.Addr(), "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
				case <-s.ctx.Done():
					return nil
				}
				backoff = min(backoff*2, time.Second)
				continue
			}
			return err
		}
		backoff = 5 * time.Millisecond
		if !s.admit() {
			s.refuse(conn)
			continue
		}
		if !s.routines.Go(func() { defer s.done1(); s.handler(s.ctx, conn) }) {
			s.done1()
			_ = conn.Close()
			return nil
		}
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// Go runs f in a goroutine owned by the server, with the context handlers
// get: it is how a connection adopted from another process joins the
// server's handlers. f counts as one connection against the ConnLimit
// while it runs, but is never refused: a connection handed over in an
// upgrade is not dropped. It returns false once Shutdown has begun.
func (s *Server) Go(f func(ctx context.Context)) bool {
	s.active.Add(1)
	s.clog.opened.Add(1)
	if !s.routines.Go(func() { defer s.done1(); f(s.ctx) }) {
		s.done1()
		return false
	}
	return true
}

// Wait waits for every handler to return, without cancelling them, or for
// ctx to end. A hot upgrade uses it after making each handler stop on its
// own. Once they all returned, the connection summary reports them.
func (s *Server) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.routines.Wait(); close(done) }()
	select {
	case <-done:
		s.sum.report()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting: the listener is closed, running handlers go on.
// Safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	s.done = true
	ln := s.ln
	s.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
}

// Shutdown stops accepting, cancels every handler's context and waits for
// the handlers to return, or for ctx to end. Safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Close()
	s.routines.Stop()
	s.cancel()
	return s.Wait(ctx)
}
