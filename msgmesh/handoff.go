package msgmesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/core"
)

// HandoffState is what a sidecar passes to its successor in a hot upgrade
// (docs/design.md flow 10): its listening sockets and app connections as
// files, and each connection's protocol state. The files travel by name
// over a unix socket (Files; package internal/upgrade); the rest is JSON.
type HandoffState struct {
	Mesh  *os.File    `json:"-"`
	HTTP  *os.File    `json:"-"`
	Conns []ConnState `json:"conns"`
	// GRPC is the gRPC API's listener; nil when the sidecar has none.
	GRPC *os.File `json:"-"`
	// HTTPConns are the HTTP API's keep-alive connections (httpmove.go).
	HTTPConns []HTTPConnState `json:"http_conns,omitempty"`
	// Carried are the messages upstream consumers had fetched but not
	// delivered (broker.Keeper), for the successor's consumers to deliver
	// first; at most carryBudget bytes in all.
	Carried []Carried `json:"carried,omitempty"`
}

// Carried is what one upstream consumer kept (broker.Keeper.Kept).
type Carried struct {
	Cluster     string          `json:"cluster"`
	Group       string          `json:"group"`
	Topic       string          `json:"topic"`
	BrokerGroup string          `json:"broker_group,omitempty"`
	Messages    json.RawMessage `json:"messages"`
}

// carryBudget bounds HandoffState.Carried (message bodies): half of what
// one upgrade state message may hold (internal/upgrade), the rest left to
// the connections' unparsed bytes and held deliveries. What a consumer
// kept beyond it goes back to the broker.
const carryBudget = 32 << 20

// ConnState is one app connection in flight between two processes.
type ConnState struct {
	File  *os.File `json:"-"`
	Hello bool     `json:"hello"`
	App   string   `json:"app"`
	// Proof is the hash of the app secret the connection proved at HELLO
	// (nil: none), so the successor holds it to the same registration.
	Proof       []byte              `json:"proof,omitempty"`
	Client      string              `json:"client"`
	MaxInflight int32               `json:"max_inflight"`
	Subs        []mesh.Subscription `json:"subs"`
	// Buffered are bytes read from the app but not yet parsed.
	Buffered []byte `json:"buffered"`
	// Skip is how many bytes the app is still sending of a frame refused
	// as too large: the successor drops them before reading a frame.
	Skip int64 `json:"skip,omitempty"`
	// LastID is the last delivery id used, so the successor never reuses one.
	LastID uint64 `json:"last_id"`
	// Held are the deliveries the app held unanswered, which the successor
	// settles when the app answers them (on brokers that allow it:
	// broker.Portable); the others went back to the broker.
	Held []HeldDelivery `json:"held,omitempty"`
	// adopted are Held's deliveries as this process's adapters took them
	// over (adoptInheritedHeld), by delivery id; errs why one could not be.
	adopted map[uint64]broker.Delivery
	errs    map[uint64]error
}

// HeldDelivery is a delivery an app held, unanswered, when its connection
// moved to a successor process.
type HeldDelivery struct {
	ID       uint64    `json:"id"` // the app's delivery id
	Group    string    `json:"group"`
	Topic    string    `json:"topic"`
	Cluster  string    `json:"cluster"`
	Deadline time.Time `json:"deadline"` // the delivery timeout, as before the move
	Token    []byte    `json:"token"`    // broker.Portable's
	// d is the delivery until its Token is taken (tokenize).
	d broker.Delivery
}

// Files names every file in the state: "mesh", "http", "grpc" (when
// there is a gRPC listener), "conn/<i>" for Conns[i] and "http/conn/<i>"
// for HTTPConns[i]. A msgmesh from before named files sent mesh, http and
// the connections by position in that order, and its successor takes them
// back under these names; it closes the HTTP connections, which it does
// not know.
func (h *HandoffState) Files() map[string]*os.File {
	fs := map[string]*os.File{"mesh": h.Mesh, "http": h.HTTP}
	if h.GRPC != nil {
		fs["grpc"] = h.GRPC
	}
	for i, c := range h.Conns {
		fs[fmt.Sprintf("conn/%d", i)] = c.File
	}
	for i, c := range h.HTTPConns {
		fs[fmt.Sprintf("http/conn/%d", i)] = c.File
	}
	return fs
}

// SetFiles puts back the files by the names Files gave them.
func (h *HandoffState) SetFiles(fs map[string]*os.File) error {
	h.Mesh, h.HTTP, h.GRPC = fs["mesh"], fs["http"], fs["grpc"]
	if h.Mesh == nil || h.HTTP == nil {
		return errors.New("msgmesh: handoff: the mesh or HTTP listener is missing")
	}
	for i := range h.Conns {
		if h.Conns[i].File = fs[fmt.Sprintf("conn/%d", i)]; h.Conns[i].File == nil {
			return fmt.Errorf("msgmesh: handoff: connection %d of %d is missing", i, len(h.Conns))
		}
	}
	for i := range h.HTTPConns {
		if h.HTTPConns[i].File = fs[fmt.Sprintf("http/conn/%d", i)]; h.HTTPConns[i].File == nil {
			return fmt.Errorf("msgmesh: handoff: HTTP connection %d of %d is missing", i, len(h.HTTPConns))
		}
	}
	return nil
}

// Close closes every file; the sockets live on in whoever holds copies.
func (h *HandoffState) Close() {
	for _, f := range h.Files() {
		if f != nil {
			_ = f.Close()
		}
	}
}

// Handoff quiesces the sidecar for a successor process and returns what it
// needs, in the order docs/design.md flow 10 gives:
//  1. pause delivery on every upstream consumer, answer pending pulls, and
//     wait (until ctx ends) for the answers to deliveries that cannot move
//     (forwarded, HTTP, push, and those of brokers that cannot settle
//     another process's deliveries); what is still unanswered then goes
//     back to the broker. Deliveries an app holds on a broker that can
//     (broker.Portable) move with its connection (ConnState.Held);
//  2. stop the upstream consumers, stop accepting (the listening sockets
//     stay open: connections queue in the kernel), finish the requests
//     already read, stop reading at a frame boundary, and capture each
//     connection with its unparsed bytes;
//  3. close the registration store, so the successor can open it.
//
// Afterwards the sidecar is stopped, as after Shutdown, but no app
// connection was closed: the returned files keep every socket open. If the
// successor fails, a new Sidecar built with Config.Inherit set to the same
// state resumes where this one stopped.
func (s *Sidecar) Handoff(ctx context.Context) (*HandoffState, error) {
	var (
		st  *HandoffState
		err = ErrShuttingDown
	)
	s.shutdownOnce.Do(func() { st, err = s.handoff(ctx) })
	return st, err
}

func (s *Sidecar) handoff(ctx context.Context) (*HandoffState, error) {
	start := time.Now()
	s.grpcNotServing()
	s.keepPrefetched()
	if err := s.PauseDelivery(ctx); err != nil {
		s.log.Warn("handoff: pausing delivery", "err", err)
	}
	for _, ss := range s.sessionsNow() {
		ss.finishPulls() // writes PULL_RESULTs: not under sessMu
	}
	// HTTP pulls too; new ones are refused from now on, while acks and
	// nacks of HTTP deliveries are served until the HTTP API stops below.
	s.detached.finishPulls()
	// Deliveries another process can settle move with their connection;
	// wait for the others (forwarded ones, HTTP and push sessions', those
	// of brokers that cannot hand over).
	if err := s.waitFor(ctx, s.unportableInflight); err != nil {
		s.log.Warn("handoff: deliveries still unanswered go back to the broker", "count", s.unportableInflight())
	}
	s.push.stop(ctx) // the settle wait let push subscriptions answer what they held
	paused := time.Now()

	s.cancel()
	s.bg.Stop()

	st := &HandoffState{}
	var err error
	if st.Mesh, err = listenerFile(s.meshLn); err != nil {
		return nil, err
	}
	if st.HTTP, err = listenerFile(s.httpLn); err != nil {
		_ = st.Mesh.Close()
		return nil, err
	}
	if s.grpcLn != nil {
		if st.GRPC, err = listenerFile(s.grpcLn); err != nil {
			st.Close()
			return nil, err
		}
	}
	s.meshSrv.Close()
	// The successor holds the gRPC socket now: new connections wait in
	// the kernel for it.
	s.grpcStopAccepting()
	// HTTP keep-alive connections move once their requests are answered;
	// the server then has none left to wait for.
	st.HTTPConns = s.httpConns.freeze(ctx)
	if err := s.httpSrv.Shutdown(ctx); err != nil {
		s.log.Warn("handoff: http requests still running", "err", err)
	}
	// HTTP deliveries still unanswered go back to the broker: their ids
	// mean nothing to the successor. Subscribe streams end UNAVAILABLE and
	// the gRPC server stops (GOAWAY): clients reconnect to the successor.
	s.detached.stopAll()
	s.stopGRPC(ctx)

	s.sessMu.Lock()
	s.handingOff = true
	for ss := range s.sessions {
		ss.freeze()
	}
	s.sessMu.Unlock()
	if err := s.meshSrv.Wait(ctx); err != nil {
		s.stopUpstreams(ctx, 0) // what they kept goes back to the broker
		st.Close()
		return nil, fmt.Errorf("msgmesh: handoff: connections did not stop: %w", err)
	}
	s.bg.Wait()
	s.deadLetters.Stop()
	s.deadLetters.Wait()
	s.stopHealth()
	// The upstream consumers stop only now that no app answer reaches
	// this process any more, so that what they commit, and the held
	// deliveries' tokens made from it, are final.
	st.Carried = s.stopUpstreams(ctx, carryBudget)
	s.sessMu.Lock()
	st.Conns = s.frozen
	s.frozen = nil
	s.sessMu.Unlock()
	s.tokenize(st.Conns)
	if err := s.store.Close(); err != nil {
		st.Close()
		return nil, fmt.Errorf("msgmesh: handoff: %w", err)
	}
	held, partial := 0, 0
	for _, c := range st.Conns {
		held += len(c.Held)
	}
	for _, c := range st.HTTPConns {
		if len(c.Buffered) > 0 {
			partial++
		}
	}
	s.log.Info("handed off", "connections", len(st.Conns), "http_connections", len(st.HTTPConns), "http_mid_request", partial, "held_deliveries", held, "settle", paused.Sub(start), "total", time.Since(start),
		"carried_upstreams", len(st.Carried))
	return st, nil
}

// keepPrefetched makes the upstream consumers that can (broker.Keeper)
// keep what they fetched and did not deliver, for the successor, rather
// than hand it back to a broker that counts a hand-back as a delivery.
func (s *Sidecar) keepPrefetched() {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	for _, u := range s.upstreams {
		if k, ok := u.consumer.(broker.Keeper); ok {
			k.Keep()
		}
	}
}

// stopUpstreams stops every upstream consumer for a handoff, and returns
// what they kept (keepPrefetched), up to budget bytes; the rest goes back
// to the broker.
func (s *Sidecar) stopUpstreams(ctx context.Context, budget int) []Carried {
	var carried []Carried
	s.reconcileMu.Lock()
	_ = eachUpstream(s.upstreams, func(u *upstream) error {
		// The deliveries apps hold move (their tokens are made from what
		// the release commits): a consumer whose Close would wait for them
		// lets go now.
		if r, ok := u.consumer.(broker.Releaser); ok {
			if err := r.Release(ctx); err != nil {
				s.log.Warn("handoff: releasing an upstream consumer", "group", u.key.group, "topic", u.key.topic, "err", err)
			}
		}
		u.stop(ctx)
		return nil
	})
	for k, u := range s.upstreams {
		delete(s.upstreams, k)
		if kp, ok := u.consumer.(broker.Keeper); ok {
			msgs, err := kp.Kept(ctx, budget)
			if err != nil {
				s.log.Warn("handoff: messages an upstream consumer kept go back to the broker", "group", k.group, "topic", k.topic, "err", err)
			}
			if len(msgs) > 0 {
				budget -= len(msgs)
				carried = append(carried, Carried{Cluster: k.cluster, Group: k.group, Topic: k.topic, BrokerGroup: k.brokerGroup, Messages: msgs})
			}
		}
	}
	clear(s.failed)
	s.publishUpstreamsLocked(nil)
	s.reconcileMu.Unlock()
	return carried
}

func listenerFile(ln net.Listener) (*os.File, error) {
	f, err := core.FileOf(ln)
	if err != nil {
		return nil, fmt.Errorf("msgmesh: handoff: listener: %w", err)
	}
	return f, nil
}

// finishPulls answers the connection's pending PULLs with what they hold.
func (s *session) finishPulls() {
	s.mu.Lock()
	ws := make([]*pullWaiter, 0, len(s.pulls))
	for w := range s.pulls {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	for _, w := range ws {
		w.finish()
	}
}

// freezeCleanup runs when a hot upgrade stopped the read loop: publishes
// already read are finished and answered, anything still in flight goes
// back to the broker, and the connection is captured, not closed.
func (s *session) freezeCleanup() {
	close(s.done)
	s.finishPulls()
	s.owned.Stop()
	for _, l := range s.lanes {
		close(l)
	}
	s.owned.Wait() // lanes answer what they publish
	held := s.handOverInflight()
	subs := make([]mesh.Subscription, 0, len(s.subs))
	for k, mode := range s.subs {
		subs = append(subs, mesh.Subscription{Group: k.group, Topic: k.topic, Mode: mode})
		s.leave(k, mode)
	}
	s.dead.Store(true)
	flushErr := s.mc.Writer.Close()
	f, err := core.FileOf(s.mc.NetConn())
	_ = s.mc.NetConn().Close()
	if err != nil || flushErr != nil {
		s.log.Warn("connection lost during handoff", "err", errors.Join(err, flushErr))
		return
	}
	s.mu.Lock()
	cs := ConnState{File: f, Hello: s.hello, Client: s.client, MaxInflight: s.maxInflight.Load(),
		Subs: subs, Buffered: s.mc.Reader().Buffered(), Skip: s.mc.Reader().Skipping(), LastID: s.ids.Last(), Held: held}
	s.mu.Unlock()
	if id := s.who.Load(); id != nil {
		cs.App, cs.Proof = id.app, id.proof
	}
	s.sc.sessMu.Lock()
	s.sc.frozen = append(s.sc.frozen, cs)
	s.sc.sessMu.Unlock()
}

// adopt starts serving a connection a predecessor handed over.
func (sc *Sidecar) adopt(ctx context.Context, cs ConnState) {
	conn, err := net.FileConn(cs.File)
	_ = cs.File.Close()
	if err != nil {
		sc.log.Error("adopting connection", "err", err)
		return
	}
	s := sc.newSession(conn)
	s.mc.Reader().Prefill(cs.Buffered)
	s.mc.Reader().Skip(cs.Skip)
	// Ids go on past any another process may have given on this
	// connection since the state was taken: a successor sends nothing
	// before it says ready, but one of an older version served first and
	// may have given ids after LastID before it died, and this may be the
	// predecessor resuming (docs/upgrade.md). A process gives far fewer
	// than one id per nanosecond, so the clock is such a floor.
	s.ids.Continue(max(cs.LastID, uint64(time.Now().UnixNano())))
	s.hello, s.client = cs.Hello, cs.Client
	if cs.MaxInflight > 0 {
		s.maxInflight.Store(cs.MaxInflight)
	}
	if cs.Hello {
		s.who.Store(&identity{app: cs.App, proof: cs.Proof})
		s.log = s.log.With("app", cs.App, "client", cs.Client)
	}
	// The deliveries the app holds take their slots before its
	// subscriptions join their routes: a route that saw the connection
	// empty would send it a window's worth more than the in-flight limit
	// it declared, and an app whose queue is that limit (the Go SDK's)
	// hands the excess back, each a redelivery at the broker.
	s.adoptHeld(cs)
	snap := sc.snap.Load()
	for _, sub := range cs.Subs {
		k := routeKey{group: sub.Group, topic: sub.Topic}
		if err := sc.mayConsume(snap, s.who.Load(), k); err != nil {
			s.log.Warn("adopted subscription is no longer allowed; dropping it", "group", sub.Group, "topic", sub.Topic, "err", err)
			continue
		}
		s.join(k, sub.Mode)
	}
	sc.runSession(ctx, s)
}

// portable reports whether another process can settle d (hot upgrade).
func portable(d broker.Delivery) bool {
	_, ok := broker.As[broker.Portable](d)
	return ok
}

// handOverInflight takes every delivery the session holds: those another
// process can settle are returned for the successor (this process lets go
// of their span and flow-control slot, and settles nothing); the others go
// back to the broker unanswered.
func (s *session) handOverInflight() []HeldDelivery {
	s.mu.Lock()
	left := s.inflight
	s.inflight = make(map[uint64]inflight)
	s.mu.Unlock()
	var held []HeldDelivery
	for id, inf := range left {
		if !portable(inf.d) {
			s.settleUpstream(inf, answerNone, 0)
			s.slots.Add(-1)
			continue
		}
		held = append(held, HeldDelivery{ID: id, Group: inf.key.group, Topic: inf.key.topic,
			Cluster: s.sc.clusterOf(inf.key.topic), Deadline: inf.deadline, d: inf.d})
		broker.Detach(inf.d)
		s.slots.Add(-1)
	}
	return held
}

// tokenize takes the tokens of the held deliveries once the upstream
// consumers stopped (an adapter's token may carry what its consumer
// committed last). One without a token after all goes back to the broker.
func (s *Sidecar) tokenize(conns []ConnState) {
	for i := range conns {
		held := conns[i].Held[:0]
		for _, h := range conns[i].Held {
			p, _ := broker.As[broker.Portable](h.d)
			tok, ok := p.Token()
			if !ok {
				handBack(h.d)
				continue
			}
			h.Token, h.d = tok, nil
			held = append(held, h)
		}
		conns[i].Held = held
	}
}

// adoptInheritedHeld gives every delivery the predecessor's connections
// held to its broker adapter before the upstream consumers start: an
// adapter that settles an inherited delivery through its own consumer
// (Kafka) must know all of them before that consumer reads their
// partitions again.
func (sc *Sidecar) adoptInheritedHeld() {
	inh := sc.cfg.Inherit
	if inh == nil {
		return
	}
	sc.reconcileMu.Lock()
	sc.carried = make(map[upstreamKey][]byte, len(inh.Carried))
	for _, c := range inh.Carried {
		sc.carried[upstreamKey{cluster: c.Cluster, group: c.Group, topic: c.Topic, brokerGroup: c.BrokerGroup}] = c.Messages
	}
	sc.reconcileMu.Unlock()
	for i := range inh.Conns {
		cs := &inh.Conns[i]
		cs.adopted = make(map[uint64]broker.Delivery, len(cs.Held))
		cs.errs = map[uint64]error{}
		for _, h := range cs.Held {
			if d, err := sc.adoptDelivery(h); err != nil {
				cs.errs[h.ID] = err
			} else {
				cs.adopted[h.ID] = d
			}
		}
	}
}

// adoptHeld takes over deliveries a predecessor's app connection held: the
// app's answers to them settle them here. One that cannot be adopted (its
// cluster is gone from this process's config, or its broker cannot adopt)
// is logged; the broker offers it again (after its ack wait on NATS).
func (s *session) adoptHeld(cs ConnState) {
	for _, h := range cs.Held {
		d, err := cs.adopted[h.ID], cs.errs[h.ID]
		if d == nil && err == nil { // not adopted before Start
			d, err = s.sc.adoptDelivery(h)
		}
		if err != nil {
			s.log.Warn("cannot take over a delivery the app holds; the broker offers it again after its ack wait",
				"group", h.Group, "topic", h.Topic, "delivery_id", h.ID, "err", err)
			continue
		}
		k := routeKey{group: h.Group, topic: h.Topic}
		s.mu.Lock()
		s.inflight[h.ID] = inflight{d: s.sc.pipe.Deliver(d, h.Group), key: k, deadline: h.Deadline}
		s.mu.Unlock()
		s.slots.Add(1)
	}
}

// adoptDelivery turns a handed-over delivery back into one this process
// settles.
func (sc *Sidecar) adoptDelivery(h HeldDelivery) (broker.Delivery, error) {
	b, ok := sc.cfg.Brokers[h.Cluster]
	if !ok {
		return nil, fmt.Errorf("cluster %q is not configured", h.Cluster)
	}
	a, ok := b.(broker.Adopter)
	if !ok {
		return nil, fmt.Errorf("the %q cluster's adapter cannot settle another process's deliveries", h.Cluster)
	}
	return a.Adopt(h.Token)
}
