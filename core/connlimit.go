package core

import (
	"context"
	"log/slog"
	"net"
	"sync"
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
}

// Defaults of ConnLimit.
const (
	DefaultRefuseTimeout = 2 * time.Second
	DefaultMaxRefusing   = 64
)

// Thresholds of the limit's log lines: a warning once the connections
// reach nearFraction of Max (again after they fell below rearmFraction),
// and while refusing at most one warning per refuseLogEvery.
const (
	nearFraction   = 0.9
	rearmFraction  = 0.75
	refuseLogEvery = 10 * time.Second
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
		s.warn.admitted(s.log, s.limit, int(n))
	}
	return true
}

// done1 counts a connection out.
func (s *Server) done1() { s.active.Add(-1) }

// refuse ends a connection over the limit, telling the peer why when a
// Refuse slot is free.
func (s *Server) refuse(conn net.Conn) {
	s.refused.Add(1)
	s.warn.refusing(s.log, s.limit)
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

// limitLog keeps the limit's log lines few under a flood: one warning
// when the connections near the limit, one when refusing starts, a summary
// at most every refuseLogEvery while it goes on, and one line when
// connections are admitted again.
type limitLog struct {
	mu        sync.Mutex
	near      bool      // warned about nearing the limit
	atLimit   bool      // refusing since the last admitted connection
	since     int       // refused in the current episode
	lastWarn  time.Time // of the last refusing line
	sinceFrom time.Time // when the current refusing episode began
}

func (l *limitLog) admitted(log *slog.Logger, lim ConnLimit, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.atLimit {
		log.Info("accepting connections again", "limit", lim.Name, "max", lim.Max,
			"refused", l.since, "refusing_for", time.Since(l.sinceFrom).Round(time.Millisecond))
		l.atLimit, l.since = false, 0
	}
	switch {
	case !l.near && float64(n) >= nearFraction*float64(lim.Max):
		l.near = true
		log.Warn("connections near the limit", "limit", lim.Name, "conns", n, "max", lim.Max)
	case l.near && float64(n) < rearmFraction*float64(lim.Max):
		l.near = false
	}
}

func (l *limitLog) refusing(log *slog.Logger, lim ConnLimit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.since++
	now := time.Now()
	switch {
	case !l.atLimit:
		l.atLimit, l.sinceFrom, l.lastWarn = true, now, now
		log.Warn("connection limit reached; refusing new connections", "limit", lim.Name, "max", lim.Max)
	case now.Sub(l.lastWarn) >= refuseLogEvery:
		l.lastWarn = now
		log.Warn("connection limit reached; still refusing", "limit", lim.Name, "max", lim.Max,
			"refused", l.since, "refusing_for", now.Sub(l.sinceFrom).Round(time.Millisecond))
	}
}
