package core

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultSummaryEvery is how often a Server logs its connection summary.
const DefaultSummaryEvery = 10 * time.Second

// Thresholds of the limit's log lines: a warning once the connections
// reach nearFraction of Max (again after they fell below rearmFraction).
const (
	nearFraction  = 0.9
	rearmFraction = 0.75
)

// connLog keeps a Server's connection log lines few, whatever the number
// of connections: the lines about each connection belong to the handler,
// at debug level; at info a Server says only, every SummaryEvery and when
// it stops, how many connections opened, closed and were refused since
// its last summary and how many it serves (a warning when some were
// refused). Around its ConnLimit it adds a warning when the connections
// near the limit and one when refusing starts, and a line when it accepts
// again; under a flood that keeps crossing the limit, each of those at most
// once per SummaryEvery (the summaries count the rest).
type connLog struct {
	opened, closed atomic.Uint64 // since the start, adopted ones included

	mu        sync.Mutex
	near      bool      // over nearFraction since the last warning's rearm
	nearAt    time.Time // last "near the limit" warning
	atLimit   bool      // refusing since the last admitted connection
	announced bool      // this refusing episode got its warning
	since     int       // refused in the current episode
	sinceFrom time.Time // when the current refusing episode began
	refuseAt  time.Time // last "limit reached" warning
}

// every is how far apart connLog's limit lines are at least.
func (lim ConnLimit) every() time.Duration {
	if lim.SummaryEvery > 0 {
		return lim.SummaryEvery
	}
	return DefaultSummaryEvery
}

func (l *connLog) admitted(log *slog.Logger, lim ConnLimit, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.atLimit {
		if l.announced {
			log.Info("accepting connections again", "limit", lim.Name, "max", lim.Max,
				"refused", l.since, "refusing_for", time.Since(l.sinceFrom).Round(time.Millisecond))
		}
		l.atLimit, l.announced, l.since = false, false, 0
	}
	switch {
	case !l.near && float64(n) >= nearFraction*float64(lim.Max):
		l.near = true
		if now := time.Now(); now.Sub(l.nearAt) >= lim.every() {
			l.nearAt = now
			log.Warn("connections near the limit", "limit", lim.Name, "conns", n, "max", lim.Max)
		}
	case l.near && float64(n) < rearmFraction*float64(lim.Max):
		l.near = false
	}
}

// refusing notes a connection refused over the limit.
func (l *connLog) refusing(log *slog.Logger, lim ConnLimit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.since++
	if l.atLimit {
		return
	}
	now := time.Now()
	l.atLimit, l.sinceFrom = true, now
	if now.Sub(l.refuseAt) >= lim.every() {
		l.refuseAt, l.announced = now, true
		log.Warn("connection limit reached; refusing new connections", "limit", lim.Name, "max", lim.Max)
	}
}

// summary reports a Server's connections since its last report.
type summary struct {
	s *Server

	mu   sync.Mutex
	addr string    // the listener's; empty until Serve
	last [3]uint64 // opened, closed, refused at the last report
}

// report logs what changed since the last report, if anything did.
func (m *summary) report() {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, l := m.s, &m.s.clog
	if m.addr == "" || s.limit.SummaryEvery < 0 {
		return
	}
	now := [3]uint64{l.opened.Load(), l.closed.Load(), s.refused.Load()}
	if now == m.last {
		return
	}
	attrs := []any{"listener", m.addr, "opened", now[0] - m.last[0], "closed", now[1] - m.last[1], "current", s.Conns()}
	if r := now[2] - m.last[2]; r > 0 {
		l.mu.Lock()
		still := l.atLimit
		l.mu.Unlock()
		s.log.Warn("connections refused over the limit", append(attrs, "refused", r, "limit", s.limit.Name, "max", s.limit.Max, "still_refusing", still)...)
	} else {
		s.log.Info("connections", attrs...)
	}
	m.last = now
}

// summarize starts reporting the connections on the listener addr every
// SummaryEvery; the returned func reports once more and stops. Its
// goroutine is owned by Serve, which calls stop before it returns; Wait
// reports the handlers that ended after that.
func (s *Server) summarize(addr string) (stop func()) {
	s.sum.mu.Lock()
	s.sum.s, s.sum.addr = s, addr
	s.sum.mu.Unlock()
	if s.limit.SummaryEvery < 0 {
		return func() {}
	}
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(s.limit.SummaryEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				s.sum.report()
				return
			case <-t.C:
				s.sum.report()
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}
