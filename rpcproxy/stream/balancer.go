package stream

import (
	"fmt"
	"math/rand/v2"
	"sync"
)

// LBPolicy is how a Cluster picks a host for a request.
type LBPolicy uint8

const (
	// RoundRobin is smooth weighted round robin (the nginx algorithm): over
	// any run of requests each host gets its weight's share, interleaved.
	RoundRobin LBPolicy = iota
	// LeastRequest picks two distinct hosts at random, in proportion to
	// their weights, and sends to the one with fewer requests in flight per
	// unit of weight (power of two choices).
	LeastRequest
)

// ParseLBPolicy parses "round_robin" (or "") and "least_request".
func ParseLBPolicy(s string) (LBPolicy, error) {
	switch s {
	case "", "round_robin":
		return RoundRobin, nil
	case "least_request":
		return LeastRequest, nil
	}
	return 0, fmt.Errorf("unknown lb policy %q (want round_robin or least_request)", s)
}

func (p LBPolicy) String() string {
	switch p {
	case RoundRobin:
		return "round_robin"
	case LeastRequest:
		return "least_request"
	}
	return fmt.Sprintf("LBPolicy(%d)", uint8(p))
}

// balancer picks a host not in tried. It prefers hosts that are not down;
// when every untried host is down it still returns one (the backoff may
// be stale, and failing without trying would turn a blip into an outage).
// It returns nil when every host was tried. It is a concrete type, not an
// interface, so that the tried set of a request stays on its stack.
type balancer struct {
	policy LBPolicy
	rr     roundRobin
	lr     leastRequest
}

func newBalancer(p LBPolicy, hosts []*host) (*balancer, error) {
	switch p {
	case RoundRobin, LeastRequest:
		return &balancer{policy: p, rr: roundRobin{hosts: hosts}, lr: leastRequest{hosts: hosts}}, nil
	}
	return nil, fmt.Errorf("unknown lb policy %d", p)
}

func (b *balancer) pick(tried *hostSet, now int64) *host {
	if b.policy == LeastRequest {
		return b.lr.pick(tried, now)
	}
	return b.rr.pick(tried, now)
}

type roundRobin struct {
	mu    sync.Mutex // guards every host's cw
	hosts []*host
}

func (b *roundRobin) pick(tried *hostSet, now int64) *host {
	b.mu.Lock()
	defer b.mu.Unlock()
	for pass := 0; pass < 2; pass++ {
		var best *host
		total := 0
		for _, h := range b.hosts {
			if tried.has(h.idx) || pass == 0 && h.isDown(now) {
				continue
			}
			h.cw += h.weight
			total += h.weight
			if best == nil || h.cw > best.cw {
				best = h
			}
		}
		if best != nil {
			best.cw -= total
			return best
		}
	}
	return nil
}

type leastRequest struct {
	hosts []*host
}

func (b *leastRequest) pick(tried *hostSet, now int64) *host {
	for pass := 0; pass < 2; pass++ {
		total := b.total(tried, now, pass, nil)
		if total == 0 {
			continue
		}
		a := b.weighted(tried, now, pass, nil, rand.IntN(total))
		rest := b.total(tried, now, pass, a)
		if rest == 0 {
			return a // the only eligible host
		}
		c := b.weighted(tried, now, pass, a, rand.IntN(rest))
		// Fewer requests per unit of weight wins: compare
		// (active_a+1)/w_a with (active_c+1)/w_c without dividing.
		if (c.active.Load()+1)*int64(a.weight) < (a.active.Load()+1)*int64(c.weight) {
			return c
		}
		return a
	}
	return nil
}

// eligible reports whether h may be picked in this pass, other than skip.
func eligible(h *host, tried *hostSet, now int64, pass int, skip *host) bool {
	return h != skip && !tried.has(h.idx) && (pass == 1 || !h.isDown(now))
}

func (b *leastRequest) total(tried *hostSet, now int64, pass int, skip *host) int {
	total := 0
	for _, h := range b.hosts {
		if eligible(h, tried, now, pass, skip) {
			total += h.weight
		}
	}
	return total
}

// weighted returns the eligible host (other than skip) that r, in
// [0, their total weight), falls on: two picks of it choose two distinct
// hosts in proportion to their weights.
func (b *leastRequest) weighted(tried *hostSet, now int64, pass int, skip *host, r int) *host {
	var last *host
	for _, h := range b.hosts {
		if !eligible(h, tried, now, pass, skip) {
			continue
		}
		last = h
		if r < h.weight {
			return h
		}
		r -= h.weight
	}
	return last
}

// hostSet is a set of host indexes: a bitmask for the first 64 hosts.
type hostSet struct {
	bits uint64
	more map[int]bool
	n    int
}

func (s *hostSet) add(i int) {
	if s.has(i) {
		return
	}
	s.n++
	if i < 64 {
		s.bits |= 1 << i
		return
	}
	if s.more == nil {
		s.more = make(map[int]bool)
	}
	s.more[i] = true
}

func (s *hostSet) has(i int) bool {
	if i < 64 {
		return s.bits&(1<<i) != 0
	}
	return s.more[i]
}
