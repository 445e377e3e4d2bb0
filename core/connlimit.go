package core

import (
	"context"
	"net"
	"time"
)

// ConnLimit bounds how many connections a Server serves at once, so a
// flood of idle connections cannot take every file descriptor and the
// memory of a goroutine each. Past Max a new connection is accepted and
// refused at once: Refuse may tell the peer why in its protocol, then the
// Server closes it. Connections already served are not affected.
type ConnLimit struct {
	// Max is the most connections served at once (handlers running,
	// adopted ones included). Zero: no bound.
	Max int
	// Refuse, when set, tells a refused peer why before the Server closes
	// the connection: an ERROR frame, an HTTP 503. It runs on a goroutine
	// the Server owns, with the connection's deadline set RefuseTimeout
	// ahead, and must not close conn. Nil: refused connections are closed
	// at once.
	Refuse func(conn net.Conn)
	// RefuseTimeout is how long Refuse may use a connection. Zero: 2s.
	RefuseTimeout time.Duration
	// MaxRefusing bounds the Refuse calls running at once, so a flood past
	// Max costs a bounded number of goroutines too; connections refused
	// beyond it are closed without Refuse. Zero: 64.
	MaxRefusing int
	// Name names the limit in logs, with its knob: "max_conns
	// (--max-conns)".
	Name string
	// SummaryEvery is how often the Server logs a summary of its
	// connections at info (connlog.go), when any opened, closed or was
	// refused. Zero: DefaultSummaryEvery; negative: never.
	SummaryEvery time.Duration
}

// Defaults of ConnLimit.
const (
	DefaultRefuseTimeout = 2 * time.Second
	DefaultMaxRefusing   = 64
)

// LimitConns sets the Server's connection limit. Call it before Serve.
func (s *Server) LimitConns(l ConnLimit) {
	if l.RefuseTimeout <= 0 {
		l.RefuseTimeout = DefaultRefuseTimeout
	}
	if l.MaxRefusing <= 0 {
		l.MaxRefusing = DefaultMaxRefusing
	}
	if l.Name == "" {
		l.Name = "connection limit"
	}
	if l.SummaryEvery == 0 {
		l.SummaryEvery = DefaultSummaryEvery
	}
	s.limit = l
}

// Conns is the number of connections being served.
func (s *Server) Conns() int { return int(s.active.Load()) }

// Refused is the number of connections refused over the limit so far.
func (s *Server) Refused() uint64 { return s.refused.Load() }

// admit counts a new connection in, or reports that it is over the limit.
// Accept loop only.
func (s *Server) admit() bool {
	n := s.active.Add(1)
	if max := int64(s.limit.Max); max > 0 {
		if n > max {
			s.active.Add(-1)
			return false
		}
		s.clog.admitted(s.log, s.limit, int(n))
	}
	s.clog.opened.Add(1)
	return true
}

// done1 counts a connection out.
func (s *Server) done1() {
	s.active.Add(-1)
	s.clog.closed.Add(1)
}

// refuse ends a connection over the limit, telling the peer why when a
// Refuse slot is free.
func (s *Server) refuse(conn net.Conn) {
	s.refused.Add(1)
	s.clog.refusing(s.log, s.limit)
	r := s.limit.Refuse
	if r == nil {
		_ = conn.Close()
		return
	}
	if s.refusing.Add(1) > int64(s.limit.MaxRefusing) {
		s.refusing.Add(-1)
		_ = conn.Close()
		return
	}
	ok := s.routines.Go(func() {
		defer s.refusing.Add(-1)
		defer conn.Close()
		stop := context.AfterFunc(s.ctx, func() { _ = conn.Close() })
		defer stop()
		_ = conn.SetDeadline(time.Now().Add(s.limit.RefuseTimeout))
		r(conn)
	})
	if !ok {
		s.refusing.Add(-1)
		_ = conn.Close()
	}
}
