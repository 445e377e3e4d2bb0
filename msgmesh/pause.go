package msgmesh

import (
	"context"
	"errors"
	"time"
)

// PauseDelivery stops deliveries to apps: every upstream consumer is paused
// at its broker (prefetched messages go back to it), and once PauseDelivery
// returns no new delivery is pushed or answered to a pull, until
// ResumeDelivery. Deliveries already with apps stay in flight; their acks
// still reach the broker (WaitDeliveriesSettled waits for them).
// Publishing goes on. Upstream consumers started while paused start paused.
// This is step 2 of the hot upgrade (docs/design.md flow 10).
func (s *Sidecar) PauseDelivery(ctx context.Context) error {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	s.paused = true
	s.pausedFlag.Store(true)
	err := eachUpstream(s.upstreams, func(u *upstream) error { return u.pause(ctx) })
	s.log.Info("delivery paused", "upstreams", len(s.upstreams))
	return err
}

// ResumeDelivery undoes PauseDelivery.
func (s *Sidecar) ResumeDelivery(ctx context.Context) error {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	s.paused = false
	s.pausedFlag.Store(false)
	var errs []error
	for _, u := range s.upstreams {
		errs = append(errs, u.resume(ctx))
	}
	s.log.Info("delivery resumed", "upstreams", len(s.upstreams))
	return errors.Join(errs...)
}

// InflightDeliveries counts deliveries pushed or pulled to apps (over the
// mesh protocol or HTTP), or forwarded to siblings, and not yet answered.
func (s *Sidecar) InflightDeliveries() int { return s.inflightCount(false) }

// unportableInflight counts those of InflightDeliveries that cannot move
// to a successor process with their app connection (portable).
func (s *Sidecar) unportableInflight() int { return s.inflightCount(true) }

func (s *Sidecar) inflightCount(unportableOnly bool) int {
	n := s.detached.inflight() // before sessMu: the two locks are never nested
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if f := s.cfg.Forwarding; f != nil {
		n += f.Forwarder.Outstanding()
	}
	for ss := range s.sessions {
		ss.mu.Lock()
		if unportableOnly {
			for _, inf := range ss.inflight {
				if !portable(inf.d) {
					n++
				}
			}
		} else {
			n += len(ss.inflight)
		}
		ss.mu.Unlock()
	}
	return n
}

// WaitDeliveriesSettled waits until no delivery is in flight (each was
// acked, nacked, or timed out back to the broker), or ctx ends.
func (s *Sidecar) WaitDeliveriesSettled(ctx context.Context) error {
	return s.waitFor(ctx, s.InflightDeliveries)
}

// waitFor polls count until it is 0, or ctx ends.
func (s *Sidecar) waitFor(ctx context.Context, count func() int) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for count() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
