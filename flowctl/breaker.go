package flowctl

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// BreakerState is the state of a circuit breaker.
type BreakerState uint8

const (
	// Closed: requests go through; consecutive failures are counted.
	Closed BreakerState = iota
	// Open: requests fail fast with ErrBreakerOpen until OpenFor passed.
	Open
	// HalfOpen: up to HalfOpenProbes requests go through as probes; their
	// successes close the breaker, one failure opens it again.
	HalfOpen
)

func (s BreakerState) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return "unknown"
}

// Breaker is the circuit breaker toward one broker cluster. Wrap each call
// to the cluster: Allow before it (a non-nil error means do not call), then
// exactly one of Success or Failure after it (or Record with the call's
// error). It is safe for concurrent use.
//
// A half-open breaker whose probes never report (a caller that forgot
// Success/Failure) lets new probes through after OpenFor, so it cannot
// stay stuck.
type Breaker struct {
	cluster string
	c       *Controller

	mu        sync.Mutex
	state     BreakerState
	failures  int       // consecutive failures while closed; what opened it while open
	until     time.Time // open: end of the open period; half-open: end of the probe round
	probes    int       // half-open: probes let through this round
	successes int       // half-open: probes that succeeded this round
}

// Breaker returns the breaker of cluster, creating it closed on first use.
// The same cluster always gets the same *Breaker, across Apply.
func (c *Controller) Breaker(cluster string) *Breaker {
	if b, ok := (*c.breakers.Load())[cluster]; ok {
		return b
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m := *c.breakers.Load()
	if b, ok := m[cluster]; ok {
		return b
	}
	b := &Breaker{cluster: cluster, c: c}
	nm := make(map[string]*Breaker, len(m)+1)
	maps.Copy(nm, m)
	nm[cluster] = b
	c.breakers.Store(&nm)
	return b
}

func (b *Breaker) cfg() BreakerConfig { return b.c.gen.Load().c.breaker }

// Allow reports whether a request may go to the cluster now: nil, or a
// *BreakerOpenError (errors.Is ErrBreakerOpen and broker.ErrUnavailable)
// that says until when it stays open.
func (b *Breaker) Allow() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == Closed {
		return nil
	}
	now := b.c.now()
	cfg := b.cfg()
	switch b.state {
	case Open:
		if now.Before(b.until) {
			return &BreakerOpenError{Cluster: b.cluster, Until: b.until, Failures: b.failures}
		}
		b.state, b.probes, b.successes, b.until = HalfOpen, 0, 0, now.Add(cfg.OpenFor)
	case HalfOpen:
		if b.probes >= cfg.HalfOpenProbes && !now.Before(b.until) {
			// The round's probes never reported: start another.
			b.probes, b.successes, b.until = 0, 0, now.Add(cfg.OpenFor)
		}
	}
	if b.probes >= cfg.HalfOpenProbes {
		return &BreakerOpenError{Cluster: b.cluster, Until: b.until, Failures: b.failures, Probing: true}
	}
	b.probes++
	return nil
}

// Success records a request that the cluster answered.
func (b *Breaker) Success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case Closed:
		b.failures = 0
	case HalfOpen:
		b.successes++
		if b.successes >= b.cfg().HalfOpenProbes {
			b.state, b.failures, b.probes, b.successes = Closed, 0, 0, 0
		}
	}
	// Open: the answer of a request sent before it opened; the open
	// period runs its course.
}

// Failure records a request the cluster failed (unreachable, timed out,
// errored).
func (b *Breaker) Failure() {
	now := b.c.now()
	cfg := b.cfg()
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case Closed:
		b.failures++
		if cfg.Failures > 0 && b.failures >= cfg.Failures {
			b.state, b.until = Open, now.Add(cfg.OpenFor)
		}
	case HalfOpen:
		b.state, b.until = Open, now.Add(cfg.OpenFor)
	}
}

// Record is Success or Failure according to err, the outcome of a call
// the breaker allowed: nil, broker.ErrRejected and broker.ErrStorageFull
// (the cluster answered, refusing the message) are successes; context.Canceled (the caller gave
// up) releases a half-open probe without counting; anything else
// (broker.ErrUnavailable, a deadline, an unknown error) is a failure.
func (b *Breaker) Record(err error) {
	switch {
	case err == nil, errors.Is(err, broker.ErrRejected), errors.Is(err, broker.ErrStorageFull):
		b.Success()
	case errors.Is(err, context.Canceled):
		b.mu.Lock()
		if b.state == HalfOpen && b.probes > 0 {
			b.probes--
		}
		b.mu.Unlock()
	default:
		b.Failure()
	}
}

// State returns the breaker's state, and until when it stays open (or when
// the probe round ends, half-open); zero when closed.
func (b *Breaker) State() (BreakerState, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == Closed {
		return Closed, time.Time{}
	}
	return b.state, b.until
}

// Cluster returns the cluster the breaker guards.
func (b *Breaker) Cluster() string { return b.cluster }
