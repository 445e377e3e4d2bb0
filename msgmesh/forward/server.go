package forward

import (
	"context"
	"crypto/tls"
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
	"golang.org/x/time/rate"
)

// DefaultListen is the forwarding listener's address when
// ServerConfig.Listen is empty. It is reachable from other hosts on purpose:
// siblings run elsewhere. Mutual TLS is what keeps strangers out.
const DefaultListen = "0.0.0.0:7602"

// DefaultMaxInflight bounds the deliveries one forwarder connection may
// have unanswered on a Server when ServerConfig.MaxInflight is zero.
const DefaultMaxInflight = 1024

// DefaultMaxConns bounds a Server's connections when ServerConfig.MaxConns
// is zero: a sibling keeps one connection, so this is far above any app's
// instance count, and far below the open-file limit.
const DefaultMaxConns = 512

// Timing of the receiving side.
const (
	// handshakeTimeout bounds the TLS handshake and the wait for HELLO, so a
	// peer that connects and says nothing costs a goroutine for that long.
	handshakeTimeout = 10 * time.Second
	// serverIdleTimeout closes a connection on which nothing arrived for
	// this long; forwarders send a HEARTBEAT every heartbeatEvery.
	serverIdleTimeout = 6 * heartbeatEvery
	// answerWriteTimeout bounds each write of an answer.
	answerWriteTimeout = 5 * time.Second
)

// Deliverer is the receiving sidecar's side of forwarding: it hands
// deliveries that came from a sibling to the local app.
type Deliverer interface {
	// DeliverFromSibling hands a delivery to the local app. app is the app
	// the forwarder's verified certificate names: the Deliverer must accept
	// deliveries only into that app's consumer groups (a sidecar may serve
	// several apps; answer FORBIDDEN for another app's group). It returns once
	// the local sidecar has taken it (queued to a connection), not when the
	// app answers; d.Ack/d.Nack are called later when the app answers (or
	// on timeout/conn loss → Nack). An error means "could not take it" and
	// is answered with ERROR immediately: return (or wrap) a *mesh.Error to
	// choose the code (NOT_REGISTERED, FORBIDDEN, UNAVAILABLE,
	// SHUTTING_DOWN, …); other errors are answered UNAVAILABLE.
	//
	// It is called on its own goroutine per delivery and may block while
	// the local app has no room (that is backpressure toward the
	// forwarder), but it must return when ctx ends: ctx ends when the
	// forwarder's connection goes away or the Server shuts down. The
	// delivery must never be forwarded again (docs/design.md flow 7).
	DeliverFromSibling(ctx context.Context, app, group, topic string, d broker.Delivery) error
}

// ServerConfig configures a forwarding listener.
type ServerConfig struct {
	// Listen is the address Start listens on; zero: DefaultListen.
	Listen string
	// TLS is required: mutual TLS with the app check, as built by
	// pki.ServerTLS. NewServer refuses a config that does not require and
	// verify client certificates, and raises MinVersion to TLS 1.3. After
	// every handshake the Server checks again (pki.CheckPeer) that the
	// peer's verified certificate names App.
	TLS *tls.Config
	// App is this sidecar's app; only its siblings may connect.
	App string
	// Deliverer takes the deliveries; required.
	Deliverer Deliverer
	// MaxInflight bounds the deliveries one forwarder connection may have
	// taken and not yet answered; a DELIVER over it is answered
	// ERROR UNAVAILABLE (the forwarder then delivers locally). Zero:
	// DefaultMaxInflight.
	MaxInflight int
	// MaxFrameSize bounds received frames (header included); zero:
	// mesh.DefaultMaxFrameSize.
	MaxFrameSize int
	// MaxConns bounds the connections served at once, handshakes
	// included; past it a new connection is closed before its TLS
	// handshake. Zero: DefaultMaxConns.
	MaxConns int
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

// Server is a forwarding listener. Start or Serve, then Shutdown.
type Server struct {
	cfg  ServerConfig
	tls  *tls.Config
	log  *slog.Logger
	core *core.Server

	draining atomic.Bool
	drainCtx context.Context // cancelled when Shutdown begins
	drain    context.CancelFunc
	starter  core.Routines // the goroutine Start runs Serve in

	mu    sync.Mutex
	ln    net.Listener
	conns map[*serverConn]struct{}

	// Peers refused at the handshake: the listener is reachable from
	// other hosts, so the warning is logged at most once per
	// refusedLogEvery, with the count; each one is at debug level.
	refusedLog rate.Sometimes
	refused    atomic.Uint64
}

// refusedLogEvery spaces the warnings about refused peers.
const refusedLogEvery = 10 * time.Second

// NewServer checks cfg and returns a Server that is not listening yet.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.TLS == nil {
		return nil, fmt.Errorf("%w: ServerConfig.TLS is required (pki.ServerTLS)", ErrConfig)
	}
	if cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, fmt.Errorf("%w: ServerConfig.TLS must require and verify client certificates (tls.RequireAndVerifyClientCert)", ErrConfig)
	}
	if cfg.TLS.GetCertificate == nil && len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetConfigForClient == nil {
		return nil, fmt.Errorf("%w: ServerConfig.TLS has no certificate", ErrConfig)
	}
	if err := pki.ValidApp(cfg.App); err != nil {
		return nil, fmt.Errorf("%w: ServerConfig.App: %w", ErrConfig, err)
	}
	if cfg.Deliverer == nil {
		return nil, fmt.Errorf("%w: ServerConfig.Deliverer is required", ErrConfig)
	}
	if cfg.MaxInflight < 0 || cfg.MaxFrameSize < 0 || cfg.MaxConns < 0 {
		return nil, fmt.Errorf("%w: negative MaxInflight, MaxFrameSize or MaxConns", ErrConfig)
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.MaxInflight == 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.MaxFrameSize == 0 {
		cfg.MaxFrameSize = mesh.DefaultMaxFrameSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tc := cfg.TLS.Clone()
	tc.MinVersion = max(tc.MinVersion, tls.VersionTLS13)
	s := &Server{
		cfg:   cfg,
		tls:   tc,
		log:   cfg.Logger.With("component", "forward-server", "app", cfg.App),
		conns: make(map[*serverConn]struct{}),

		refusedLog: rate.Sometimes{First: 1, Interval: refusedLogEvery},
	}
	s.drainCtx, s.drain = context.WithCancel(context.Background())
	s.core = core.NewServer(s.serveConn, s.log)
	s.core.LimitConns(core.ConnLimit{Max: cfg.MaxConns, Name: "forwarding listener max_conns"})
	return s, nil
}

// Start listens on cfg.Listen and serves in a goroutine the Server owns.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("forward: listen on %s: %w", s.cfg.Listen, err)
	}
	s.setListener(ln)
	if !s.starter.Go(func() {
		if err := s.core.Serve(ln); err != nil {
			s.log.Error("forwarding listener stopped", "addr", ln.Addr(), "err", err)
		}
	}) {
		_ = ln.Close()
		return ErrClosed
	}
	s.log.Info("forwarding listener started", "addr", ln.Addr())
	return nil
}

// Serve accepts forwarder connections on ln (a plain TCP listener: the
// Server does the TLS handshake itself) until Shutdown. It returns nil
// after Shutdown, or the error that stopped accepting.
func (s *Server) Serve(ln net.Listener) error {
	s.setListener(ln)
	return s.core.Serve(ln)
}

func (s *Server) setListener(ln net.Listener) {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
}

// Addr is the listening address (nil before Start or Serve).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops accepting connections, answers new DELIVERs
// ERROR SHUTTING_DOWN (their forwarders deliver locally), cancels the
// context of DeliverFromSibling calls still waiting for room (they answer
// ERROR too), waits until the local app has answered every delivery
// already taken (so their answers reach the forwarders and nothing is
// redelivered needlessly), then closes every connection and waits for the
// Server's goroutines. If ctx ends first, the connections are closed at
// once: deliveries still unanswered go back to the broker through their
// forwarders (Nack 0). Safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.drain()
	s.core.Close()
	s.starter.Stop()
	s.mu.Lock()
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var err error
	for _, c := range conns {
		if err = c.waitIdle(ctx); err != nil {
			break
		}
	}
	if serr := s.core.Shutdown(ctx); err == nil {
		err = serr
	}
	s.starter.Wait()
	return err
}

// serveConn is the core.ConnHandler: it authenticates the peer and serves
// its frames. Nothing is read from a peer before its TLS handshake and
// certificate checks have passed.
func (s *Server) serveConn(ctx context.Context, raw net.Conn) {
	defer raw.Close()
	log := s.log.With("remote", raw.RemoteAddr().String())
	tc := tls.Server(raw, s.tls)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	var peerApp string
	if err == nil {
		cs := tc.ConnectionState()
		if err = pki.CheckPeer(cs, s.cfg.App); err == nil {
			peerApp, err = pki.AppOf(cs.PeerCertificates[0])
		}
	}
	if err != nil {
		n, warned := s.refused.Add(1), false
		s.refusedLog.Do(func() {
			warned = true
			log.Warn("forwarding peer refused", "err", err, "refused_so_far", n)
		})
		if !warned {
			log.Debug("forwarding peer refused", "err", err)
		}
		return
	}
	c := &serverConn{
		s:        s,
		peerApp:  peerApp,
		log:      log,
		inflight: make(map[uint64]*sibDelivery),
		done:     make(chan struct{}),
	}
	c.mc = meshconn.New(tc, c, meshconn.Config{
		MaxFrameSize: s.cfg.MaxFrameSize,
		WriteTimeout: answerWriteTimeout,
		ReadDeadline: c.readDeadline,
		// A forwarder sends nothing this big: a confused peer, whose
		// connection ends after the ERROR answer.
		OnTooLarge: func(_ mesh.Frame, err error) { c.mc.Close(err) },
	})
	c.ctx, c.cancel = context.WithCancel(ctx)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	err = c.run()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	log.Debug("forwarder disconnected", "reason", err)
}

// serverConn is one forwarder's connection. Its read loop (run) is the only
// reader; answers are written by the goroutines that take deliveries and by
// whoever calls a delivery's Ack or Nack.
type serverConn struct {
	s       *Server
	peerApp string // the app the peer's verified certificate names
	mc      *meshconn.Conn
	helloed atomic.Bool // HELLO was accepted
	log     *slog.Logger
	ctx     context.Context // ends when the connection ends
	cancel  context.CancelFunc
	takers  core.Routines // one goroutine per delivery being taken
	dead    atomic.Bool
	done    chan struct{} // closed when run has returned

	mu       sync.Mutex
	inflight map[uint64]*sibDelivery // taken or being taken, not yet answered
	idle     chan struct{}           // closed when inflight empties; nil if nobody waits
}

func (c *serverConn) run() error {
	defer close(c.done)
	// Answers already accepted by the writer are flushed before the
	// connection closes, so a forwarder hears them.
	stop := context.AfterFunc(c.ctx, func() { c.mc.Close(c.ctx.Err()) })
	defer stop()
	err := c.mc.Run()
	c.dead.Store(true)
	c.cancel()
	c.mc.Close(err)
	c.takers.Stop()
	c.takers.Wait()
	return err
}

// readDeadline bounds each read: the forwarder's HELLO comes within
// handshakeTimeout, and then a frame (a heartbeat at least) within
// serverIdleTimeout.
func (c *serverConn) readDeadline() time.Time {
	if !c.helloed.Load() {
		return time.Now().Add(handshakeTimeout)
	}
	return time.Now().Add(serverIdleTimeout)
}

// hello handles the forwarder's first request, which must be HELLO naming
// this app; anything else ends the connection.
func (c *serverConn) hello(f mesh.Frame) {
	if err := c.checkHello(f); err != nil {
		c.mc.Close(err)
		return
	}
	c.helloed.Store(true)
	c.log.Debug("forwarder connected")
	_ = c.mc.Answer(mesh.KindOK, f.ID, nil)
}

func (c *serverConn) checkHello(f mesh.Frame) error {
	if f.Kind != mesh.KindHello {
		c.sendError(f.ID, mesh.CodeInvalid, fmt.Sprintf("%s before HELLO; HELLO must be the forwarder's first request", f.Kind))
		return fmt.Errorf("%w: %s before HELLO", ErrRefused, f.Kind)
	}
	var h mesh.Hello
	if err := h.Decode(f.Payload); err != nil {
		c.sendError(f.ID, mesh.CodeBadFrame, err.Error())
		return err
	}
	if h.App != c.s.cfg.App {
		c.sendError(f.ID, mesh.CodeInvalid, fmt.Sprintf("HELLO for app %q; this forwarding listener serves app %q", h.App, c.s.cfg.App))
		return fmt.Errorf("%w: HELLO for app %q", ErrRefused, h.App)
	}
	c.log = c.log.With("client", h.Client)
	return nil
}

// HandleAnswer: only HEARTBEAT answers can come back (the engine drops
// them): this side sends no other request. Anything else is a confused
// peer; drop it.
func (c *serverConn) HandleAnswer(f mesh.Frame, _ error) {
	c.log.Debug("unexpected answer from forwarder", "kind", f.Kind, "id", f.ID)
}

// HandleRequest serves a forwarder's request (HEARTBEAT is the engine's).
func (c *serverConn) HandleRequest(f mesh.Frame) {
	if !c.helloed.Load() {
		c.hello(f)
		return
	}
	switch f.Kind {
	case mesh.KindDeliver:
		c.onDeliver(f)
	case mesh.KindHello:
		c.sendError(f.ID, mesh.CodeInvalid, "second HELLO on one connection")
	default:
		c.sendError(f.ID, mesh.CodeUnsupported, fmt.Sprintf("forwarders do not send %s requests", f.Kind))
	}
}

// onDeliver checks one DELIVER and starts taking it.
func (c *serverConn) onDeliver(f mesh.Frame) {
	var m mesh.Message
	if err := m.Decode(f.Payload); err != nil {
		c.sendError(f.ID, mesh.CodeBadFrame, err.Error())
		return
	}
	if f.ID == 0 || m.DeliveryID != f.ID {
		c.sendError(f.ID, mesh.CodeInvalid, fmt.Sprintf("delivery_id %d must equal the frame id %d and not be 0", m.DeliveryID, f.ID))
		return
	}
	if c.s.draining.Load() {
		c.sendError(f.ID, mesh.CodeShuttingDown, "the sibling is shutting down")
		return
	}
	d := newSibDelivery(c, &m)
	c.mu.Lock()
	if _, dup := c.inflight[f.ID]; dup {
		c.mu.Unlock()
		c.sendError(f.ID, mesh.CodeInvalid, fmt.Sprintf("delivery id %d is already in flight", f.ID))
		return
	}
	if len(c.inflight) >= c.s.cfg.MaxInflight {
		c.mu.Unlock()
		c.sendError(f.ID, mesh.CodeUnavailable, fmt.Sprintf("the sibling has %d deliveries in flight from this forwarder, its limit", c.s.cfg.MaxInflight))
		return
	}
	c.inflight[f.ID] = d
	c.mu.Unlock()
	if !c.takers.Go(func() { c.take(d) }) {
		c.remove(f.ID)
		c.sendError(f.ID, mesh.CodeShuttingDown, "the connection is closing")
	}
}

// take hands d to the Deliverer and answers OK or ERROR. The Deliverer's
// context ends with the connection or when Shutdown begins.
func (c *serverConn) take(d *sibDelivery) {
	ctx, cancel := context.WithCancel(c.ctx)
	stop := context.AfterFunc(c.s.drainCtx, cancel)
	err := c.s.cfg.Deliverer.DeliverFromSibling(ctx, c.peerApp, d.group, d.topic, d)
	stop()
	cancel()
	d.mu.Lock()
	if err != nil && d.final == nil {
		d.settled = true
		d.mu.Unlock()
		c.remove(d.id)
		c.log.Debug("delivery refused", "group", d.group, "topic", d.topic, "err", err)
		c.sendError(d.id, mesh.CodeOf(err, &codes), err.Error())
		return
	}
	if err != nil {
		// The app answered already, so the delivery was taken after all.
		c.log.Warn("Deliverer returned an error for a delivery its app answered; sending the answer", "err", err)
	}
	d.accepted = true
	final := d.final
	// OK goes out under d.mu so that an Ack racing with it cannot put ACK
	// on the wire first.
	_ = c.mc.Answer(mesh.KindOK, d.id, nil)
	d.mu.Unlock()
	if final != nil {
		_ = c.answer(d, *final)
	}
}

// answer writes d's ACK or NACK and forgets d. It forgets d only after the
// write, so that Shutdown, which waits for nothing to be in flight, cannot
// close the connection between the two.
func (c *serverConn) answer(d *sibDelivery, a final) error {
	defer c.remove(d.id)
	if c.dead.Load() {
		return fmt.Errorf("%w: cannot answer delivery %d", ErrConnLost, d.id)
	}
	var err error
	if a.ack {
		err = c.mc.Answer(mesh.KindAck, d.id, nil)
	} else {
		n := mesh.Nack{DelayMillis: uint32(min(a.delay.Milliseconds(), int64(^uint32(0))))}
		err = c.mc.Answer(mesh.KindNack, d.id, &n)
	}
	if err != nil { // the engine closed the connection
		return fmt.Errorf("%w: %w", ErrConnLost, err)
	}
	return nil
}

func (c *serverConn) remove(id uint64) {
	c.mu.Lock()
	delete(c.inflight, id)
	if len(c.inflight) == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
	c.mu.Unlock()
}

// waitIdle blocks until no delivery is in flight on c, c is gone, or ctx
// ends.
func (c *serverConn) waitIdle(ctx context.Context) error {
	for {
		c.mu.Lock()
		if len(c.inflight) == 0 {
			c.mu.Unlock()
			return nil
		}
		if c.idle == nil {
			c.idle = make(chan struct{})
		}
		ch := c.idle
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *serverConn) sendError(id uint64, code mesh.Code, msg string) {
	_ = c.mc.Error(id, code, msg)
}
