package stream

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

	"github.com/msgmesh/msgmesh/core"
)

// This file is the upstream half of the stream layer: a Cluster is a set
// of hosts with a load-balancing policy and, per host, a pool of
// connections through one Codec. RoundTrip sends one request and returns
// its answer:
//
//   - it picks a host (balancer.go), takes a connection from that host's
//     pool, and on a failed connect marks the host down and tries another
//     host, so a refused connection fails over instead of failing the call;
//   - on a multiplexed codec (mesh RPC) a host has a few shared
//     connections (ConnsPerHost), each carrying any number of requests at
//     once: the request is written under a fresh id from the connection's
//     core.IDs and its answer matched back through the connection's core.Pending.
//     That is the request-id rewriting of docs/design.md §4: many downstream
//     connections, one upstream id space;
//   - on an in-order codec (HTTP/1.1) a host has a pool of keep-alive
//     connections, each carrying one request at a time (no pipelining: one
//     slow answer would hold up the requests behind it, and a connection
//     lost mid-pipeline leaves every request behind the first unknown);
//   - every request has a deadline (the route's timeout) covering the
//     connect and the answer; when it passes the request fails with
//     ErrTimeout, and an in-order connection is closed, since its late
//     answer would be taken for the next request's;
//   - a connection that dies fails every request outstanding on it with
//     ErrUpstreamReset at once: no request waits for a connection that is
//     gone.
//
// Each connection has one read loop goroutine, owned by the cluster's
// core.Routines; Close fails what is outstanding and waits for them.
//
// Lock order: balancer.mu and host.mu are never held together, and
// neither is held across a dial, a write or a channel wait.

// DefaultTimeout bounds a RoundTrip given no timeout.
const DefaultTimeout = 30 * time.Second

// HostConfig is one upstream host.
type HostConfig struct {
	Addr string
	// Weight is the host's share of the traffic relative to the other
	// hosts of the cluster; zero means 1.
	Weight int
}

// ClusterConfig configures a Cluster. Zero values of optional fields are
// the documented defaults.
type ClusterConfig struct {
	// Name names the cluster in errors and logs.
	Name string
	// Codec is the protocol spoken to the hosts. Required.
	Codec Codec
	// Hosts are the upstream addresses. At least one is required.
	Hosts []HostConfig
	// Policy picks a host per request. Zero: RoundRobin.
	Policy LBPolicy
	// ConnectTimeout bounds one connect (the request's deadline may cut
	// it shorter). Zero: 1s.
	ConnectTimeout time.Duration
	// ConnsPerHost is how many shared connections a host gets with a
	// multiplexed codec. Zero: 2.
	ConnsPerHost int
	// RoundRobinConns sends each call to a host's next multiplexed
	// connection in turn, as a load generator standing for many callers'
	// connections does (rpcbench). False (the proxy's way): a connection
	// takes calls until spillAt are in flight on it, then the next one.
	RoundRobinConns bool
	// MaxIdlePerHost is how many idle keep-alive connections a host keeps
	// with an in-order codec; more may be open while busy. Zero: 64.
	MaxIdlePerHost int
	// Limits bound the answers read from the hosts. Zero: the defaults.
	Limits Limits
	// Logger receives connection events. Zero: slog.Default().
	Logger *slog.Logger
	// Dial opens a connection; nil uses net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Cluster sends requests to a set of hosts through one codec. It is safe
// for concurrent use.
type Cluster struct {
	name           string
	codec          Codec
	mux            bool
	connectTimeout time.Duration
	connsPerHost   int
	roundRobin     bool // ClusterConfig.RoundRobinConns
	maxIdle        int
	limits         Limits
	log            *slog.Logger
	dial           func(ctx context.Context, network, addr string) (net.Conn, error)

	hosts    []*host
	lb       *balancer
	routines core.Routines // connection read loops, the sweeper (async.go)
	closed   atomic.Bool
	stop     chan struct{} // closed by Close: the sweeper ends

	// Calls started with Start (async.go).
	outstanding atomic.Int64 // calls started and not finished
	sweeping    atomic.Bool  // the sweeper runs
	connsMu     sync.Mutex
	live        map[*uconn]struct{} // every connection not failed, for the sweeper
}

// host is one upstream address and its connections.
type host struct {
	idx    int
	addr   string
	weight int

	active    atomic.Int64 // requests in flight: the least-request metric
	fails     atomic.Int32 // consecutive failed connects
	downUntil atomic.Int64 // unix nanoseconds; skipped by the balancer until then

	cw int // current weight of smooth weighted round robin; balancer.mu

	mu      sync.Mutex
	conns   []*uconn // every open connection (multiplexed: the shared ones)
	idle    []*uconn // in-order codecs: connections free for a request
	dialing *dialing // multiplexed: the connect in progress, if any
	next    uint32   // Cluster.roundRobin: the next of conns
}

// spillAt is how many calls a multiplexed connection carries at once
// before calls go to its host's next connection. Calls sharing a
// connection share its write syscalls (core.Writer puts the frames
// written during one syscall into the next), and on loopback those
// syscalls are most of a sidecar's cost: spread round robin over two
// connections, 64 calls in flight through an egress and an ingress
// sidecar took 1.9 write and 3.1 read syscalls per call; filling one
// connection first, 1.2 and 1.9, and a quarter less CPU per call
// (docs/benchmarks.md, RPC). The other connections take the load beyond
// this, and the calls when one connection fails.
const spillAt = 64

// pickLocked returns the first live connection with fewer than spillAt
// calls in flight, else the least busy, or nil if every connection is
// failing; with roundRobin the next live connection in turn. h.mu held
// on entry.
func (h *host) pickLocked(roundRobin bool) *uconn {
	if roundRobin {
		for range h.conns {
			uc := h.conns[h.next%uint32(len(h.conns))]
			h.next++
			if !uc.dead.Load() {
				return uc
			}
		}
		return nil
	}
	var best *uconn
	var least int64
	for _, uc := range h.conns {
		if uc.dead.Load() {
			continue
		}
		n := uc.inflight.Load()
		if n < spillAt {
			return uc
		}
		if best == nil || n < least {
			best, least = uc, n
		}
	}
	return best
}

type dialing struct {
	done chan struct{}
	err  error // set before done is closed
}

// NewCluster checks cfg and returns a cluster. It connects lazily, on the
// first request to each host.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Codec == nil {
		return nil, fmt.Errorf("stream: cluster %q: no codec", cfg.Name)
	}
	if len(cfg.Hosts) == 0 {
		return nil, fmt.Errorf("stream: cluster %q: no hosts", cfg.Name)
	}
	c := &Cluster{
		name:           cfg.Name,
		codec:          cfg.Codec,
		mux:            cfg.Codec.Multiplexed(),
		connectTimeout: cfg.ConnectTimeout,
		connsPerHost:   cfg.ConnsPerHost,
		roundRobin:     cfg.RoundRobinConns,
		maxIdle:        cfg.MaxIdlePerHost,
		limits:         cfg.Limits.WithDefaults(),
		log:            cfg.Logger,
		dial:           cfg.Dial,
		stop:           make(chan struct{}),
		live:           make(map[*uconn]struct{}),
	}
	if c.connectTimeout <= 0 {
		c.connectTimeout = time.Second
	}
	if c.connsPerHost <= 0 {
		c.connsPerHost = 2
	}
	if c.maxIdle <= 0 {
		c.maxIdle = 64
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.dial == nil {
		var d net.Dialer
		c.dial = d.DialContext
	}
	for i, hc := range cfg.Hosts {
		if hc.Addr == "" {
			return nil, fmt.Errorf("stream: cluster %q: host %d has no address", cfg.Name, i)
		}
		if hc.Weight < 0 {
			return nil, fmt.Errorf("stream: cluster %q: host %s has negative weight %d", cfg.Name, hc.Addr, hc.Weight)
		}
		w := hc.Weight
		if w == 0 {
			w = 1
		}
		c.hosts = append(c.hosts, &host{idx: i, addr: hc.Addr, weight: w})
	}
	var err error
	if c.lb, err = newBalancer(cfg.Policy, c.hosts); err != nil {
		return nil, fmt.Errorf("stream: cluster %q: %w", cfg.Name, err)
	}
	return c, nil
}

// Name returns the cluster's name.
func (c *Cluster) Name() string { return c.name }

// Codec returns the cluster's codec.
func (c *Cluster) Codec() Codec { return c.codec }

// RoundTrip sends req to a host of the cluster and returns the answer, or
// an *Error: ErrNoHealthyHost when no host accepted a connection,
// ErrUpstreamReset when the connection died after the request was sent,
// ErrTimeout when no answer came within timeout (zero: DefaultTimeout),
// ErrShuttingDown when ctx ended or the cluster was closed. An answer with
// Refused set is retried on another host while one is left. If x is not
// nil, x.Upstream is set to the host tried last. The caller releases the
// answer; req stays the caller's.
func (c *Cluster) RoundTrip(ctx context.Context, req *Message, timeout time.Duration, x *Exchange) (*Message, error) {
	return c.roundTripFrom(ctx, req, timeout, x, nil)
}

// roundTripFrom is RoundTrip trying first first, when not nil (Start
// picked it).
func (c *Cluster) roundTripFrom(ctx context.Context, req *Message, timeout time.Duration, x *Exchange, first *host) (*Message, error) {
	if c.closed.Load() {
		return nil, Errorf(ErrShuttingDown, "cluster %s is closed", c.name)
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	deadline := time.Now().Add(timeout)
	timer := getTimer(timeout)
	defer putTimer(timer)
	var tried hostSet
	var lastErr error
	for range c.hosts {
		h := first
		first = nil
		if h == nil {
			h = c.lb.pick(&tried, time.Now().UnixNano())
		}
		if h == nil {
			break
		}
		tried.add(h.idx)
		if x != nil {
			x.Upstream = h.addr
		}
		uc, err := c.conn(ctx, h, deadline, timer)
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				return nil, e // timeout or shutdown while waiting for a connect
			}
			if !time.Now().Before(deadline) {
				return nil, Errorf(ErrTimeout, "cluster %s: no connection within %s: %w", c.name, timeout, err)
			}
			lastErr = err // the connect failed: try another host
			continue
		}
		h.active.Add(1)
		resp, err := uc.roundTrip(ctx, req, timeout, timer)
		h.active.Add(-1)
		if !c.mux {
			c.putIdle(uc, resp, err)
		}
		if err == nil && resp.Refused && tried.n < len(c.hosts) {
			h.markDown()
			lastErr = fmt.Errorf("%s refused the request (status %d)", h.addr, resp.Status)
			resp.Release()
			continue
		}
		return resp, err
	}
	if lastErr == nil {
		lastErr = errors.New("no hosts")
	}
	return nil, Errorf(ErrNoHealthyHost, "cluster %s: no host took the request (%d tried): %w", c.name, tried.n, lastErr)
}

// conn returns a connection to h, connecting if needed. A failed connect
// is returned as a plain error (the caller fails over); running out of
// time or shutting down while waiting is an *Error.
func (c *Cluster) conn(ctx context.Context, h *host, deadline time.Time, timer *time.Timer) (*uconn, error) {
	if !c.mux {
		h.mu.Lock()
		for len(h.idle) > 0 {
			uc := h.idle[len(h.idle)-1]
			h.idle = h.idle[:len(h.idle)-1]
			if !uc.dead.Load() {
				h.mu.Unlock()
				return uc, nil
			}
		}
		h.mu.Unlock()
		return c.connect(ctx, h, deadline)
	}
	for {
		h.mu.Lock()
		n := len(h.conns)
		if n > 0 && (n >= c.connsPerHost || h.dialing != nil) {
			uc := h.pickLocked(c.roundRobin)
			h.mu.Unlock()
			if uc == nil {
				continue // all failing right now; fail removes them from conns
			}
			return uc, nil
		}
		if d := h.dialing; d != nil {
			h.mu.Unlock()
			select {
			case <-d.done:
				if d.err != nil {
					return nil, d.err
				}
				continue
			case <-timer.C:
				return nil, Errorf(ErrTimeout, "cluster %s: connecting to %s took too long", c.name, h.addr)
			case <-ctx.Done():
				return nil, Errorf(ErrShuttingDown, "cluster %s: %w", c.name, ctx.Err())
			}
		}
		d := &dialing{done: make(chan struct{})}
		h.dialing = d
		h.mu.Unlock()
		uc, err := c.connect(ctx, h, deadline)
		h.mu.Lock()
		h.dialing = nil
		d.err = err
		close(d.done)
		if err != nil {
			// An extra connection failed but the host has others: use one
			// rather than dial again.
			if open := h.pickLocked(c.roundRobin); open != nil {
				uc, err = open, nil
			}
		}
		h.mu.Unlock()
		return uc, err
	}
}

// connect dials h and starts the connection's read loop.
func (c *Cluster) connect(ctx context.Context, h *host, deadline time.Time) (*uconn, error) {
	if d := time.Now().Add(c.connectTimeout); d.Before(deadline) {
		deadline = d
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	nc, err := c.dial(dctx, "tcp", h.addr)
	cancel()
	if err != nil {
		h.markDown()
		c.log.Debug("upstream connect failed", "cluster", c.name, "host", h.addr, "err", err)
		return nil, err
	}
	h.fails.Store(0)
	h.downUntil.Store(0)
	uc := &uconn{c: c, h: h, nc: nc, cc: c.codec.NewClientConn(nc, c.limits), pending: core.NewPending[*Message]()}
	c.connsMu.Lock()
	c.live[uc] = struct{}{}
	c.connsMu.Unlock()
	h.mu.Lock()
	h.conns = append(h.conns, uc)
	h.mu.Unlock()
	if !c.routines.Go(uc.readLoop) {
		uc.fail(errors.New("cluster closed"))
		return nil, Errorf(ErrShuttingDown, "cluster %s is closed", c.name)
	}
	return uc, nil
}

// putIdle returns an in-order connection to its host's idle list after a
// round trip, or closes it when it cannot carry another request.
func (c *Cluster) putIdle(uc *uconn, resp *Message, err error) {
	if err != nil || resp.Close || uc.dead.Load() {
		uc.fail(io.EOF)
		return
	}
	h := uc.h
	h.mu.Lock()
	if len(h.idle) < c.maxIdle && !c.closed.Load() {
		h.idle = append(h.idle, uc)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	uc.fail(io.EOF)
}

// Close fails every outstanding request with ErrShuttingDown, closes every
// connection and waits for their read loops. Later RoundTrips fail at once.
// Safe to call more than once.
func (c *Cluster) Close() {
	if c.closed.CompareAndSwap(false, true) {
		close(c.stop)
	}
	c.routines.Stop()
	for _, h := range c.hosts {
		h.mu.Lock()
		conns := append([]*uconn(nil), h.conns...)
		h.mu.Unlock()
		for _, uc := range conns {
			uc.fail(errClusterClosed)
		}
	}
	c.routines.Wait()
}

var errClusterClosed = errors.New("cluster closed")

// HostStatus describes one host, for tests and status pages.
type HostStatus struct {
	Addr   string
	Weight int
	Active int64 // requests in flight
	Conns  int   // open connections
	Down   bool  // skipped after failed connects, until a backoff passes
}

// Hosts returns the status of every host.
func (c *Cluster) Hosts() []HostStatus {
	now := time.Now().UnixNano()
	out := make([]HostStatus, len(c.hosts))
	for i, h := range c.hosts {
		h.mu.Lock()
		n := len(h.conns)
		h.mu.Unlock()
		out[i] = HostStatus{Addr: h.addr, Weight: h.weight, Active: h.active.Load(), Conns: n, Down: h.isDown(now)}
	}
	return out
}

// markDown records a failed connect (or a refusal): the host is skipped
// for a backoff that doubles with each failure in a row, from 100ms up to
// 10s, unless no other host is left to try.
func (h *host) markDown() {
	n := min(h.fails.Add(1), 8)
	backoff := min(100*time.Millisecond<<(n-1), 10*time.Second)
	h.downUntil.Store(time.Now().Add(backoff).UnixNano())
}

func (h *host) isDown(now int64) bool { return h.downUntil.Load() > now }

func (h *host) remove(uc *uconn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, x := range h.conns {
		if x == uc {
			h.conns = append(h.conns[:i], h.conns[i+1:]...)
			break
		}
	}
	for i, x := range h.idle {
		if x == uc {
			h.idle = append(h.idle[:i], h.idle[i+1:]...)
			break
		}
	}
}

// uconn is one upstream connection.
type uconn struct {
	c       *Cluster
	h       *host
	nc      net.Conn
	cc      ClientConn
	ids     core.IDs
	pending *core.Pending[*Message]
	dead    atomic.Bool // failed or retiring: take no new requests
	// inflight counts the calls waiting for an answer on this connection
	// (host.pickLocked).
	inflight atomic.Int64
	async    asyncTable // calls started with Cluster.Start (async.go)
	once     sync.Once
}

func (uc *uconn) readLoop() {
	for {
		m, err := uc.cc.ReadResponse()
		if err != nil {
			uc.fail(err)
			return
		}
		last := m.Close
		if last {
			uc.dead.Store(true) // before the answer is handed over
			if uc.c.mux {
				uc.h.remove(uc)
			}
		}
		if a := uc.async.take(m.ID); a != nil {
			uc.c.complete(a, m, nil)
		} else if !uc.pending.Resolve(m.ID, core.Result[*Message]{Val: m}) {
			m.Release() // its request timed out
		}
		if last && uc.c.mux && uc.pending.Len() == 0 && uc.async.n.Load() == 0 {
			uc.fail(io.EOF)
			return
		}
	}
}

// fail closes the connection once and fails what is outstanding on it.
func (uc *uconn) fail(cause error) {
	uc.once.Do(func() {
		uc.dead.Store(true)
		uc.h.remove(uc)
		_ = uc.cc.Close()
		_ = uc.nc.Close()
		var err *Error
		switch {
		case errors.Is(cause, errClusterClosed):
			err = Errorf(ErrShuttingDown, "cluster %s is closed", uc.c.name)
		case errors.Is(cause, io.EOF):
			err = Errorf(ErrUpstreamReset, "upstream %s closed the connection", uc.h.addr)
		default:
			err = Errorf(ErrUpstreamReset, "upstream %s: connection lost: %w", uc.h.addr, cause)
		}
		uc.c.connsMu.Lock()
		delete(uc.c.live, uc)
		uc.c.connsMu.Unlock()
		if n := uc.pending.Len() + int(uc.async.n.Load()); n > 0 {
			uc.c.log.Warn("upstream connection lost with requests outstanding", "cluster", uc.c.name, "host", uc.h.addr, "outstanding", n, "err", cause)
		}
		uc.pending.FailAll(err)
		for _, a := range uc.async.closeAll() {
			uc.c.complete(a, nil, err)
		}
	})
}

// roundTrip sends req on uc and waits for its answer until timer fires.
func (uc *uconn) roundTrip(ctx context.Context, req *Message, timeout time.Duration, timer *time.Timer) (*Message, error) {
	uc.inflight.Add(1)
	defer uc.inflight.Add(-1)
	id := uc.ids.Next()
	ch := uc.pending.Add(id)
	if err := uc.cc.WriteRequest(id, req); err != nil {
		uc.pending.Remove(id)
		uc.fail(err)
		return nil, Errorf(ErrUpstreamReset, "upstream %s: sending the request: %w", uc.h.addr, err)
	}
	select {
	case r := <-ch:
		uc.pending.Done(ch)
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val, nil
	case <-timer.C:
		uc.abandon(id, ch)
		return nil, Errorf(ErrTimeout, "cluster %s: no answer from %s within %s", uc.c.name, uc.h.addr, timeout)
	case <-ctx.Done():
		uc.abandon(id, ch)
		return nil, Errorf(ErrShuttingDown, "cluster %s: %w", uc.c.name, ctx.Err())
	}
}

// abandon gives up on request id. On an in-order connection the answer
// would still come and be taken for the next request's, so the connection
// is closed.
func (uc *uconn) abandon(id uint64, ch <-chan core.Result[*Message]) {
	uc.pending.Remove(id)
	select {
	case r := <-ch: // answered just now
		r.Val.Release()
	default:
	}
	if !uc.c.mux {
		uc.fail(errors.New("request abandoned"))
	}
}

var timerPool sync.Pool

// getTimer returns a running timer from the pool (one per request, not one
// allocation per request).
func getTimer(d time.Duration) *time.Timer {
	if t, ok := timerPool.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

// putTimer stops t and pools it. Since Go 1.23 a stopped timer's channel
// holds no stale value, so Reset on reuse is safe.
func putTimer(t *time.Timer) {
	t.Stop()
	timerPool.Put(t)
}
