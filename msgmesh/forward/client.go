package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/codecs/mesh/meshconn"
	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/internal/pki"
)

// Defaults and timing of the forwarding side.
const (
	// DefaultTimeout is ClientConfig.Timeout when zero.
	DefaultTimeout = 30 * time.Second
	// DefaultDialTimeout is ClientConfig.DialTimeout when zero.
	DefaultDialTimeout = 5 * time.Second
	// DefaultTakeTimeout is ClientConfig.TakeTimeout when zero.
	DefaultTakeTimeout = 800 * time.Millisecond

	// heartbeatEvery is how often a forwarder sends HEARTBEAT on each
	// connection; deadAfter without a single frame from the sibling (its
	// heartbeat answers included) and the connection is declared dead.
	heartbeatEvery = 10 * time.Second
	deadAfter      = 3 * heartbeatEvery
	// idleClose closes a connection that carried nothing for this long.
	idleClose = 5 * time.Minute
	// The per-sibling breaker's backoff after a failed dial or a dead
	// connection: first wait, cap. It doubles on each failure and starts
	// over once a connection has stayed up for backoffMax. The cap is low
	// because refusing costs the callers nothing (they deliver locally at
	// once) and probing happens in the background: it bounds how long a
	// sibling that is back waits for traffic.
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
	// settleTimeout bounds each Ack/Nack toward the broker.
	settleTimeout = 5 * time.Second
	// writeTimeout bounds each write to a sibling.
	writeTimeout = 5 * time.Second
)

// ClientConfig configures a Forwarder.
type ClientConfig struct {
	// TLS is required: mutual TLS with the app check, as built by
	// pki.ClientTLS. MinVersion is raised to TLS 1.3.
	TLS *tls.Config
	// App is this sidecar's app; siblings refuse any other.
	App string
	// Name identifies this sidecar in siblings' logs (its forwarding
	// address, say); optional.
	Name string
	// Timeout is how long to wait for the sibling's app to answer a
	// forwarded delivery, counted from when it was sent; then it is handed
	// back to the broker (Nack 0). Zero: DefaultTimeout. Set it a little
	// above the sibling's delivery timeout, and below the broker's ack wait.
	Timeout time.Duration
	// DialTimeout bounds connecting to a sibling: TCP, TLS handshake and
	// HELLO. Zero: DefaultDialTimeout.
	DialTimeout time.Duration
	// TakeTimeout is how long a sibling may stay silent, sending no frame
	// at all, after this side sent it a request (DELIVER or HEARTBEAT)
	// before its connection is declared silently cut: packets stop without
	// a reset (a partition, a frozen host). Then the deliveries it has not
	// taken fail their Forward (the caller delivers them locally at once),
	// the ones it took go back to the broker, and the sibling is refused for
	// the breaker's backoff. While a DELIVER waits to be taken the
	// forwarder sends HEARTBEATs, which a live sibling answers at once even
	// when its app is slow to take the delivery, so a busy sibling is not
	// mistaken for a cut one (it keeps the backpressure of
	// docs/forwarding.md §5). Zero: DefaultTakeTimeout (800 ms: with the
	// check every tenth of it, a cut costs under 1 s). Keep it well
	// above the round-trip time to the siblings.
	TakeTimeout time.Duration
	// MaxFrameSize bounds frames sent (a delivery too big for it is not
	// forwarded: Forward fails and the caller delivers locally) and
	// received. Zero: mesh.DefaultMaxFrameSize. Keep it equal to the
	// siblings' ServerConfig.MaxFrameSize.
	MaxFrameSize int
	// OnLost, if set, is called (on a Forwarder goroutine, without locks
	// held) after a delivery the sibling had taken was handed back to the
	// broker with Nack(0) because its connection died, Timeout passed, or
	// the sibling failed it after taking it. err wraps ErrConnLost,
	// ErrTimeout or ErrRefused. For metrics and logs; it must not block.
	OnLost func(sibling, group, topic string, err error)
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

// Forwarder forwards deliveries to sibling sidecars. It keeps one
// multiplexed connection per sibling address and dials lazily on the first
// Forward.
//
// Each sibling has a circuit breaker. A failed dial, a connection that
// dies, or one that goes silent (TakeTimeout) opens it: the sibling is
// refused at once (ErrSiblingDown, so callers deliver locally without
// waiting) for a backoff, 100 ms doubling to 5 s. When it passes, one
// probe, a dial and HELLO, runs in the background; while it runs everyone
// is refused. The probe's success closes the breaker, its failure reopens
// it for the next backoff. A sibling asked for within the last idleClose
// is probed as soon as each backoff passes, so one that came back (a
// partition healed) is connected before the next Forward needs it; for
// one not asked for that long, the next Forward starts the probe (and is
// refused).
// Safe for concurrent use.
type Forwarder struct {
	cfg      ClientConfig
	tls      *tls.Config
	log      *slog.Logger
	routines core.Routines // each connection's read loop and ticker; probes
	ctx      context.Context
	cancel   context.CancelFunc // ends probes; called by Close

	mu     sync.Mutex
	peers  map[string]*peer
	closed bool

	omu   sync.Mutex
	count int           // deliveries owned: sent and not settled
	zero  chan struct{} // closed when count drops to 0; nil if nobody waits

	hbEvery, dead, idle time.Duration // the constants above; tests shorten them
}

// NewForwarder checks cfg and returns a Forwarder with no connection yet.
func NewForwarder(cfg ClientConfig) (*Forwarder, error) {
	if cfg.TLS == nil {
		return nil, fmt.Errorf("%w: ClientConfig.TLS is required (pki.ClientTLS)", ErrConfig)
	}
	if cfg.TLS.GetClientCertificate == nil && len(cfg.TLS.Certificates) == 0 {
		return nil, fmt.Errorf("%w: ClientConfig.TLS has no client certificate", ErrConfig)
	}
	if err := pki.ValidApp(cfg.App); err != nil {
		return nil, fmt.Errorf("%w: ClientConfig.App: %w", ErrConfig, err)
	}
	if cfg.Timeout < 0 || cfg.DialTimeout < 0 || cfg.TakeTimeout < 0 || cfg.MaxFrameSize < 0 {
		return nil, fmt.Errorf("%w: negative Timeout, DialTimeout, TakeTimeout or MaxFrameSize", ErrConfig)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.TakeTimeout == 0 {
		cfg.TakeTimeout = DefaultTakeTimeout
	}
	if cfg.MaxFrameSize == 0 {
		cfg.MaxFrameSize = mesh.DefaultMaxFrameSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tc := cfg.TLS.Clone()
	tc.MinVersion = max(tc.MinVersion, tls.VersionTLS13)
	ctx, cancel := context.WithCancel(context.Background())
	return &Forwarder{
		ctx:     ctx,
		cancel:  cancel,
		cfg:     cfg,
		tls:     tc,
		log:     cfg.Logger.With("component", "forwarder", "app", cfg.App),
		peers:   make(map[string]*peer),
		hbEvery: heartbeatEvery,
		dead:    deadAfter,
		idle:    idleClose,
	}, nil
}

// Forward sends d to the sibling at address sibling for (group, topic) and
// returns once the sibling took it.
//
// An error means d was not handed over and is untouched: the caller
// delivers it itself. That happens when the sibling cannot be reached
// (ErrUnavailable: dial timeout, refused TLS, connection lost or silent
// for TakeTimeout before the sibling answered; with ErrSiblingDown too
// when its breaker is open, which fails at once), refuses it
// (*RefusedError: not registered there, too many in flight, shutting
// down), or did not take it within Timeout; and when the Forwarder is
// closed (ErrClosed) or the message does not fit in a frame.
//
// nil means the Forwarder owns d and settles it exactly once: d.Ack or
// d.Nack(delay) when the sibling reports its app's answer; d.Nack(0) (and
// OnLost) when the connection dies or Timeout passes first. nil is also
// returned when ctx ends after d was sent but before the sibling said
// whether it took it: the outcome is then settled the same way (a refusal
// arriving later becomes Nack(0)). ctx bounds dialing and that wait only.
func (f *Forwarder) Forward(ctx context.Context, sibling, group, topic string, d broker.Delivery) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, sibling, err)
	}
	e := &entry{d: d, group: group, topic: topic, waiting: true, ch: make(chan error, 1)}
	var (
		c   *clientConn
		id  uint64
		err error
	)
	// A second attempt covers a connection closed for idleness between
	// conn and add.
	for range 2 {
		if c, err = f.conn(ctx, sibling); err != nil {
			return err
		}
		if id, err = c.add(e, time.Now().Add(f.cfg.Timeout)); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	m := ToWire(group, topic, d)
	m.DeliveryID = id
	c.asking()
	if err := c.mc.Writer.Send(mesh.KindDeliver, 0, id, &m); err != nil {
		if errors.Is(err, mesh.ErrFrameTooLarge) {
			c.forget(id)
			return fmt.Errorf("forward: %w", err)
		}
		// The frame may be half on the wire: the connection is unusable.
		// fail answers e (still waiting) with ErrUnavailable.
		c.fail(fmt.Errorf("%w: writing DELIVER: %w", ErrUnavailable, err))
	}
	select {
	case err := <-e.ch:
		return err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if e.waiting {
		e.waiting = false // handed off: the connection settles d
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	return <-e.ch
}

// Outstanding returns the number of forwarded deliveries the Forwarder owns
// and has not settled yet.
func (f *Forwarder) Outstanding() int {
	f.omu.Lock()
	defer f.omu.Unlock()
	return f.count
}

// Drain waits until every forwarded delivery has been settled (acked,
// nacked, or handed back), or ctx ends. The caller stops calling Forward
// first; it is the forwarding half of pausing delivery.
func (f *Forwarder) Drain(ctx context.Context) error {
	for {
		f.omu.Lock()
		if f.count == 0 {
			f.omu.Unlock()
			return nil
		}
		if f.zero == nil {
			f.zero = make(chan struct{})
		}
		ch := f.zero
		f.omu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *Forwarder) own(n int) {
	f.omu.Lock()
	f.count += n
	if f.count == 0 && f.zero != nil {
		close(f.zero)
		f.zero = nil
	}
	f.omu.Unlock()
}

// Close closes every sibling connection: deliveries still unanswered are
// handed back to the broker (Nack 0). Later Forwards fail with ErrClosed.
// It waits for the Forwarder's goroutines. Safe to call more than once.
func (f *Forwarder) Close() error {
	f.cancel()
	f.mu.Lock()
	f.closed = true
	var conns []*clientConn
	for _, p := range f.peers {
		p.mu.Lock()
		if p.c != nil {
			conns = append(conns, p.c)
		}
		if p.probe != nil {
			p.probe.Stop()
		}
		p.mu.Unlock()
	}
	f.mu.Unlock()
	for _, c := range conns {
		c.fail(ErrClosed)
	}
	f.routines.Stop()
	f.routines.Wait()
	return nil
}

// peer is one sibling address: its connection, or the state of dialing it,
// and its circuit breaker.
type peer struct {
	addr string

	mu      sync.Mutex
	c       *clientConn   // the live connection, nil if none
	dialing chan struct{} // closed when the dial in progress ends; nil if none
	// The breaker: down from a failure until a dial succeeds. While down,
	// Forward is refused before retryAt; after it, one probe dials in the
	// background (dialing set) and Forward is still refused.
	down    bool
	lastErr error     // why it is down
	retryAt time.Time // no dial before this while down
	backoff time.Duration
	removed bool // dropped from Forwarder.peers; look it up again
	// wanted is when a Forward last asked for the sibling while it had no
	// connection (with one, the connection's lastUsed says it, copied
	// here when it dies); probeNow starts a probe only while it is recent.
	wanted time.Time
	probe  *time.Timer
}

// trip opens p's breaker after a failed dial, or after connection c died
// (upSince: when c was connected; zero for a dial) for reason, and returns
// the backoff. A connection that stayed up for backoffMax starts the
// backoff over; a sibling that fails again soon waits twice as long, so a
// flapping sibling is not redialled faster and faster. p.mu must be held.
func (p *peer) trip(reason error, upSince time.Time) time.Duration {
	if !upSince.IsZero() && time.Since(upSince) >= backoffMax {
		p.backoff = 0
	}
	p.down = true
	p.lastErr = reason
	p.backoff = min(max(2*p.backoff, backoffMin), backoffMax)
	p.retryAt = time.Now().Add(p.backoff)
	return p.backoff
}

// conn returns a live connection to addr, dialing if needed.
func (f *Forwarder) conn(ctx context.Context, addr string) (*clientConn, error) {
	for {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return nil, ErrClosed
		}
		p := f.peers[addr]
		if p == nil {
			p = &peer{addr: addr}
			f.peers[addr] = p
		}
		f.mu.Unlock()

		p.mu.Lock()
		switch {
		case p.removed:
			p.mu.Unlock()
			continue
		case p.c != nil:
			c := p.c
			c.lastUsed = time.Now() // p.wanted for when it dies (fail)
			p.mu.Unlock()
			return c, nil
		}
		p.wanted = time.Now()
		switch {
		case p.down && p.dialing != nil:
			err := fmt.Errorf("%w: %w: %s: probing it; down since: %w", ErrUnavailable, ErrSiblingDown, addr, p.lastErr)
			p.mu.Unlock()
			return nil, err
		case p.dialing != nil:
			ch := p.dialing
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %s: waiting for the connection: %w", ErrUnavailable, addr, ctx.Err())
			}
		case p.down && time.Now().Before(p.retryAt):
			err := fmt.Errorf("%w: %w: %s: probing it in %v; down since: %w", ErrUnavailable, ErrSiblingDown, addr, time.Until(p.retryAt).Round(time.Millisecond), p.lastErr)
			p.mu.Unlock()
			return nil, err
		}
		ch := make(chan struct{})
		p.dialing = ch
		probe, lastErr := p.down, p.lastErr
		p.mu.Unlock()

		if probe {
			// Half-open: one dial in the background; nobody waits for it.
			err := fmt.Errorf("%w: %w: %s: probing it; down since: %w", ErrUnavailable, ErrSiblingDown, addr, lastErr)
			if !f.routines.Go(func() { _, _ = f.dialed(f.ctx, p, ch) }) {
				p.mu.Lock()
				p.dialing = nil
				close(ch)
				p.mu.Unlock()
				return nil, ErrClosed
			}
			return nil, err
		}
		return f.dialed(ctx, p, ch)
	}
}

// scheduleProbe starts p's probe when its backoff passes, if a Forward
// asked for p within the last f.idle by then (see Forwarder). p.mu is
// held, and p was just tripped.
func (f *Forwarder) scheduleProbe(p *peer) {
	if p.probe != nil {
		p.probe.Stop()
	}
	p.probe = time.AfterFunc(time.Until(p.retryAt), func() { f.probeNow(p) })
}

// probeNow starts p's probe in the background, unless p is up, being
// dialled, forgotten, not asked for within f.idle, or the Forwarder is
// closed (Close stops the timers; this covers one already firing).
func (f *Forwarder) probeNow(p *peer) {
	p.mu.Lock()
	if f.ctx.Err() != nil || p.removed || !p.down || p.c != nil || p.dialing != nil || time.Since(p.wanted) > f.idle {
		p.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	p.dialing = ch
	p.mu.Unlock()
	if !f.routines.Go(func() { _, _ = f.dialed(f.ctx, p, ch) }) {
		p.mu.Lock()
		p.dialing = nil
		close(ch)
		p.mu.Unlock()
	}
}

// dialed dials p (the caller set p.dialing to ch) and records the outcome:
// the connection, or the breaker opened.
func (f *Forwarder) dialed(ctx context.Context, p *peer, ch chan struct{}) (*clientConn, error) {
	c, err := f.dial(ctx, p)

	f.mu.Lock()
	closed := f.closed
	p.mu.Lock()
	p.dialing = nil
	close(ch)
	switch {
	case err == nil && closed:
		p.mu.Unlock()
		f.mu.Unlock()
		_ = c.conn.Close()
		return nil, ErrClosed
	case err != nil:
		backoff := p.backoff
		if ctx.Err() == nil { // the caller's ctx is no reason to back off
			backoff = p.trip(err, time.Time{})
			f.scheduleProbe(p)
		}
		p.mu.Unlock()
		f.mu.Unlock()
		if !closed {
			f.log.Warn("cannot reach sibling; refusing it until the backoff passes", "sibling", p.addr, "err", err, "backoff", backoff)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, p.addr, err)
	}
	wasDown := p.down
	p.down = false
	p.lastErr = nil
	c.lastUsed = time.Now()
	p.c = c
	// Started under f.mu, so Close either sees this connection in p.c
	// or had stopped f.routines before (then Go refuses).
	ok := f.routines.Go(c.readLoop) && f.routines.Go(c.tick)
	p.mu.Unlock()
	f.mu.Unlock()
	if !ok {
		c.fail(ErrClosed)
		return nil, ErrClosed
	}
	if wasDown {
		f.log.Info("sibling is back: probe connected", "sibling", p.addr)
	} else {
		f.log.Info("connected to sibling", "sibling", p.addr)
	}
	return c, nil
}

// dial connects to p, authenticates both ways and says HELLO.
func (f *Forwarder) dial(ctx context.Context, p *peer) (*clientConn, error) {
	dctx, cancel := context.WithTimeout(ctx, f.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, f.tls)
	// stop returns false once dctx ended and closed raw.
	stop := context.AfterFunc(dctx, func() { _ = raw.Close() })
	defer stop()
	if err := tc.HandshakeContext(dctx); err != nil {
		_ = raw.Close()
		if dctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", dctx.Err(), err)
		}
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	c := &clientConn{
		f:       f,
		p:       p,
		raw:     raw,
		conn:    tc,
		log:     f.log.With("sibling", p.addr),
		pending: make(map[uint64]*entry),
		done:    make(chan struct{}),
	}
	c.mc = meshconn.New(tc, c, meshconn.Config{
		MaxFrameSize: f.cfg.MaxFrameSize,
		WriteTimeout: writeTimeout,
		ReadDeadline: func() time.Time { return time.Now().Add(f.dead) },
		// A sibling sends nothing this big: the connection is lost.
		OnTooLarge: func(_ mesh.Frame, err error) { c.fail(fmt.Errorf("%w: %w", ErrConnLost, err)) },
	})
	c.born = time.Now()
	hello := mesh.Hello{App: f.cfg.App, Client: f.cfg.Name}
	id := c.mc.IDs().Next()
	if err := c.mc.Writer.Send(mesh.KindHello, 0, id, &hello); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("sending HELLO: %w", err)
	}
	// With TLS 1.3 a server that refuses our certificate says so only
	// now, as an alert in place of the answer.
	dl, _ := dctx.Deadline()
	_ = tc.SetReadDeadline(dl)
	fr, err := c.mc.Reader().ReadFrame() // before Run: the handshake
	if err != nil {
		_ = raw.Close()
		if dctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", dctx.Err(), err)
		}
		return nil, fmt.Errorf("waiting for the answer to HELLO: %w", err)
	}
	switch {
	case fr.ID == id && fr.IsResponse() && fr.Kind == mesh.KindOK:
		if !stop() {
			return nil, fmt.Errorf("waiting for the answer to HELLO: %w", dctx.Err())
		}
		_ = tc.SetReadDeadline(time.Time{})
		return c, nil
	case fr.IsResponse() && fr.Kind == mesh.KindError:
		var e mesh.Error
		_ = e.Decode(fr.Payload)
		_ = raw.Close()
		return nil, &RefusedError{Sibling: p.addr, answer: &e}
	}
	_ = raw.Close()
	return nil, fmt.Errorf("unexpected %s answer to HELLO", fr.Kind)
}

// entry is one forwarded delivery the connection has sent and not settled.
// All fields but d, group and topic are guarded by clientConn.mu.
type entry struct {
	d        broker.Delivery
	group    string
	topic    string
	deadline time.Time
	accepted bool       // the sibling answered OK
	waiting  bool       // Forward waits on ch for the take-or-refuse outcome
	ch       chan error // room for one outcome; sent only while waiting
}

// clientConn is one connection to a sibling.
type clientConn struct {
	f    *Forwarder
	p    *peer
	raw  net.Conn // under conn: to drop unsent bytes when it went silent
	born time.Time
	conn *tls.Conn
	mc   *meshconn.Conn // the engine: read loop, ids, pooled writes
	log  *slog.Logger
	done chan struct{} // closed by fail

	lastUsed time.Time // guarded by p.mu

	// Silence detection, on the engine's clock (mc.Clock): askedAt is when
	// a request (DELIVER or HEARTBEAT) was sent with nothing heard since
	// (mc.Heard): it is reset by the first request after a frame arrived
	// (see asking).
	askedAt atomic.Int64

	mu      sync.Mutex
	pending map[uint64]*entry
	err     error // set by fail: the connection is dead
}

// add registers e under a fresh delivery id.
func (c *clientConn) add(e *entry, deadline time.Time) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrUnavailable, c.p.addr, c.err)
	}
	id := c.mc.IDs().Next()
	e.deadline = deadline
	c.pending[id] = e
	c.f.own(1)
	return id, nil
}

// forget drops an entry that was never sent.
func (c *clientConn) forget(id uint64) {
	c.mu.Lock()
	_, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if ok {
		c.f.own(-1)
	}
}

// take removes and returns entry id; nil if it is not outstanding.
// c.mu must be held.
func (c *clientConn) take(id uint64) *entry {
	e := c.pending[id]
	if e != nil {
		delete(c.pending, id)
	}
	return e
}

// readLoop runs the engine's read loop; the sibling's answers come to
// HandleAnswer.
func (c *clientConn) readLoop() {
	err := c.mc.Run()
	c.fail(fmt.Errorf("%w: %w", ErrConnLost, err))
}

// asking notes that a request is about to be sent. Call it before the
// write, so that an answer cannot arrive before it is noted. If a request
// is already waiting with nothing heard since, the earlier one counts.
func (c *clientConn) asking() {
	now := c.mc.Clock(time.Now())
	for {
		at := c.askedAt.Load()
		if at != 0 && at > c.mc.Heard() {
			return
		}
		if c.askedAt.CompareAndSwap(at, now) {
			return
		}
	}
}

// silentFor reports how long the sibling has sent nothing since a request
// was sent to it; zero if it answered since (or nothing was asked).
func (c *clientConn) silentFor(now time.Time) time.Duration {
	at := c.askedAt.Load()
	if at == 0 || at <= c.mc.Heard() {
		return 0
	}
	return time.Duration(c.mc.Clock(now) - at)
}

// HandleRequest refuses the sibling's requests: a forwarder serves none
// (HEARTBEAT aside, which the engine answers).
func (c *clientConn) HandleRequest(fr mesh.Frame) {
	_ = c.mc.Error(fr.ID, mesh.CodeUnsupported, fmt.Sprintf("a forwarder takes no %s requests", fr.Kind))
}

// HandleAnswer handles the sibling's answers to DELIVERs: OK (taken), then
// ACK or NACK (its app's answer), or ERROR (refused).
func (c *clientConn) HandleAnswer(fr mesh.Frame, err error) {
	if err != nil {
		c.fail(fmt.Errorf("%w: %w", ErrConnLost, err))
		return
	}
	switch fr.Kind {
	case mesh.KindOK:
		c.accept(fr.ID)
	case mesh.KindAck:
		c.settle(fr.ID, true, 0)
	case mesh.KindNack:
		var n mesh.Nack
		if err := n.Decode(fr.Payload); err != nil {
			c.log.Warn("bad NACK from sibling; redelivering now", "err", err)
		}
		c.settle(fr.ID, false, time.Duration(n.DelayMillis)*time.Millisecond)
	case mesh.KindError:
		var me mesh.Error
		if err := me.Decode(fr.Payload); err != nil {
			me = mesh.Error{Code: mesh.CodeBadFrame, Message: "undecodable ERROR: " + err.Error()}
		}
		c.refuse(fr.ID, &RefusedError{Sibling: c.p.addr, answer: &me})
	case mesh.KindHeartbeat:
	default:
		c.log.Debug("unexpected answer from sibling", "kind", fr.Kind, "id", fr.ID)
	}
}

// accept handles OK: the sibling took the delivery.
func (c *clientConn) accept(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.pending[id]
	if e == nil {
		return // timed out already
	}
	e.accepted = true
	if e.waiting {
		e.waiting = false
		e.ch <- nil
	}
}

// settle handles ACK and NACK: the sibling's app answered.
func (c *clientConn) settle(id uint64, ack bool, delay time.Duration) {
	c.mu.Lock()
	e := c.take(id)
	if e != nil && e.waiting {
		// An answer implies the sibling took it, whether or not its OK
		// came first.
		e.waiting = false
		e.ch <- nil
	}
	c.mu.Unlock()
	if e == nil {
		c.log.Debug("late answer from sibling ignored", "id", id)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	var err error
	if ack {
		err = e.d.Ack(ctx)
	} else {
		err = e.d.Nack(ctx, delay)
	}
	c.f.own(-1)
	if err != nil {
		// The broker redelivers after its ack wait: a duplicate, never a loss.
		c.log.Warn("settling forwarded delivery upstream failed", "group", e.group, "topic", e.topic, "ack", ack, "err", err)
	}
}

// refuse handles ERROR: before OK it is a refusal Forward returns; after
// OK (or once Forward gave up waiting) the delivery goes back to the broker.
func (c *clientConn) refuse(id uint64, rerr *RefusedError) {
	c.mu.Lock()
	e := c.take(id)
	if e != nil && e.waiting {
		e.waiting = false
		e.ch <- rerr
		c.mu.Unlock()
		c.f.own(-1)
		return
	}
	c.mu.Unlock()
	if e == nil {
		// Per the mesh protocol an ERROR for no request of ours is about
		// the connection; the sibling closes it next.
		c.log.Warn("sibling reported a connection error", "id", id, "err", rerr)
		return
	}
	c.handBack(e, rerr)
}

// handBack returns a delivery the sibling had taken to the broker.
func (c *clientConn) handBack(e *entry, reason error) {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	defer c.f.own(-1) // last, so that Drain also waits for OnLost
	if err := e.d.Nack(ctx, 0); err != nil {
		c.log.Warn("handing forwarded delivery back failed; the broker redelivers after its ack wait", "group", e.group, "topic", e.topic, "err", err)
	}
	c.log.Debug("forwarded delivery handed back to the broker", "group", e.group, "topic", e.topic, "message_id", e.d.MessageID(), "reason", reason)
	if c.f.cfg.OnLost != nil {
		c.f.cfg.OnLost(c.p.addr, e.group, e.topic, reason)
	}
}

// fail kills the connection once: entries still waiting for the sibling to
// take them fail (their Forward returns ErrUnavailable, d untouched); taken
// ones go back to the broker.
//
// Unless the Forwarder or idleness closed it (reason wraps ErrClosed), a
// dead connection opens the sibling's breaker. A silent one (reason wraps
// ErrSilent) is closed with linger 0: bytes still queued for the sibling
// are dropped rather than delivered once the path is back, so DELIVERs
// that Forward already gave back to its caller are not taken late.
func (c *clientConn) fail(reason error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	var backoff time.Duration
	c.p.mu.Lock()
	if c.p.c == c {
		c.p.c = nil
		if c.lastUsed.After(c.p.wanted) {
			c.p.wanted = c.lastUsed
		}
		if !errors.Is(reason, ErrClosed) {
			backoff = c.p.trip(reason, c.born)
			c.f.scheduleProbe(c.p)
		}
	}
	c.p.mu.Unlock()
	if backoff > 0 {
		c.log.Warn("sibling marked down; refusing it until the backoff passes", "reason", reason, "backoff", backoff)
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = reason
	close(c.done)
	pending := c.pending
	c.pending = nil
	var back []*entry
	refused := 0
	for _, e := range pending {
		if e.waiting {
			e.waiting = false
			e.ch <- fmt.Errorf("%w: %s: connection lost before the sibling took the delivery: %w", ErrUnavailable, c.p.addr, reason)
			refused++
			continue
		}
		back = append(back, e)
	}
	c.mu.Unlock()
	if errors.Is(reason, ErrSilent) {
		if tc, ok := c.raw.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.raw.Close() // no close_notify: nothing more goes onto a cut path
	}
	c.mc.Abort(reason) // what is unwritten is dropped: the answers it waits for would be refused

	c.f.own(-refused)
	switch {
	case len(back) > 0:
		c.log.Warn("sibling connection closed; handing its taken deliveries back to the broker", "reason", reason, "handed_back", len(back), "not_taken", refused)
	case !errors.Is(reason, ErrClosed):
		c.log.Info("sibling connection closed", "reason", reason, "not_taken", refused)
	}
	lost := fmt.Errorf("%w: %w", ErrConnLost, reason)
	if errors.Is(reason, ErrConnLost) {
		lost = reason
	}
	for _, e := range back {
		c.handBack(e, lost)
	}
}

// tick sends heartbeats, times out unanswered deliveries and closes the
// connection when it has been idle for long.
//
// It also finds a silent sibling: one that sent nothing for TakeTimeout
// after a request. While a delivery waits to be taken it sends a HEARTBEAT
// every quarter of TakeTimeout, so a live sibling, which answers it at
// once however slow its app is, is heard from in time.
func (c *clientConn) tick() {
	take := c.f.cfg.TakeTimeout
	every := min(c.f.cfg.Timeout/4, time.Second, c.f.hbEvery, take/10)
	t := time.NewTicker(max(every, 5*time.Millisecond))
	defer t.Stop()
	lastHB := time.Now()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		now := time.Now()
		if quiet := c.silentFor(now); quiet >= take {
			c.fail(fmt.Errorf("%w: %w: nothing heard for %v after a request", ErrConnLost, ErrSilent, quiet.Round(time.Millisecond)))
			return
		}
		untaken := c.expire(now)
		if now.Sub(lastHB) >= c.f.hbEvery || (untaken > 0 && now.Sub(lastHB) >= take/4) {
			lastHB = now
			c.asking()
			if err := c.mc.Writer.Send(mesh.KindHeartbeat, 0, c.mc.IDs().Next(), nil); err != nil {
				c.fail(fmt.Errorf("%w: heartbeat: %w", ErrConnLost, err))
				return
			}
		}
		if c.idleFor(now) {
			c.fail(fmt.Errorf("%w: idle for %v", ErrClosed, c.f.idle))
			c.f.dropPeer(c.p)
			return
		}
	}
}

// expire hands deliveries whose Timeout passed back to the broker; one
// still waiting to be taken fails its Forward instead (d untouched). It
// returns how many deliveries are still waiting to be taken.
func (c *clientConn) expire(now time.Time) (untaken int) {
	var back []*entry
	failed := 0
	c.mu.Lock()
	for id, e := range c.pending {
		if now.Before(e.deadline) {
			if !e.accepted {
				untaken++
			}
			continue
		}
		delete(c.pending, id)
		if e.waiting {
			e.waiting = false
			e.ch <- fmt.Errorf("%w: %s: the sibling did not take the delivery within %v", ErrUnavailable, c.p.addr, c.f.cfg.Timeout)
			failed++
			continue
		}
		back = append(back, e)
	}
	c.mu.Unlock()
	c.f.own(-failed)
	if len(back) > 0 {
		c.log.Warn("forwarded deliveries unanswered in time; handing them back to the broker", "count", len(back), "timeout", c.f.cfg.Timeout)
	}
	for _, e := range back {
		c.handBack(e, fmt.Errorf("%w after %v", ErrTimeout, c.f.cfg.Timeout))
	}
	return untaken
}

// idleFor reports whether the connection carried nothing for f.idle; if so
// it is detached from its peer (under the peer's lock, so no Forward can
// pick it up meanwhile) and the caller closes it.
func (c *clientConn) idleFor(now time.Time) bool {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	if now.Sub(c.lastUsed) < c.f.idle {
		return false
	}
	c.mu.Lock()
	n := len(c.pending)
	c.mu.Unlock()
	if n > 0 {
		return false
	}
	if c.p.c == c {
		c.p.c = nil
	}
	return true
}

// dropPeer forgets p if it has no connection and no dial in progress, so
// addresses of siblings long gone do not pile up.
func (f *Forwarder) dropPeer(p *peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.c == nil && p.dialing == nil && f.peers[p.addr] == p {
		delete(f.peers, p.addr)
		p.removed = true
	}
}

// ToWire converts a broker delivery of (group, topic) into its wire form,
// the DELIVER payload both the sidecar's sessions and the forwarder send
// (DeliveryID is the caller's to set). Message flags are set only when
// they say something: a peer that predates them refuses a DELIVER that
// carries them (a sibling answers BAD_FRAME before OK, and the message is
// delivered locally instead; a session clears them for an app that does
// not read them).
func ToWire(group, topic string, d broker.Delivery) mesh.Message {
	msg := d.Message()
	m := mesh.Message{
		Group:       group,
		Topic:       topic,
		Key:         msg.Key,
		Body:        msg.Body,
		MessageID:   d.MessageID(),
		Redelivered: uint32(max(d.Redelivered(), 0)),
		Flags:       mesh.NewMessageFlags(msg.NullBody, msg.EmptyKey && msg.Key == ""),
	}
	if msg.NullBody {
		m.Body = nil
	}
	if ts := d.Timestamp(); !ts.IsZero() {
		m.Timestamp = ts.UnixNano()
	}
	if len(msg.Headers) > 0 {
		m.Headers = make([]mesh.HeaderField, len(msg.Headers))
		for i, h := range msg.Headers {
			m.Headers[i] = mesh.HeaderField{Key: h.Key, Value: h.Value}
		}
	}
	return m
}
