package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/core"
)

// Client is a connection to a msgmesh sidecar that reconnects by itself.
// Create it with Dial; it is safe for concurrent use.
type Client struct {
	cfg      config
	addr     string
	log      *slog.Logger
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	routines core.Routines // every goroutine of the Client
	async    asyncQueue
	tracing  tracing

	closeOnce sync.Once

	// declMu serialises DECLARE exchanges, so the set the sidecar holds is
	// always the last one sent. It is held from building a set until its
	// answer, and by connect from DECLARE until the connection is installed.
	declMu sync.Mutex
	decl   declSet                 // the set the sidecar accepted; guarded by declMu
	routes atomic.Pointer[declSet] // what deliveries are routed by: decl, plus the pair being added while its DECLARE is out

	mu     sync.Mutex    // guards the fields below
	conn   *conn         // the current connection; nil while (re)connecting
	ready  chan struct{} // closed when conn is set; a fresh one while conn is nil
	closed bool
}

// Dial connects to the sidecar at addr (host:port, or unix:/path when the
// sidecar listens on a unix-domain socket), says HELLO, and returns a Client
// that keeps the connection up (see the package doc). If the first
// connection cannot be made or the sidecar refuses HELLO (an *Error), Dial
// fails; ctx bounds that first attempt only.
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:   cfg,
		addr:  addr,
		log:   cfg.logger.With("sidecar", addr),
		ready: make(chan struct{}),
	}
	c.tracing.fixed = cfg.tracer
	c.commit(declSet{})
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.async.init()
	c.routines.Go(c.completeAsync)
	cn, err := c.connect(ctx)
	if err != nil {
		c.Close()
		return nil, err
	}
	if !c.routines.Go(func() { c.supervise(cn) }) {
		c.Close()
		return nil, ErrClosed
	}
	return c, nil
}

// Close closes the connection and stops reconnecting. Outstanding requests
// (and PublishAsync callbacks) fail with ErrClosed; handlers in progress
// get a cancelled context and Close waits for them and for every other
// goroutine of the Client. Deliveries not yet acked go back to the broker.
// Do not call Close from a Handler or a PublishAsync callback: it waits
// for them. Close is idempotent and returns nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		cn := c.conn
		c.mu.Unlock()
		c.cancel()
		c.routines.Stop()
		if cn != nil {
			cn.Close(ErrClosed)
		}
		c.async.close()
	})
	c.routines.Wait()
	return nil
}

// current returns the current connection, waiting for one while the Client
// reconnects.
func (c *Client) current(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		cn, ready, closed := c.conn, c.ready, c.closed
		c.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case cn != nil:
			return cn, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// currentNow returns the current connection or nil, without waiting.
func (c *Client) currentNow() *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// detach forgets cn if it is the current connection. Called by conn.fail;
// c.mu must not be held.
func (c *Client) detach(cn *conn) {
	c.mu.Lock()
	if c.conn == cn {
		c.conn = nil
		c.ready = make(chan struct{})
	}
	c.mu.Unlock()
}

// connect dials, says HELLO, declares the current set and installs the new
// connection as current. On any error the connection is closed.
func (c *Client) connect(ctx context.Context) (*conn, error) {
	nc, err := c.cfg.dialer(ctx, c.addr)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", c.addr, err)
	}
	cn := newConn(c, nc)
	if !c.routines.Go(func() { _ = cn.Run() }) {
		_ = nc.Close()
		return nil, ErrClosed
	}
	// The SDK reads message flags (null bodies, empty keys); a sidecar
	// that predates them refuses such a HELLO as malformed, and gets one
	// without them (docs/protocol.md §5.1).
	hello := mesh.Hello{App: c.cfg.app, Client: c.cfg.clientName, MaxInflight: uint32(c.cfg.maxInflight), Secret: c.cfg.secret,
		Features: mesh.FeatureMessageFlags}
	f, err := cn.Call(ctx, mesh.KindHello, &hello)
	if err == nil {
		err = answerErr(f, mesh.KindOK)
	}
	if CodeOf(err) == mesh.CodeBadFrame {
		hello.Features = 0
		if f, err = cn.Call(ctx, mesh.KindHello, &hello); err == nil {
			err = answerErr(f, mesh.KindOK)
		}
	}
	if err != nil {
		cn.Close(err)
		return nil, fmt.Errorf("client: HELLO: %w", err)
	}

	c.declMu.Lock()
	defer c.declMu.Unlock()
	if err := c.declareOn(ctx, cn, c.decl); err != nil {
		var e *Error
		if !errors.As(err, &e) {
			cn.Close(err)
			return nil, fmt.Errorf("client: DECLARE: %w", err)
		}
		// The connection works for publishing; the sidecar holds no
		// subscriptions on it until the next successful DECLARE (the next
		// Subscribe, Subscription.Close or first Pull of a new pair).
		c.log.Error("msgmesh: the sidecar refused the subscription set on the new connection; no messages will be pushed until it is declared again",
			"subscriptions", len(c.decl), "err", err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cn.Close(ErrClosed)
		return nil, ErrClosed
	}
	if cn.Closed() {
		c.mu.Unlock()
		return nil, cn.Err()
	}
	c.conn = cn
	close(c.ready)
	c.mu.Unlock()
	return cn, nil
}

// supervise waits for the current connection to die and replaces it, until
// Close.
func (c *Client) supervise(cn *conn) {
	for {
		select {
		case <-cn.Done():
		case <-c.ctx.Done():
			return
		}
		if c.ctx.Err() != nil {
			return
		}
		c.log.Warn("msgmesh: connection to the sidecar lost; reconnecting", "err", cn.Cause())
		for attempt := 0; ; attempt++ {
			t := time.NewTimer(c.backoff(attempt))
			select {
			case <-t.C:
			case <-c.ctx.Done():
				t.Stop()
				return
			}
			ctx, cancel := context.WithTimeout(c.ctx, 3*c.cfg.heartbeat)
			next, err := c.connect(ctx)
			cancel()
			if err == nil {
				c.log.Info("msgmesh: reconnected to the sidecar", "attempts", attempt+1)
				cn = next
				break
			}
			if c.ctx.Err() != nil {
				return
			}
			c.log.Debug("msgmesh: reconnect failed", "attempt", attempt+1, "err", err)
		}
	}
}

// backoff returns the delay before reconnect attempt n (0-based):
// min·2ⁿ capped at max, randomised to [d/2, d].
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.backoffMax
	if n < 30 {
		d = min(c.cfg.backoffMin<<n, c.cfg.backoffMax)
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// answerErr checks that f is an answer of kind want: an ERROR answer
// becomes an *Error, another kind a protocol error.
func answerErr(f mesh.Frame, want mesh.Kind) error {
	switch f.Kind {
	case want:
		if want == mesh.KindOK && len(f.Payload) != 0 {
			return fmt.Errorf("%w: OK with a %d-byte payload", errUnexpected, len(f.Payload))
		}
		return nil
	case mesh.KindError:
		var e mesh.Error
		if err := e.Decode(f.Payload); err != nil {
			return fmt.Errorf("%w: %w", errUnexpected, err)
		}
		return &e
	}
	return fmt.Errorf("%w: %s where %s was expected", errUnexpected, f.Kind, want)
}
