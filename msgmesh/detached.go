package msgmesh

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// Detached sessions are the sessions of apps that are not on a mesh
// connection: they hold deliveries in flight, bound them by an in-flight
// limit, time them out and settle them exactly as a connection's session
// does (session.go), but nothing reads frames for them and deliveries
// leave through a function rather than as DELIVER frames. Three kinds use
// them:
//
//   - the HTTP session of an app that pulls over HTTP (httppull.go): one
//     per app, made on its first pull, kept until the sidecar stops;
//   - a push session (Sidecar.OpenPushSession): one per push consumer,
//     such as a gRPC subscribe stream or an HTTP push subscription, which
//     its owner opens and closes.
//
// A detached session has no read loop, so the registry's lock stands in
// for it: it guards the subs and routes of every detached session (join
// and leave run under it), and nothing else changes them.

// detachedSessions holds the detached sessions.
// Lock order: detachedSessions.mu before route.mu and session.mu.
type detachedSessions struct {
	mu sync.Mutex
	// byApp: the HTTP sessions, one per app that pulled over HTTP.
	byApp map[string]*session
	// push: the push sessions, each owned by its opener.
	push map[*session]struct{}
	// stopping: Shutdown or Handoff began; no new HTTP pull or push
	// session starts.
	stopping bool
}

// newDetachedSession makes a session without a connection for the app id
// acts as, under dt.mu. pushTo is how it sends push deliveries (nil for an
// HTTP session, which only pulls); maxInflight bounds what it holds (0:
// Config.MaxInflight, and never more).
func (sc *Sidecar) newDetachedSession(id identity, via string, maxInflight int, pushTo func(mesh.Message) error) (*session, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("msgmesh: %s session: %w", via, err)
	}
	s := &session{
		sc:       sc,
		log:      sc.log.With("app", id.app, "via", via),
		subs:     make(map[routeKey]mesh.Mode),
		routes:   make(map[routeKey]*route),
		inflight: make(map[uint64]inflight),
		pulls:    make(map[*pullWaiter]struct{}),
		done:     make(chan struct{}),
		epoch:    hex.EncodeToString(b[:]),
		pushTo:   pushTo,
	}
	limit := sc.cfg.MaxInflight
	if maxInflight > 0 && maxInflight < limit {
		limit = maxInflight
	}
	s.maxInflight.Store(int32(limit))
	s.flags.Store(true) // detached apps tell a null body and an empty key apart
	s.who.Store(&id)
	s.publishJoined()
	s.owned.Go(s.sweep)
	return s, nil
}

// PushSession is a consumer of one app that takes deliveries pushed to it
// outside the mesh protocol (a gRPC subscribe stream, an HTTP push
// subscription). Its owner opens it with Sidecar.OpenPushSession,
// subscribes it, answers each delivery by its id, and closes it.
type PushSession struct {
	s     *session
	once  sync.Once
	ended chan struct{} // Done
}

func (p *PushSession) end() { p.once.Do(func() { close(p.ended) }) }

// OpenPushSession opens a push session for app (authenticated with secret
// as a HELLO is). Each delivery goes to push, which must not block: it is
// called at most maxInflight times (0: the sidecar's limit, and never more)
// before the owner answers one, so a channel of that capacity always has
// room. push runs on the upstream consumer's goroutine with no lock held;
// an error from it closes the session. The session's Done channel closes
// when it ends: its owner closed it, push failed, or the sidecar stopped
// or handed over to a new process (every delivery it still held goes back
// to the broker, without counting as a failed attempt).
func (sc *Sidecar) OpenPushSession(app, secret, via string, maxInflight int, push func(Delivery) error) (*PushSession, error) {
	id, err := sc.authenticate(app, secret)
	if err != nil {
		return nil, err
	}
	return sc.openPushSession(id, via, maxInflight, push)
}

// openPushSession is OpenPushSession for an identity already established
// (the sidecar's own push subscriptions act as the app they belong to).
func (sc *Sidecar) openPushSession(id identity, via string, maxInflight int, push func(Delivery) error) (*PushSession, error) {
	var err error
	dt := &sc.detached
	dt.mu.Lock()
	defer dt.mu.Unlock()
	if dt.stopping || sc.draining.Load() {
		return nil, fmt.Errorf("%w: the sidecar is stopping or handing over to a new process; subscribe again shortly", ErrShuttingDown)
	}
	p := &PushSession{ended: make(chan struct{})}
	p.s, err = sc.newDetachedSession(id, via, maxInflight, func(m mesh.Message) error {
		return push(Delivery{m: m, id: p.s.deliveryID(m.DeliveryID)})
	})
	if err != nil {
		return nil, err
	}
	// A failed push or the sidecar stopping ends the session for its
	// owner, who then closes it (which hands back what it holds).
	p.s.onClose = func(error) { p.end() }
	if dt.push == nil {
		dt.push = make(map[*session]struct{})
	}
	dt.push[p.s] = struct{}{}
	return p, nil
}

// Delivery is a message pushed to a push session.
type Delivery struct {
	m  mesh.Message
	id string
}

// ID names the delivery in Ack and Nack: unique per session and process.
func (d Delivery) ID() string { return d.id }

// Message is the delivery in its wire form, message flags included
// (mesh.Message.Flags): a null body and an empty key are told apart.
// Its DeliveryID is the session counter; answer by ID.
func (d Delivery) Message() mesh.Message { return d.m }

// Subscribe replaces the session's subscriptions with subs, all in push
// mode; each must be registered for the app to consume. On error nothing
// changes.
func (p *PushSession) Subscribe(subs []mesh.Subscription) error {
	s := p.s
	sc := s.sc
	snap, id := sc.snap.Load(), s.who.Load()
	want := make(map[routeKey]bool, len(subs))
	for i, sub := range subs {
		k := routeKey{group: sub.Group, topic: sub.Topic}
		if err := sc.mayConsume(snap, id, k); err != nil {
			return fmt.Errorf("subs[%d]: %w", i, err)
		}
		if want[k] {
			return fmt.Errorf("%w: subs[%d]: %s:%s given twice", ErrInvalid, i, sub.Group, sub.Topic)
		}
		want[k] = true
	}
	dt := &sc.detached
	dt.mu.Lock()
	defer dt.mu.Unlock()
	if _, open := dt.push[s]; !open {
		return fmt.Errorf("%w: the session ended", ErrShuttingDown)
	}
	for k, mode := range s.subs {
		if !want[k] {
			s.leave(k, mode)
		}
	}
	for k := range want {
		if s.subs[k] != mesh.ModePush {
			s.join(k, mesh.ModePush)
		}
	}
	return nil
}

// Ack and Nack answer a delivery by its ID; false when it is not in flight
// on the session (never pushed to it, answered, or timed out back to the
// broker). Nack's delay is as a mesh NACK's.
func (p *PushSession) Ack(id string) bool { return p.s.settleByID(id, answerAck, 0) }

// Nack: see Ack.
func (p *PushSession) Nack(id string, delay time.Duration) bool {
	return p.s.settleByID(id, answerNack, delay)
}

// Done is closed when the session can take no more deliveries: a push
// failed, or the sidecar is stopping or handing over to a new process. The
// owner then closes it.
func (p *PushSession) Done() <-chan struct{} { return p.ended }

// Close ends the session: deliveries it still holds go back to the broker
// unanswered. Idempotent; it waits for the session's goroutines.
func (p *PushSession) Close() {
	s := p.s
	dt := &s.sc.detached
	dt.mu.Lock()
	_, open := dt.push[s]
	delete(dt.push, s)
	dt.mu.Unlock()
	if open {
		s.endDetached()
	}
	p.end()
}

// endDetached ends a detached session that is out of the registry (so
// that nothing else changes its subs and routes): its pulls are answered,
// its sweeper stops, and what it holds goes back to the broker.
func (s *session) endDetached() {
	s.dead.Store(true)
	if s.onClose != nil {
		s.onClose(ErrShuttingDown)
	}
	s.finishPulls()
	close(s.done)
	s.owned.Stop()
	s.owned.Wait()
	if n := s.handBackInflight(); n > 0 {
		s.log.Info("handed unanswered deliveries back to the broker", "count", n)
	}
	for k, mode := range s.subs {
		s.leave(k, mode)
	}
}

// finishPulls refuses new HTTP pulls and push sessions and answers pending
// HTTP pulls with what they hold; deliveries stay in flight, to be
// answered (the HTTP API and push owners still settle them) or timed out.
func (dt *detachedSessions) finishPulls() {
	dt.mu.Lock()
	dt.stopping = true
	ss := dt.listLocked()
	dt.mu.Unlock()
	for _, s := range ss {
		s.finishPulls()
	}
}

// stopAll ends every detached session: every delivery still unanswered
// goes back to the broker, without counting as a failed attempt (as a mesh
// connection's do when it closes). Push owners see Done closed.
func (dt *detachedSessions) stopAll() {
	dt.mu.Lock()
	dt.stopping = true
	ss := dt.listLocked()
	dt.byApp = nil // acks from now on find no delivery
	dt.push = nil
	dt.mu.Unlock()
	for _, s := range ss {
		s.endDetached()
	}
}

func (dt *detachedSessions) listLocked() []*session {
	ss := make([]*session, 0, len(dt.byApp)+len(dt.push))
	for _, s := range dt.byApp {
		ss = append(ss, s)
	}
	for s := range dt.push {
		ss = append(ss, s)
	}
	return ss
}

// inflight counts deliveries detached sessions hold.
func (dt *detachedSessions) inflight() int {
	return dt.sum(func(s *session) int { return len(s.inflight) })
}

// sum adds f over the detached sessions; f runs with the session's mu held.
func (dt *detachedSessions) sum(f func(*session) int) int {
	dt.mu.Lock()
	defer dt.mu.Unlock()
	n := 0
	for _, s := range dt.listLocked() {
		s.mu.Lock()
		n += f(s)
		s.mu.Unlock()
	}
	return n
}
