package msgmesh

import (
	"context"
	"errors"
	"sync"

	"github.com/msgmesh/msgmesh/broker"
)

// routeKey names a dispatch point: one consumer group on one topic.
type routeKey struct {
	group string
	topic string
}

// route is where an upstream consumer's messages go: the connections that
// declared (group, topic) in push mode and the PULL requests waiting on it.
// A route lives while an upstream consumer or a connection refers to it.
type route struct {
	s    *Sidecar
	key  routeKey
	refs int // guarded by Sidecar.routesMu

	mu    sync.Mutex
	push  []*session    // declared in push mode, in declaration order
	next  int           // round-robin cursor into push
	pulls []*pullWaiter // pending PULLs, oldest first

	// wake has room for one signal: "a slot may have become free". A
	// signal sent while nobody waits is kept, so none is lost between a
	// failed pick and the wait.
	wake chan struct{}
}

// acquireRoute returns the route for k, creating it, and takes a reference.
func (s *Sidecar) acquireRoute(k routeKey) *route {
	s.routesMu.Lock()
	defer s.routesMu.Unlock()
	r, ok := s.routes[k]
	if !ok {
		r = &route{s: s, key: k, wake: make(chan struct{}, 1)}
		s.routes[k] = r
	}
	r.refs++
	return r
}

// releaseRoute drops a reference taken by acquireRoute; the last one
// removes the route, so routes stay bounded by what is registered and
// connected.
func (s *Sidecar) releaseRoute(r *route) {
	s.routesMu.Lock()
	defer s.routesMu.Unlock()
	r.refs--
	if r.refs == 0 {
		delete(s.routes, r.key)
	}
}

func (r *route) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *route) addPush(ss *session) {
	r.mu.Lock()
	r.push = append(r.push, ss)
	r.mu.Unlock()
	r.signal()
}

func (r *route) removePush(ss *session) {
	r.mu.Lock()
	for i, p := range r.push {
		if p == ss {
			r.push = append(r.push[:i], r.push[i+1:]...)
			break
		}
	}
	r.mu.Unlock()
}

func (r *route) addPull(w *pullWaiter) {
	r.mu.Lock()
	r.pulls = append(r.pulls, w)
	r.mu.Unlock()
	r.signal()
}

func (r *route) removePull(w *pullWaiter) {
	r.mu.Lock()
	for i, p := range r.pulls {
		if p == w {
			r.pulls = append(r.pulls[:i], r.pulls[i+1:]...)
			break
		}
	}
	r.mu.Unlock()
}

// target is a reserved slot: one delivery's room on a session, and for a
// pull, in that PULL's answer.
type target struct {
	s    *session
	pull *pullWaiter // nil for a push
}

// acquire blocks until it reserves a slot on some target, or ctx ends. Pull
// requests are served first (an app asking is an app ready), then push
// connections round robin, so deliveries spread over a group's connections.
func (r *route) acquire(ctx context.Context) (target, error) {
	for {
		if t, ok := r.pick(); ok {
			return t, nil
		}
		select {
		case <-r.wake:
		case <-ctx.Done():
			return target{}, ctx.Err()
		}
	}
}

// waitRoom blocks until some target of the route has a free slot, without
// reserving it, or ctx ends.
// waitRoom waits until a target of the route has room, ctx ends, or
// changed (the forwarding weights, nil: never) is closed: then it returns
// errWeightsChanged.
func (r *route) waitRoom(ctx context.Context, changed <-chan struct{}) error {
	for !r.hasRoom() {
		select {
		case <-r.wake:
		case <-changed:
			return errWeightsChanged
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// errWeightsChanged ends a wait for local room when the forwarding weights
// changed: the caller asks again whether deliveries may go to siblings.
var errWeightsChanged = errors.New("msgmesh: forwarding weights changed")

func (r *route) hasRoom() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	snap := r.s.snap.Load()
	for _, w := range r.pulls {
		if w.s.hasRoom() && w.hasRoom() && r.permits(snap, w.s) {
			return true
		}
	}
	for _, ss := range r.push {
		if ss.hasRoom() && r.permits(snap, ss) {
			return true
		}
	}
	return false
}

// permits reports whether the app ss acts as may receive this route's
// deliveries under the registrations as they are now: a connection whose
// app was deregistered, lost the group or was given a new secret since it
// declared the route gets nothing more (identity.go).
func (r *route) permits(snap *snapshot, ss *session) bool {
	id := ss.who.Load()
	return id != nil && snap.permits(id, r.key, r.s.cfg.RequireAppSecrets)
}

func (r *route) pick() (target, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	snap := r.s.snap.Load()
	for _, w := range r.pulls {
		if !r.permits(snap, w.s) {
			continue
		}
		if w.s.reserve() {
			if w.reserve() {
				return target{s: w.s, pull: w}, true
			}
			w.s.release()
		}
	}
	n := len(r.push)
	for i := 0; i < n; i++ {
		ss := r.push[(r.next+i)%n]
		if r.permits(snap, ss) && ss.reserve() {
			r.next = (r.next + i + 1) % n
			return target{s: ss}, true
		}
	}
	return target{}, false
}

// deliver hands d to the reserved target. It returns false, with the slot
// released, if the target went away in the meantime (connection closed, pull
// answered); the caller then reserves another one.
func (t target) deliver(k routeKey, d broker.Delivery) bool {
	if t.pull != nil {
		return t.pull.add(k, d)
	}
	return t.s.push(k, d)
}
