package msgmesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/codecs/mesh/meshconn"
	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/msgmesh/forward"
	"github.com/msgmesh/msgmesh/observe"
)

// session is one app connection. Its read loop is the only goroutine that
// changes its subscriptions and route memberships; other goroutines (the
// upstream consumers, publish lanes, the timeout sweeper) only add and
// settle deliveries and write frames.
type session struct {
	sc       *Sidecar
	mc       *meshconn.Conn // the connection's engine; nil for a detached session
	log      *slog.Logger
	ids      core.IDs          // delivery ids (a detached session's too)
	lanes    []chan publishJob // started on the first publish
	owned    core.Routines     // lanes and the sweeper
	lanePick *lanePicker

	maxInflight atomic.Int32
	slots       atomic.Int32  // reserved or in-flight deliveries
	publishing  atomic.Int32  // publishes read but not yet answered
	dead        atomic.Bool   // the connection is gone; take no new deliveries
	done        chan struct{} // closed when the read loop has returned
	helloBy     time.Time     // HELLO must arrive by then (Config.HelloTimeout)

	who atomic.Pointer[identity] // the app it acts as; set by HELLO (or adopt), then fixed
	// flags: the app reads message flags (mesh.FeatureMessageFlags), so
	// deliveries carry them; set by HELLO.
	flags atomic.Bool

	mu       sync.Mutex
	hello    bool
	client   string
	subs     map[routeKey]mesh.Mode   // read loop only
	routes   map[routeKey]*route      // read loop only (refs held)
	joined   atomic.Pointer[[]*route] // the values of routes, for release
	inflight map[uint64]inflight      // guarded by mu
	pulls    map[*pullWaiter]struct{} // guarded by mu

	// epoch prefixes the delivery ids of a detached session (detached.go);
	// "" on a mesh connection.
	epoch string
	// pushTo sends a push delivery of a detached session; nil on a mesh
	// connection (a DELIVER frame) and an HTTP session (it only pulls).
	pushTo func(mesh.Message) error
	// onClose tells a detached session's owner that close was called.
	onClose func(error)
}

type inflight struct {
	d        broker.Delivery
	key      routeKey
	deadline time.Time
}

type publishJob struct {
	id     uint64
	msg    broker.Message
	broker broker.Broker
}

// serveConn is the core.ConnHandler of the mesh listener.
func (sc *Sidecar) serveConn(ctx context.Context, conn net.Conn) {
	sc.runSession(ctx, sc.newSession(conn))
}

func (sc *Sidecar) newSession(conn net.Conn) *session {
	s := &session{
		sc:       sc,
		log:      sc.log.With("remote", conn.RemoteAddr().String()),
		lanePick: newLanePicker(),
		subs:     make(map[routeKey]mesh.Mode),
		routes:   make(map[routeKey]*route),
		inflight: make(map[uint64]inflight),
		pulls:    make(map[*pullWaiter]struct{}),
		done:     make(chan struct{}),
		helloBy:  time.Now().Add(sc.cfg.HelloTimeout),
	}
	s.maxInflight.Store(int32(sc.cfg.MaxInflight))
	s.mc = meshconn.New(conn, s, meshconn.Config{
		MaxFrameSize: sc.cfg.MaxFrameSize,
		MaxSendSize:  sc.outFrameMax(),
		WriteTimeout: 10 * time.Second,
		ReadDeadline: s.readDeadline,
		OnReadError:  s.readError,
		OnClose:      s.markDead,
		OnTooLarge: func(f mesh.Frame, err error) {
			s.sc.metrics().Rejected(context.Background(), "", "frame_too_large")
			s.log.Debug("request over the frame limit; skipped", "kind", f.Kind, "id", f.ID, "err", err)
		},
	})
	return s
}

// runSession serves s until its connection ends, or until a hot upgrade
// freezes it and hands it to the next process.
func (sc *Sidecar) runSession(ctx context.Context, s *session) {
	sc.sessMu.Lock()
	if sc.draining.Load() {
		sc.sessMu.Unlock()
		_ = s.mc.NetConn().Close()
		return
	}
	if sc.handingOff {
		s.mc.Freeze() // accepted as the handoff began: it moves too
	}
	sc.sessions[s] = struct{}{}
	sc.countSessions()
	sc.sessWG.Add(1)
	sc.sessMu.Unlock()
	defer sc.sessWG.Done()

	s.log.Debug("app connected")
	err := s.readLoop(ctx)
	if errors.Is(err, errFrozen) {
		s.freezeCleanup()
	} else {
		s.cleanup()
	}
	sc.sessMu.Lock()
	delete(sc.sessions, s)
	sc.countSessions()
	sc.sessMu.Unlock()
	if !errors.Is(err, errFrozen) {
		s.log.Debug("app disconnected", "reason", err) // s.log names the app since HELLO
	}
}

// close makes the read loop return; cleanup happens there. Frames the
// writer already accepted (answers to publishes, say) are flushed first,
// so an app is not told "connection lost" for a publish that was acked.
func (s *session) close(reason error) {
	s.markDead(reason)
	if s.mc != nil {
		s.mc.Close(reason)
	}
}

// markDead notes, once, that the session takes no new work.
func (s *session) markDead(reason error) {
	if s.dead.CompareAndSwap(false, true) {
		s.log.Debug("closing connection", "reason", reason)
		if s.onClose != nil {
			s.onClose(reason)
		}
	}
}

// errFrozen ends a read loop that a hot upgrade stopped.
var errFrozen = errors.New("msgmesh: connection frozen for handoff")

// freeze makes the read loop stop at the next frame boundary without
// closing the connection; a frame being read is kept whole in the reader.
func (s *session) freeze() { s.mc.Freeze() }

// readLoop runs the engine's read loop (HandleRequest, HandleAnswer) until
// the connection ends or a hot upgrade freezes it (errFrozen).
func (s *session) readLoop(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.close(ctx.Err()) })
	defer stop()
	s.owned.Go(s.sweep)
	err := s.mc.Run()
	if errors.Is(err, meshconn.ErrFrozen) {
		return errFrozen
	}
	return err
}

// readError says why the read loop ends. The engine answered a bad
// header already; a connection that never said HELLO is told why.
func (s *session) readError(_ mesh.Frame, err error) error {
	switch {
	case errors.Is(err, io.EOF), s.dead.Load():
		return io.EOF
	case errors.Is(err, mesh.ErrMalformed), errors.Is(err, mesh.ErrUnsupportedVersion):
		s.log.Warn("bad frame; closing connection", "err", err)
		return err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		if !s.hello {
			// Tell the app, if one is there, why; then close.
			err = fmt.Errorf("%w: no HELLO within %s of connecting (hello_timeout)", context.DeadlineExceeded, s.sc.cfg.HelloTimeout)
			s.sendError(0, err)
			return err
		}
		return fmt.Errorf("idle for %s: %w", s.sc.cfg.IdleTimeout, err)
	}
	return err
}

// readDeadline is the read loop's deadline for the next frame: IdleTimeout
// from now, rounded up to a 64th of it (so the engine resets it only once
// in that while, not for every frame: an idle connection is closed after
// IdleTimeout and at most 1/64 more), and no later than helloBy until the
// app said HELLO, so a connection that never does holds its slot of
// MaxConns only briefly. Read loop only: it reads s.hello, which only the
// read loop writes.
func (s *session) readDeadline() time.Time {
	idle := s.sc.cfg.IdleTimeout
	step := int64(max(idle/64, time.Millisecond))
	// Rounded in nanoseconds since the epoch: Time.Truncate by a step that
	// does not divide a second takes a 128-bit division bit by bit, about
	// half a microsecond for every frame on a 2-core machine.
	end := time.Now().Add(idle).UnixNano()
	d := time.Unix(0, end-end%step+step)
	if !s.hello && s.helloBy.Before(d) {
		return s.helloBy
	}
	return d
}

// HandleAnswer handles the app's answers to DELIVERs. One over the frame
// limit (err) had its payload skipped: whatever the app meant, its
// delivery goes back to the broker, and the connection goes on
// (docs/protocol.md §2.2).
func (s *session) HandleAnswer(f mesh.Frame, err error) {
	if err != nil {
		s.sc.metrics().Rejected(context.Background(), "", "frame_too_large")
		s.log.Warn("answer over the frame limit; skipped, its delivery goes back to the broker", "kind", f.Kind, "id", f.ID, "err", err)
		s.settleAnswer(f.ID, answerNack, 0)
		return
	}
	switch f.Kind {
	case mesh.KindAck:
		s.settleAnswer(f.ID, answerAck, 0)
	case mesh.KindNack:
		var n mesh.Nack
		if err := n.Decode(f.Payload); err != nil {
			s.log.Warn("bad NACK; redelivering now", "err", err)
		}
		s.settleAnswer(f.ID, answerNack, time.Duration(n.DelayMillis)*time.Millisecond)
	case mesh.KindError:
		// The app could not take the delivery (it could not decode
		// it): hand it back as for NACK 0 (docs/protocol.md §5.5).
		s.settleAnswer(f.ID, answerNack, 0)
	case mesh.KindOK:
		// Nothing waits on it.
	default:
		s.log.Warn("unexpected answer kind", "kind", f.Kind)
	}
}

// HandleRequest serves one request of the app (HEARTBEAT is the engine's);
// errors that concern it are answered.
func (s *session) HandleRequest(f mesh.Frame) {
	if f.Kind != mesh.KindHello && !s.helloDone() {
		s.sendError(f.ID, fmt.Errorf("%w: %s before HELLO; HELLO must be the first request", ErrInvalid, f.Kind))
		return
	}
	switch f.Kind {
	case mesh.KindHello:
		s.answer(f.ID, s.onHello(f.Payload))
	case mesh.KindDeclare:
		s.answer(f.ID, s.onDeclare(f.Payload))
	case mesh.KindPublish:
		if err := s.onPublish(f); err != nil {
			s.sendError(f.ID, err)
		}
	case mesh.KindPull:
		if err := s.onPull(f); err != nil {
			s.sendError(f.ID, err)
		}
	default:
		s.sendError(f.ID, fmt.Errorf("%w: apps do not send %s requests", errProtocol, f.Kind))
	}
}

func (s *session) helloDone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hello
}

func (s *session) answer(id uint64, err error) {
	if err != nil {
		s.sendError(id, err)
		return
	}
	s.send(mesh.KindOK, mesh.FlagResponse, id, nil)
}

// onHello binds the connection to one registered app, proven by its
// secret when it has one (docs/protocol.md §5.1, §9). A refused HELLO
// leaves the connection open and unbound.
func (s *session) onHello(p []byte) error {
	var h mesh.Hello
	if err := h.Decode(p); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hello {
		return fmt.Errorf("%w: second HELLO on one connection", ErrInvalid)
	}
	id, err := s.sc.authenticate(h.App, h.Secret)
	if err != nil {
		s.log.Warn("HELLO refused", "app", h.App, "client", h.Client, "err", err)
		return err
	}
	s.who.Store(&id)
	s.hello = true
	s.flags.Store(h.Features&mesh.FeatureMessageFlags != 0)
	s.client = h.Client
	if h.MaxInflight > 0 && int(h.MaxInflight) < s.sc.cfg.MaxInflight {
		s.maxInflight.Store(int32(h.MaxInflight))
	}
	s.log = s.log.With("app", h.App, "client", h.Client)
	s.log.Debug("hello", "max_inflight", s.maxInflight.Load())
	return nil
}

// onDeclare replaces the connection's subscriptions. Every (group, topic)
// must be registered for consumption; otherwise nothing changes.
func (s *session) onDeclare(p []byte) error {
	var d mesh.Declare
	if err := d.Decode(p); err != nil {
		return err
	}
	snap, id := s.sc.snap.Load(), s.who.Load()
	want := make(map[routeKey]mesh.Mode, len(d.Subs))
	for i, sub := range d.Subs {
		k := routeKey{group: sub.Group, topic: sub.Topic}
		if err := s.sc.mayConsume(snap, id, k); err != nil {
			return fmt.Errorf("subs[%d]: %w", i, err)
		}
		if _, dup := want[k]; dup {
			return fmt.Errorf("%w: subs[%d]: %s:%s declared twice", ErrInvalid, i, sub.Group, sub.Topic)
		}
		want[k] = sub.Mode
	}
	for k, mode := range s.subs {
		if want[k] != mode {
			s.leave(k, mode)
		}
	}
	for k, mode := range want {
		if s.subs[k] != mode {
			s.join(k, mode)
		}
	}
	s.log.Debug("declared", "subscriptions", len(want))
	return nil
}

// join and leave run on the read loop only.
func (s *session) join(k routeKey, mode mesh.Mode) {
	r := s.sc.acquireRoute(k)
	s.routes[k] = r
	s.publishJoined()
	s.subs[k] = mode
	if mode == mesh.ModePush {
		r.addPush(s)
	}
}

func (s *session) leave(k routeKey, mode mesh.Mode) {
	r := s.routes[k]
	if mode == mesh.ModePush {
		r.removePush(s)
	}
	for _, w := range s.pullsOf(k) {
		w.finish()
	}
	delete(s.subs, k)
	delete(s.routes, k)
	s.publishJoined()
	s.sc.releaseRoute(r)
}

func (s *session) pullsOf(k routeKey) []*pullWaiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ws []*pullWaiter
	for w := range s.pulls {
		if w.r.key == k {
			ws = append(ws, w)
		}
	}
	return ws
}

// reserve takes one delivery slot if the connection has one free.
func (s *session) reserve() bool {
	max := s.maxInflight.Load()
	for {
		if s.dead.Load() {
			return false
		}
		n := s.slots.Load()
		if n >= max {
			return false
		}
		if s.slots.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (s *session) hasRoom() bool {
	return !s.dead.Load() && s.slots.Load() < s.maxInflight.Load()
}

// release frees one slot and tells the connection's routes.
func (s *session) release() {
	s.slots.Add(-1)
	if rs := s.joined.Load(); rs != nil {
		for _, r := range *rs {
			r.signal()
		}
	}
}

// publishJoined refreshes the lock-free copy of s.routes that release reads
// on every settled delivery. Read loop only.
func (s *session) publishJoined() {
	rs := make([]*route, 0, len(s.routes))
	for _, r := range s.routes {
		rs = append(rs, r)
	}
	s.joined.Store(&rs)
}

// track records d as in flight and returns its delivery id, and the
// delivery to settle in d's place (the pipeline's deliver stages wrap
// it). It fails if the connection is gone.
func (s *session) track(k routeKey, d broker.Delivery) (id uint64, td broker.Delivery, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead.Load() {
		return 0, nil, false
	}
	// The deliver span and delivery metrics live in the wrapper until the
	// app's answer (or a timeout) settles it.
	d = s.sc.pipe.Deliver(d, k.group)
	id = s.ids.Next()
	s.inflight[id] = inflight{d: d, key: k, deadline: time.Now().Add(s.sc.cfg.DeliveryTimeout)}
	s.sc.stats.delivered.Add(1)
	return id, d, true
}

// push sends d as a DELIVER request on a slot reserved by the caller.
func (s *session) push(k routeKey, d broker.Delivery) bool {
	id, d, ok := s.track(k, d)
	if !ok {
		s.release()
		return false
	}
	var err error
	if s.pushTo != nil {
		err = s.pushTo(s.toWire(id, k, d))
	} else {
		// Queued: the upstream loop goes on to its next message while
		// this one is written, and deliveries in a row share syscalls.
		// Queue has encoded m when it returns: m goes back to the pool.
		m, _ := s.sc.wireMsgs.Get().(*mesh.Message)
		if m == nil {
			m = new(mesh.Message)
		}
		*m = s.toWire(id, k, d)
		err = s.mc.Writer.Queue(mesh.KindDeliver, 0, id, m)
		*m = mesh.Message{} // keeps no body alive in the pool
		s.sc.wireMsgs.Put(m)
	}
	if err != nil {
		// The delivery is tracked; closing hands it back to the broker.
		s.close(err)
	}
	return true
}

// answer is how a delivery in flight ends.
type answer int

const (
	answerAck     answer = iota // the app acked it
	answerNack                  // the app nacked it (or answered ERROR): a failed attempt
	answerTimeout               // the app did not answer in time: a failed attempt
	answerNone                  // handed back without a verdict: connection lost, handoff
)

// settle handles the app's answer to delivery id; false if no such
// delivery is in flight.
func (s *session) settle(id uint64, a answer, delay time.Duration) bool {
	inf, ok := s.take(id)
	if !ok {
		return false
	}
	s.settleUpstream(inf, a, delay)
	s.release()
	return true
}

// settleAnswer is settle for the read loop: its broker call shares a
// deadline context with the other answers of the moment
// (Sidecar.settleDeadlines) rather than making one of its own.
func (s *session) settleAnswer(id uint64, a answer, delay time.Duration) {
	inf, ok := s.take(id)
	if !ok {
		return
	}
	s.settleUpstreamIn(s.sc.settleDeadlines.get(), inf, a, delay)
	s.release()
}

// take removes delivery id from the in-flight set.
func (s *session) take(id uint64) (inflight, bool) {
	s.mu.Lock()
	inf, ok := s.inflight[id]
	delete(s.inflight, id)
	s.mu.Unlock()
	if !ok {
		// Timed out earlier (already handed back), or a buggy client.
		s.log.Debug("answer for unknown delivery", "delivery_id", id)
	}
	return inf, ok
}

// settleTimeout bounds a broker call that settles a delivery; if it fails
// the broker redelivers after its ack wait.
const settleTimeout = 5 * time.Second

// settleUpstream passes a's verdict on to the broker: an ack, a failed
// attempt (which the group's dead-letter policy may end, deadletter.go),
// or a plain hand-back.
func (s *session) settleUpstream(inf inflight, a answer, delay time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	s.settleUpstreamIn(ctx, inf, a, delay)
}

// settleUpstreamIn is settleUpstream with the context of its broker calls.
func (s *session) settleUpstreamIn(ctx context.Context, inf inflight, a answer, delay time.Duration) {
	var err error
	ack := a == answerAck
	switch a {
	case answerAck:
		s.sc.stats.acked.Add(1)
		err = inf.d.Ack(ctx)
	case answerNack:
		s.sc.stats.nacked.Add(1)
		err = s.sc.attemptFailed(ctx, inf.key, inf.d, mesh.DeadLetterNack, delay)
	case answerTimeout:
		s.sc.stats.timedOut.Add(1)
		err = s.sc.attemptFailed(ctx, inf.key, inf.d, mesh.DeadLetterTimeout, 0)
	default:
		err = inf.d.Nack(ctx, 0)
	}
	if err != nil {
		s.sc.stats.errors.Add(1)
		// The broker redelivers after its ack wait: a duplicate, never a loss.
		s.log.Warn("settling upstream failed", "group", inf.key.group, "topic", inf.key.topic, "ack", ack, "err", err)
	}
}

// sweep hands deliveries the app did not answer in time back to the broker.
func (s *session) sweep() {
	tick := min(s.sc.cfg.DeliveryTimeout/4, time.Second)
	t := time.NewTicker(max(tick, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		now := time.Now()
		var expired []inflight
		s.mu.Lock()
		for id, inf := range s.inflight {
			if now.After(inf.deadline) {
				expired = append(expired, inf)
				delete(s.inflight, id)
			}
		}
		s.mu.Unlock()
		for _, inf := range expired {
			observe.MarkTimeout(inf.d)
			s.log.Warn("delivery timed out; redelivering", "group", inf.key.group, "topic", inf.key.topic, "message_id", inf.d.MessageID())
			s.settleUpstream(inf, answerTimeout, 0)
			s.release()
		}
	}
}

// cleanup runs when the read loop has returned: it leaves every route,
// answers nothing more, hands unanswered deliveries back to the broker and
// waits for the session's goroutines.
func (s *session) cleanup() {
	s.dead.Store(true)
	_ = s.mc.NetConn().Close()
	close(s.done)
	for k, mode := range s.subs {
		s.leave(k, mode)
	}
	s.finishPulls()
	s.owned.Stop()
	for _, l := range s.lanes {
		close(l)
	}
	s.owned.Wait()
	if n := s.handBackInflight(); n > 0 {
		s.log.Info("handed unanswered deliveries back to the broker", "count", n)
	}
}

// handBackInflight takes every delivery the session holds and hands it
// back to the broker unanswered (it comes again, not counted as a failed
// attempt), freeing its slot; it returns how many there were.
func (s *session) handBackInflight() int {
	s.mu.Lock()
	left := s.inflight
	s.inflight = make(map[uint64]inflight)
	s.mu.Unlock()
	for _, inf := range left {
		s.settleUpstream(inf, answerNone, 0)
		s.slots.Add(-1)
	}
	return len(left)
}

// busy reports whether the session holds deliveries or publishes in flight.
func (s *session) busy() bool {
	if s.publishing.Load() > 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inflight) > 0
}

func (s *session) onPublish(f mesh.Frame) error {
	var p mesh.Publish
	if err := p.Decode(f.Payload); err != nil {
		return err
	}
	msg := broker.Message{Topic: p.Topic, Key: p.Key, Body: p.Body,
		NullBody: p.Flags.NullBody(), EmptyKey: p.Flags.EmptyKey()}
	if len(p.Headers) > 0 {
		msg.Headers = make([]broker.Header, len(p.Headers))
		for i, h := range p.Headers {
			msg.Headers[i] = broker.Header{Key: h.Key, Value: h.Value}
		}
	}
	b, err := s.sc.checkPublish(s.who.Load(), &msg)
	if err != nil {
		return err
	}
	if s.lanes == nil {
		s.startLanes()
	}
	lane := s.lanePick.pick(msg.Key, len(s.lanes))
	s.publishing.Add(1)
	// Blocks when the lane is full: the app's publishes then wait in its
	// socket buffer, which is the backpressure it sees.
	s.lanes[lane] <- publishJob{id: f.ID, msg: msg, broker: b}
	return nil
}

func (s *session) startLanes() {
	s.lanes = make([]chan publishJob, s.sc.cfg.PublishLanes)
	for i := range s.lanes {
		ch := make(chan publishJob, 64)
		s.lanes[i] = ch
		s.owned.Go(func() {
			var l lane
			for l.job = range ch {
				s.publishOne(&l)
			}
		})
	}
}

// lane is what a publish lane reuses from one publish to the next: the
// broker call and the frame encoder take their addresses, so a job and an
// answer of its own would move to the heap for every publish.
type lane struct {
	job publishJob
	ack mesh.PublishAck
}

func (s *session) publishOne(l *lane) {
	defer func() {
		l.job, l.ack = publishJob{}, mesh.PublishAck{} // an idle lane keeps no body alive
		s.publishing.Add(-1)
	}()
	if s.dead.Load() {
		// The app saw the connection drop and will retry; publishing now
		// would only add a duplicate it cannot learn about.
		return
	}
	res, err := s.sc.publishWithin(s.sc.deadlines.get(), l.job.broker, &l.job.msg, "")
	if err != nil {
		s.sendError(l.job.id, err)
		return
	}
	l.ack = mesh.PublishAck{Stream: res.Stream, Partition: res.Partition, Offset: res.Offset, MessageID: res.MessageID}
	_ = s.send(mesh.KindPublishAck, mesh.FlagResponse, l.job.id, &l.ack)
}

// send encodes and writes one frame (the engine's pooled writer). A write
// error leaves closing to the read loop, which then fails too.
func (s *session) send(kind mesh.Kind, flags mesh.Flags, id uint64, payload mesh.Encoder) error {
	return s.mc.Writer.Send(kind, flags, id, payload)
}

func (s *session) sendError(id uint64, err error) {
	e := mesh.Error{Code: codeOf(err), Message: err.Error()}
	_ = s.send(mesh.KindError, mesh.FlagResponse, id, &e)
}

// outFrameMax bounds frames the sidecar sends; deliveries may carry bodies
// published by others straight to the broker, so it is at least the
// protocol default.
func (sc *Sidecar) outFrameMax() int { return max(sc.cfg.MaxFrameSize, mesh.DefaultMaxFrameSize) }

// toWire converts a broker delivery into its wire form for this
// connection: with the message flags when its app reads them, else with
// version 1's meaning (a null body is empty, an empty key none).
func (s *session) toWire(id uint64, k routeKey, d broker.Delivery) mesh.Message {
	m := forward.ToWire(k.group, k.topic, d)
	m.DeliveryID = id
	if !s.flags.Load() {
		m.Flags = 0
	}
	return m
}
