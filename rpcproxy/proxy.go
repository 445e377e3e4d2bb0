package rpcproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/pipeline"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

// Proxy is the RPC proxy: an egress listener local apps call services
// through, and an ingress listener that forwards calls from other sidecars
// to the local app. Both listeners serve every configured codec on one
// port, told apart by the first byte of each connection.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	codecs []stream.Codec
	lim    stream.Limits

	routes   []*route
	clusters []*stream.Cluster // every cluster, for Close
	app      []*appEndpoint    // by codec index; nil where the app has no address

	pipe *pipeline.Pipeline // every call's stages (New has the order)
	// queueCalls: calls of codecs that queue their writes are served
	// without a goroutine (downConn.start). Only with the proxy's own
	// stages, which never wait: the end of an exchange then runs on an
	// upstream connection's read loop, where an access log's write or a
	// stage of Config.Stages would hold up every caller's answers.
	queueCalls bool
	metrics    *stream.Metrics
	limiter    *stream.Limiter

	egress  *listener
	ingress *listener

	ctx      context.Context // ends at Shutdown: the health loop
	cancel   context.CancelFunc
	hard     context.Context // ends when Shutdown gives up waiting: in-flight calls
	hardStop context.CancelFunc
	routines core.Routines // Serve loops, the health loop, the ingress accept pump

	ingressUp atomic.Bool // the ingress listener is open

	connMu sync.Mutex
	conns  map[net.Conn]*tapReader // downstream connections, closed at a hard stop
	frozen []ConnState             // connections captured by Freeze

	freezing atomic.Bool // Freeze runs: stopped connections are captured, not closed
	inherit  *Handover   // what Start adopts (Adopt); nil: a fresh start
	pending  []ConnState // adopted callers' connections, from Prepare to Serve
	// prepared and serving: Prepare and Serve ran (one goroutine, the
	// owner's, calls Start or Prepare and Serve, then Shutdown or Freeze).
	prepared, serving bool

	startOnce sync.Once
	shutOnce  sync.Once
	shutErr   error
}

// route is a RouteConfig made ready: its cluster per codec.
type route struct {
	name     string
	service  string
	prefix   string
	codec    int // -1: any
	cluster  string
	clusters []*stream.Cluster // by codec index
	timeout  time.Duration
}

// appEndpoint is where the local app serves one codec.
type appEndpoint struct {
	codec   stream.Codec
	addr    string
	route   string // "app/<codec>", the metrics key of ingress calls
	cluster *stream.Cluster
	healthy atomic.Bool
	fails   int // health loop only
	oks     int // health loop only
}

// New checks cfg and returns a proxy ready to Start. logger nil means
// slog.Default().
func New(cfg Config, logger *slog.Logger) (*Proxy, error) {
	if logger == nil {
		logger = slog.Default()
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("rpcproxy: config: %w", err)
	}
	p := &Proxy{
		cfg:    cfg,
		log:    logger.With("component", "rpcproxy"),
		codecs: cfg.Codecs,
		lim:    stream.Limits{MaxHeaderBytes: cfg.MaxHeaderBytes, MaxBodyBytes: cfg.MaxBodyBytes}.WithDefaults(),
		app:    make([]*appEndpoint, len(cfg.Codecs)),
		conns:  make(map[net.Conn]*tapReader),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.hard, p.hardStop = context.WithCancel(context.Background())

	byName := map[string][]*stream.Cluster{}
	for _, cc := range cfg.Clusters {
		policy, _ := stream.ParseLBPolicy(cc.LBPolicy)
		hosts := make([]stream.HostConfig, len(cc.Hosts))
		for i, h := range cc.Hosts {
			hosts[i] = stream.HostConfig{Addr: h.Address, Weight: h.Weight}
		}
		per := make([]*stream.Cluster, len(p.codecs))
		for i, codec := range p.codecs {
			cl, err := stream.NewCluster(stream.ClusterConfig{
				Name: cc.Name, Codec: codec, Hosts: hosts, Policy: policy,
				ConnectTimeout: cc.ConnectTimeout, ConnsPerHost: cc.ConnsPerHost,
				MaxIdlePerHost: cc.MaxIdlePerHost, Limits: p.lim, Logger: p.log,
			})
			if err != nil {
				p.closeClusters()
				return nil, fmt.Errorf("rpcproxy: %w", err)
			}
			per[i] = cl
			p.clusters = append(p.clusters, cl)
		}
		byName[cc.Name] = per
	}
	limits := map[string]stream.RouteLimit{}
	for _, rc := range cfg.Routes {
		r := &route{name: rc.Name, service: rc.Service, prefix: rc.PathPrefix, codec: -1,
			cluster: rc.Cluster, clusters: byName[rc.Cluster], timeout: rc.Timeout}
		for i, codec := range p.codecs {
			if codec.Name() == rc.Protocol {
				r.codec = i
			}
		}
		p.routes = append(p.routes, r)
		if rc.MaxConcurrent > 0 || rc.RateLimit > 0 {
			limits[rc.Name] = stream.RouteLimit{MaxConcurrent: rc.MaxConcurrent, Rate: rc.RateLimit, Burst: rc.Burst}
		}
	}
	for i, codec := range p.codecs {
		addr, ok := cfg.Ingress.App[codec.Name()]
		if !ok || cfg.Ingress.Listen == Off {
			continue
		}
		cl, err := stream.NewCluster(stream.ClusterConfig{
			Name: "local-app/" + codec.Name(), Codec: codec, Hosts: []stream.HostConfig{{Addr: addr}},
			ConnsPerHost: cfg.Ingress.ConnsPerHost, Limits: p.lim, Logger: p.log,
		})
		if err != nil {
			p.closeClusters()
			return nil, fmt.Errorf("rpcproxy: %w", err)
		}
		p.clusters = append(p.clusters, cl)
		p.app[i] = &appEndpoint{codec: codec, addr: addr, route: "app/" + codec.Name(), cluster: cl}
	}

	// The pipeline every call passes, composed once, outermost first:
	// metrics (they count every call, the ones a later stage refuses
	// included), the access log, the per-route limits, then the stages of
	// Config.Stages.
	p.metrics = stream.NewMetrics()
	p.limiter = stream.NewLimiter(limits)
	stages := []pipeline.Stage{p.metrics}
	if cfg.AccessLog {
		stages = append(stages, stream.NewAccessLog(p.log))
	}
	stages = append(stages, p.limiter)
	stages = append(stages, cfg.Stages...)
	p.queueCalls = !cfg.AccessLog && len(cfg.Stages) == 0
	if p.pipe, err = pipeline.New(stages...); err != nil {
		p.closeClusters()
		return nil, fmt.Errorf("rpcproxy: config: %w", err)
	}
	return p, nil
}

// Metrics returns the exchange counters of both listeners. They are a
// prometheus.Collector: the sidecar registers them on the registry its
// /metrics serves (observe.Telemetry.Registerer).
func (p *Proxy) Metrics() *stream.Metrics { return p.metrics }

// Limiter returns the per-route limits stage, whose limits can be
// replaced at run time.
func (p *Proxy) Limiter() *stream.Limiter { return p.limiter }

// Start opens the listeners and starts the local app's health checks: it
// waits for one round of heartbeats, and leaves the ingress listener
// closed if the app did not answer (it opens when the app does). It
// returns an error if a listener cannot be bound. ctx bounds Start only.
// It is Prepare followed by Serve.
func (p *Proxy) Start(ctx context.Context) error {
	if err := p.Prepare(ctx); err != nil {
		return err
	}
	return p.Serve(ctx)
}

// Prepare is the half of Start that can fail: it opens the listeners, or
// takes over those Adopt gave, without accepting or reading a caller's
// connection. A hot upgrade's successor says ready between Prepare and
// Serve, so that a successor that dies before it has read nothing from
// the callers' connections its predecessor resumes. After Prepare,
// Shutdown closes what it opened whether or not Serve ran.
func (p *Proxy) Prepare(ctx context.Context) error {
	err := errors.New("rpcproxy: Start or Prepare called twice")
	p.startOnce.Do(func() { err = p.prepare() })
	return err
}

func (p *Proxy) prepare() error {
	inh := p.inherit
	if inh == nil {
		inh = &Handover{}
	}
	p.inherit = nil
	if p.cfg.Egress.Listen != Off {
		ln, err := adoptListener(inh.Egress, p.cfg.Egress.Listen)
		inh.Egress = nil
		if err != nil {
			inh.Close()
			return fmt.Errorf("rpcproxy: egress listener: %w", err)
		}
		p.egress = p.newListener("egress", false, ln)
	}
	if p.ingressEnabled() {
		ln, err := adoptListener(inh.Ingress, p.cfg.Ingress.Listen)
		inh.Ingress = nil
		if err != nil {
			inh.Close()
			p.abortStart()
			return fmt.Errorf("rpcproxy: ingress listener: %w", err)
		}
		p.ingress = p.newListener("ingress", true, ln)
		p.ingressUp.Store(true)
	}
	for _, f := range []*os.File{inh.Egress, inh.Ingress} {
		if f != nil { // a listener this proxy runs without
			p.log.Info("an inherited listener is off here; closing it", "name", f.Name())
			_ = f.Close()
		}
	}
	p.pending = inh.Conns
	p.prepared = true
	return nil
}

// Serve starts what Prepare made ready: accepting on the listeners, the
// local app's health checks (ctx bounds the first round), and reading the
// adopted callers' connections from their carried bytes on.
func (p *Proxy) Serve(ctx context.Context) error {
	if !p.prepared || p.serving {
		return errors.New("rpcproxy: Serve without Prepare, or twice")
	}
	p.serving = true
	for _, l := range []*listener{p.egress, p.ingress} {
		if l == nil {
			continue
		}
		p.routines.Go(func() {
			if err := l.srv.Serve(l.ln); err != nil {
				p.log.Error("listener stopped", "listener", l.name, "err", err)
			}
		})
	}
	if p.ingress != nil {
		p.checkApp(ctx)
		p.routines.Go(p.healthLoop)
	}
	conns := p.pending
	p.pending = nil
	p.adoptConns(conns)
	p.log.Info("rpc proxy started", "egress", addrString(p.EgressAddr()), "ingress", addrString(p.IngressAddr()), "app_healthy", p.Healthy())
	return nil
}

// closeUnserved closes what Prepare opened when Serve did not run: the
// listeners and the adopted callers' connections.
func (p *Proxy) closeUnserved() {
	if !p.prepared || p.serving {
		return
	}
	p.serving = true // nothing serves after Shutdown
	p.abortStart()
	if p.ingress != nil {
		_ = p.ingress.ln.Close()
	}
	for _, cs := range p.pending {
		_ = cs.File.Close()
	}
	p.pending = nil
}

func (p *Proxy) abortStart() {
	if p.egress != nil {
		_ = p.egress.ln.Close()
	}
}

func (p *Proxy) ingressEnabled() bool {
	if p.cfg.Ingress.Listen == Off {
		return false
	}
	for _, ep := range p.app {
		if ep != nil {
			return true
		}
	}
	return false
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// EgressAddr returns the egress listener's address, or nil when it is off
// or not started.
func (p *Proxy) EgressAddr() net.Addr {
	if p.egress == nil {
		return nil
	}
	return p.egress.ln.Addr()
}

// IngressAddr returns the ingress listener's address (kept while the
// listener is closed for an unhealthy app), or nil when ingress is off or
// not started.
func (p *Proxy) IngressAddr() net.Addr {
	if p.ingress == nil {
		return nil
	}
	return p.ingress.ln.Addr()
}

// Healthy reports whether the local app answers its heartbeats, for the
// sidecar's /healthz. Without ingress (no app configured) it is true.
func (p *Proxy) Healthy() bool {
	if p.ingress == nil {
		return true
	}
	for _, ep := range p.app {
		if ep != nil && !ep.healthy.Load() {
			return false
		}
	}
	return true
}

// Shutdown stops both listeners, stops reading from every downstream
// connection, lets the calls already read finish until ctx ends, then
// fails what is left (SHUTTING_DOWN, or UPSTREAM_RESET to the caller's
// upstream), closes the upstream connections and waits for every
// goroutine. Safe to call more than once; later calls return the first
// result.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.shutOnce.Do(func() { p.shutErr = p.shutdown(ctx) })
	return p.shutErr
}

func (p *Proxy) shutdown(ctx context.Context) error {
	p.closeUnserved()
	p.cancel()
	var servers []*core.Server
	for _, l := range []*listener{p.egress, p.ingress} {
		if l != nil {
			servers = append(servers, l.srv)
		}
	}
	// Cancelling the handlers' context makes each connection stop reading
	// and wait for its calls in flight. Egress drains first, while ingress
	// still serves: an egress call may go to this sidecar's own ingress.
	var err error
	for _, s := range servers {
		if err = s.Shutdown(ctx); err != nil {
			break
		}
	}
	if err != nil {
		// Out of time: fail the calls still in flight and close the
		// callers' connections, then wait for the handlers to notice.
		p.log.Warn("shutdown deadline passed; failing calls in flight", "err", err)
		p.hardStop()
		p.closeClusters()
		p.connMu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.connMu.Unlock()
		for _, s := range servers {
			_ = s.Shutdown(context.Background())
		}
	}
	p.hardStop()
	p.closeClusters()
	p.routines.Stop()
	p.routines.Wait()
	p.log.Info("rpc proxy stopped")
	return err
}

func (p *Proxy) closeClusters() {
	for _, cl := range p.clusters {
		cl.Close()
	}
}

// listener is one of the two listeners: a core.Server on ln.
type listener struct {
	name    string
	ingress bool
	ln      net.Listener
	sw      *switchListener // ingress only: reopened with the app's health
	srv     *core.Server
}

func (p *Proxy) newListener(name string, ingress bool, ln net.Listener) *listener {
	l := &listener{name: name, ingress: ingress, ln: ln}
	if ingress {
		l.sw = newSwitchListener(ln, &p.routines, p.log)
		l.ln = l.sw
	}
	l.srv = core.NewServer(func(ctx context.Context, conn net.Conn) { p.serveConn(ctx, l, conn, nil) }, p.log)
	l.srv.LimitConns(core.ConnLimit{Max: p.cfg.MaxConns, Name: "rpc " + name + " max_conns"})
	return l
}

// serveConn serves one downstream connection, whose first bytes are pre
// (unread bytes of a connection adopted in a hot upgrade): it sniffs the
// codec, then reads requests and serves each on its own goroutine, at most
// MaxInflightPerConn at once. When ctx ends it stops reading and waits
// for the calls in flight; then, when the proxy freezes, it captures the
// connection for a successor instead of closing it.
func (p *Proxy) serveConn(ctx context.Context, l *listener, conn net.Conn, pre []byte) {
	tap := &tapReader{r: conn}
	if len(pre) > 0 {
		tap.r = io.MultiReader(bytes.NewReader(pre), conn)
	}
	p.connMu.Lock()
	p.conns[conn] = tap
	p.connMu.Unlock()
	stopped := false // reading stopped because ctx ended, at a request boundary or within one
	defer func() {
		p.connMu.Lock()
		delete(p.conns, conn)
		p.connMu.Unlock()
		if stopped && p.freezing.Load() && p.hard.Err() == nil {
			p.capture(l, conn, tap.since)
		}
		_ = conn.Close()
	}()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()

	idle := p.cfg.IdleTimeout
	_ = conn.SetReadDeadline(time.Now().Add(idle))
	br := bufio.NewReaderSize(tap, 16<<10)
	prefix, err := br.Peek(1)
	if err != nil {
		stopped = ctx.Err() != nil
		return
	}
	ci := -1
	for i, c := range p.codecs {
		if c.Match(prefix) {
			ci = i
			break
		}
	}
	if ci < 0 {
		p.log.Debug("connection speaks no known protocol; closing", "listener", l.name, "remote", conn.RemoteAddr(), "first_byte", prefix[0])
		return
	}
	codec := p.codecs[ci]
	sc := codec.NewServerConn(conn, br, p.lim)
	var wg sync.WaitGroup
	sem := make(chan struct{}, p.cfg.MaxInflightPerConn)
	dc := &downConn{p: p, l: l, ci: ci, codec: codec, sc: sc, ctx: ctx, wg: &wg, sem: sem}
	if p.queueCalls {
		dc.rq, _ = sc.(stream.ResponseQueuer)
	}
	lastDeadline := time.Now()
	for {
		if now := time.Now(); now.Sub(lastDeadline) > time.Second {
			_ = conn.SetReadDeadline(now.Add(idle))
			lastDeadline = now
		}
		if ctx.Err() != nil {
			stopped = true
			break // draining; checked after the deadline is set, see AfterFunc above
		}
		m, err := sc.ReadRequest()
		if m == nil {
			if err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
				p.log.Debug("downstream connection ended", "listener", l.name, "remote", conn.RemoteAddr(), "err", err)
			}
			stopped = ctx.Err() != nil && !errors.Is(err, io.EOF)
			break
		}
		tap.boundary(br.Buffered())
		last := m.Close
		sem <- struct{}{}
		wg.Add(1)
		if err == nil && dc.rq != nil {
			dc.start(m) // no goroutine of its own: see start
			if last {
				break
			}
			continue
		}
		go func() {
			defer wg.Done()
			if err != nil {
				dc.refuse(m, err)
			} else {
				dc.serve(m)
			}
			<-sem
		}()
		if last {
			break
		}
	}
	wg.Wait()
	_ = sc.Close()
}

// capture keeps a stopped connection for a successor (Freeze), with the
// bytes read from it since the last request boundary.
func (p *Proxy) capture(l *listener, conn net.Conn, unread []byte) {
	f, err := core.FileOf(conn)
	if err != nil {
		p.log.Warn("a caller's connection cannot move; closing it", "listener", l.name, "err", err)
		return
	}
	p.connMu.Lock()
	p.frozen = append(p.frozen, ConnState{File: f, Listener: l.name, Buffered: bytes.Clone(unread)})
	p.connMu.Unlock()
}

// downConn is what the calls of one downstream connection share.
type downConn struct {
	p     *Proxy
	l     *listener
	ci    int
	codec stream.Codec
	sc    stream.ServerConn
	rq    stream.ResponseQueuer // sc, when its codec queues answers; nil otherwise
	ctx   context.Context
	wg    *sync.WaitGroup // the calls in flight, waited for by serveConn
	sem   chan struct{}   // a slot per call in flight (MaxInflightPerConn)
}

// exchange is a pooled stream.Exchange with its header reader, and the
// state of a call served by start.
type exchange struct {
	stream.Exchange
	hdr     msgHeaders
	dc      *downConn
	m       *stream.Message
	reached int // stages whose OnExchange ran (pipeline.BeginExchange)
}

type msgHeaders struct {
	codec stream.Codec
	m     *stream.Message
}

func (h *msgHeaders) Get(key string) (string, bool) { return h.codec.Header(h.m, key) }

var exchangePool = sync.Pool{New: func() any { return new(exchange) }}

func (d *downConn) newExchange(m *stream.Message) *exchange {
	x := exchangePool.Get().(*exchange)
	x.hdr = msgHeaders{codec: d.codec, m: m}
	x.Exchange = stream.Exchange{
		Ctx: d.ctx, Kind: stream.ExchangeRPC, Listener: d.l.name, Protocol: d.codec.Name(),
		Target: m.Service, Path: m.Path, ReqBytes: m.Size, Start: time.Now(), Headers: &x.hdr,
	}
	return x
}

func (d *downConn) freeExchange(x *exchange) {
	*x = exchange{}
	exchangePool.Put(x)
}

// start serves a call of a connection whose codec queues its writes,
// without a goroutine of its own, on the connection's read loop: the
// request is queued upstream (stream.Cluster.Start) and the answer
// queued back by CallDone, on the upstream connection's read loop, so
// that a call costs no goroutine, channel hand-off or timer in the proxy,
// and the frames of the calls read together share write syscalls. A call
// that cannot go out without waiting (no upstream connection open yet, a
// full writer) is served by RoundTrip on a goroutine of the cluster's, as
// every call of the other codecs is on one of its own (serve).
func (d *downConn) start(m *stream.Message) {
	x := d.newExchange(m)
	x.dc, x.m = d, m
	cl, timeout, err := d.begin(x, m)
	if err != nil {
		x.CallDone(nil, err)
		return
	}
	cl.Start(d.p.hard, m, timeout, &x.Exchange, x) // x is CallDone's now, and may be gone already
}

// CallDone answers a call served by start (stream.Done): it must not
// wait, since it may run on an upstream connection's read loop serving
// many callers; an answer that cannot be queued at once (a full writer,
// an error to encode) is written on a goroutine of its own.
func (x *exchange) CallDone(resp *stream.Message, err error) {
	d := x.dc
	e := d.end(x, resp, err)
	if e == nil {
		if queued, _ := d.rq.QueueResponse(x.m, resp); queued {
			resp.Release()
			d.endCall(x)
			return
		}
	}
	go func() { // owned by serveConn through d.wg
		d.answer(x.m, resp, e)
		d.endCall(x)
	}()
}

// endCall frees what a call served by start held.
func (d *downConn) endCall(x *exchange) {
	x.m.Release()
	d.freeExchange(x)
	<-d.sem
	d.wg.Done()
}

// route finds where a call goes: its cluster and timeout, or the error
// the proxy answers it with. It fills x's route fields.
func (d *downConn) route(x *exchange, m *stream.Message) (cl *stream.Cluster, timeout time.Duration, err error) {
	p := d.p
	if d.l.ingress {
		ep := p.app[d.ci]
		switch {
		case ep == nil:
			err = stream.Errorf(stream.ErrNoRoute, "this sidecar's app serves no %s calls", d.codec.Name())
		case !ep.healthy.Load(): // this protocol's app; the others may be fine
			x.Route, x.Cluster, x.Upstream = ep.route, ep.cluster.Name(), ep.addr
			err = stream.Errorf(stream.ErrUnavailable, "the local app at %s is not answering its heartbeats", ep.addr)
		default:
			x.Route, x.Cluster = ep.route, ep.cluster.Name()
			cl, timeout = ep.cluster, p.cfg.Ingress.Timeout
		}
	} else if r := p.match(d.ci, m); r != nil {
		x.Route, x.Cluster = r.name, r.cluster
		cl, timeout = r.clusters[d.ci], r.timeout
	} else {
		err = stream.Errorf(stream.ErrNoRoute, "no route for %s call to service %q path %q", d.codec.Name(), m.Service, m.Path)
	}
	return cl, timeout, err
}

// serve forwards one call and answers it, on a goroutine of its own.
func (d *downConn) serve(m *stream.Message) {
	x := d.newExchange(m)
	cl, timeout, err := d.begin(x, m)
	var resp *stream.Message
	if err == nil {
		resp, err = cl.RoundTrip(d.p.hard, m, timeout, &x.Exchange)
	}
	d.answer(m, resp, d.end(x, resp, err))
	m.Release()
	d.freeExchange(x)
}

// begin routes x's call (route) and runs the stages' start of the
// exchange: it returns the cluster and timeout, or the error the proxy
// answers the call with.
func (d *downConn) begin(x *exchange, m *stream.Message) (*stream.Cluster, time.Duration, error) {
	cl, timeout, err := d.route(x, m)
	reached, ferr := d.p.pipe.BeginExchange(&x.Exchange)
	x.reached = reached
	if err == nil {
		err = ferr
	}
	return cl, timeout, err
}

// end records the call's outcome on x and runs the stages' end of the
// exchange, before the caller sees the answer, so a limit's slot is free
// when the caller sends its next call. It returns the error to answer
// with, nil to answer resp.
func (d *downConn) end(x *exchange, resp *stream.Message, err error) *stream.Error {
	var e *stream.Error
	if err != nil {
		e = stream.AsError(err)
		x.Err, x.Status = e, e.HTTPStatus()
	} else {
		x.Status, x.RespBytes = resp.Status, resp.Size
	}
	d.p.pipe.EndExchange(&x.Exchange, x.reached)
	return e
}

// answer writes e, or else resp (which it releases), to the caller,
// waiting for the write.
func (d *downConn) answer(m, resp *stream.Message, e *stream.Error) {
	if e != nil {
		_ = d.sc.WriteError(m, e)
		return
	}
	_ = d.sc.WriteResponse(m, resp)
	resp.Release()
}

// refuse answers a request the codec could not accept.
func (d *downConn) refuse(m *stream.Message, err error) {
	x := d.newExchange(m)
	e := stream.AsError(err)
	x.Err, x.Status = e, e.HTTPStatus()
	// Refused requests are counted (metrics) but not limited.
	_ = d.p.metrics.OnExchange(&x.Exchange)
	d.p.metrics.OnExchangeDone(&x.Exchange)
	_ = d.sc.WriteError(m, e)
	m.Release()
	d.freeExchange(x)
}

// match returns the first route matching a call of codec ci.
func (p *Proxy) match(ci int, m *stream.Message) *route {
	for _, r := range p.routes {
		if r.codec >= 0 && r.codec != ci {
			continue
		}
		if r.service != "" && r.service != m.Service {
			continue
		}
		if r.prefix != "" && !strings.HasPrefix(m.Path, r.prefix) {
			continue
		}
		return r
	}
	return nil
}
