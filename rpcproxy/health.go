package rpcproxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

// healthLoop heartbeats the local app every interval until Shutdown.
func (p *Proxy) healthLoop() {
	t := time.NewTicker(p.cfg.Ingress.Heartbeat.Interval)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.checkApp(p.ctx)
	}
}

// checkApp runs one round of heartbeats, one per app address at once, and
// opens or closes the ingress listener when the app's health changed. The
// listener is shared by every protocol, so it closes only when no
// protocol's app answers; while one does, calls for the others are
// answered UNAVAILABLE one by one (serve).
func (p *Proxy) checkApp(ctx context.Context) {
	var wg sync.WaitGroup
	for _, ep := range p.app {
		if ep == nil {
			continue
		}
		wg.Add(1)
		go func() { // owned here: waited for below
			defer wg.Done()
			p.heartbeat(ctx, ep)
		}()
	}
	wg.Wait()
	healthy := p.anyAppHealthy()
	if healthy == p.ingressUp.Load() || p.ctx.Err() != nil {
		return
	}
	if healthy {
		if err := p.ingress.sw.open(); err != nil {
			p.log.Error("local app answers again, but the ingress listener cannot reopen; retrying at the next heartbeat", "addr", p.IngressAddr(), "err", err)
			return
		}
		p.ingressUp.Store(true)
		p.log.Info("local app healthy: ingress listener open", "addr", p.IngressAddr())
		return
	}
	p.ingressUp.Store(false)
	p.ingress.sw.pause()
	p.log.Warn("local app unhealthy on every protocol: ingress listener closed", "addr", p.IngressAddr())
}

// anyAppHealthy reports whether the app answers the heartbeats of at
// least one protocol: then the ingress listener stays open.
func (p *Proxy) anyAppHealthy() bool {
	for _, ep := range p.app {
		if ep != nil && ep.healthy.Load() {
			return true
		}
	}
	return false
}

func (p *Proxy) heartbeat(ctx context.Context, ep *appEndpoint) {
	hb := p.cfg.Ingress.Heartbeat
	m := stream.NewMessage()
	ep.codec.Heartbeat(m, hb.HTTPPath)
	resp, err := ep.cluster.RoundTrip(ctx, m, hb.Timeout, nil)
	m.Release()
	ok := err == nil && resp.Status < 500
	status := 0
	if resp != nil {
		status = resp.Status
		resp.Release()
	}
	if ok {
		ep.fails = 0
		ep.oks++
		if !ep.healthy.Load() && ep.oks >= hb.HealthyThreshold {
			ep.healthy.Store(true)
			p.log.Info("local app answers its heartbeats", "protocol", ep.codec.Name(), "addr", ep.addr)
		}
		return
	}
	ep.oks = 0
	ep.fails++
	if ep.healthy.Load() && ep.fails >= hb.UnhealthyThreshold {
		ep.healthy.Store(false)
		p.log.Warn("local app stopped answering its heartbeats", "protocol", ep.codec.Name(), "addr", ep.addr, "failures", ep.fails, "status", status, "err", err)
	}
}

// switchListener is the ingress listener as the core.Server sees it: one
// net.Listener for the proxy's life, behind which the real socket is
// closed while the local app is unhealthy (so connects are refused, and
// calling sidecars fail over at once) and reopened on the same address
// when it is healthy again. A pump goroutine per open socket hands
// accepted connections to Accept.
type switchListener struct {
	addr     net.Addr
	routines *core.Routines
	log      *slog.Logger
	conns    chan net.Conn
	done     chan struct{}

	mu     sync.Mutex
	real   net.Listener // nil while paused
	closed bool
}

func newSwitchListener(ln net.Listener, r *core.Routines, log *slog.Logger) *switchListener {
	l := &switchListener{addr: ln.Addr(), routines: r, log: log, conns: make(chan net.Conn), done: make(chan struct{})}
	l.mu.Lock()
	l.start(ln)
	l.mu.Unlock()
	return l
}

// start runs the accept pump of ln. l.mu held.
func (l *switchListener) start(ln net.Listener) {
	l.real = ln
	if !l.routines.Go(func() { l.pump(ln) }) {
		_ = ln.Close()
		l.real = nil
	}
}

func (l *switchListener) pump(ln net.Listener) {
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("ingress accept failed; retrying", "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-l.done:
				return
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		select {
		case l.conns <- c:
		case <-l.done:
			_ = c.Close()
			return
		}
	}
}

// open reopens the socket on the listener's address, if paused.
func (l *switchListener) open() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.real != nil {
		return nil
	}
	ln, err := net.Listen(l.addr.Network(), l.addr.String())
	if err != nil {
		return err
	}
	l.start(ln)
	return nil
}

// file returns a copy of the open socket for a successor; nil while paused.
func (l *switchListener) file() (*os.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.real == nil {
		return nil, nil
	}
	return core.FileOf(l.real)
}

// pause closes the socket: new connections are refused. Open ones go on.
func (l *switchListener) pause() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.real != nil {
		_ = l.real.Close()
		l.real = nil
	}
}

func (l *switchListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *switchListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	close(l.done)
	if l.real != nil {
		_ = l.real.Close()
		l.real = nil
	}
	return nil
}

func (l *switchListener) Addr() net.Addr { return l.addr }
