package msgmesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/core"
)

// The HTTP API's keep-alive connections move to a successor in a hot
// upgrade (docs/upgrade.md), as the RPC proxy's callers' connections do: a
// request/response connection carries requests one way only, so once the
// requests read from it are answered it can move as is, with the bytes of
// a request the client had only partly sent. net/http owns the connections
// and buffers what it reads, so the sidecar takes them back from it:
//
//   - httpConns wraps the listening socket. Its Accept yields the
//     connections a predecessor handed over first, each with its carried
//     bytes in front of the socket's, then the socket's own; net/http reads
//     the next request from each as from a new connection.
//   - httpConn wraps each connection and records what net/http read from
//     it since the connection last went idle (http.Server.ConnState): the
//     start of the request being read, which net/http may hold in its
//     buffers. A freeze takes an idle connection away by failing its reads
//     (a past read deadline) and its writes, so that net/http, which
//     answers nothing to a read timeout, closes it; Close then detaches
//     the socket instead of closing it. A connection whose request is being
//     served moves once it is answered; one whose handler waits for the
//     rest of the body (and did nothing else yet) moves at once, and the
//     successor reads the whole request again.
//
// A connection net/http never hands back within the freeze's bound closes
// as at a shutdown. HTTP pipelining (the next request sent before the
// answer to the previous one; no common client does it) is not kept
// apart: net/http may have buffered such a request before the connection
// went idle, and it would be lost with the move.

// HTTPConnState is one HTTP API connection in flight between two processes.
type HTTPConnState struct {
	File *os.File `json:"-"`
	// Buffered are the bytes read from the client since its last answer:
	// the start of a request it had only partly sent.
	Buffered []byte `json:"buffered,omitempty"`
}

// httpCarryLimit bounds the bytes one connection carries (a request head
// is at most core.DefaultMaxHeaderBytes by default): one that read more of
// its current request is not taken in the middle of it, and moves once it
// is answered.
const httpCarryLimit = 64 << 10

// errMoving fails net/http's reads of a connection that moves; it is a
// timeout, which net/http answers with nothing.
var errMoving = fmt.Errorf("msgmesh: http connection moves to a successor: %w", os.ErrDeadlineExceeded)

// aLongTimeAgo is a read deadline in the past: it interrupts a read.
var aLongTimeAgo = time.Unix(1, 0)

// httpConns tracks the HTTP API's connections from accept to close.
type httpConns struct {
	ln  net.Listener // the listening socket
	log *slog.Logger

	freezing atomic.Bool // freeze began: idle connections move

	mu      sync.Mutex
	queued  []*httpConn            // adopted, not yet accepted
	pending map[string]*httpConn   // accepted, not yet seen by net/http, by address pair
	byConn  map[net.Conn]*httpConn // as net/http's hooks name them
	live    map[*httpConn]struct{} // accepted, not yet closed or detached
	frozen  []HTTPConnState        // detached during the freeze
	done    atomic.Bool            // freeze collected frozen: no more moves; set under mu
	changed chan struct{}          // signalled when a connection leaves live
}

// newHTTPConns wraps ln, yielding the adopted connections first. It owns
// their files from now on.
func newHTTPConns(ln net.Listener, adopted []HTTPConnState, log *slog.Logger) *httpConns {
	t := &httpConns{ln: ln, log: log, pending: map[string]*httpConn{}, byConn: map[net.Conn]*httpConn{},
		live: map[*httpConn]struct{}{}, changed: make(chan struct{}, 1)}
	for _, cs := range adopted {
		nc, err := net.FileConn(cs.File)
		_ = cs.File.Close()
		if err != nil {
			log.Error("adopting an HTTP connection", "err", err)
			continue
		}
		c := t.newConn(nc)
		c.pre = cs.Buffered
		t.queued = append(t.queued, c)
	}
	return t
}

func (t *httpConns) newConn(nc net.Conn) *httpConn {
	c := &httpConn{Conn: nc, t: t}
	c.cond.L = &c.mu
	return c
}

// connKey names a connection by its two ends, unique among the live TCP
// connections of one listening socket; net/http's hooks see the
// connection wrapped again (core.HTTPLimits.Listener).
func connKey(nc net.Conn) string {
	return nc.LocalAddr().String() + "|" + nc.RemoteAddr().String()
}

// Accept yields the adopted connections first, then new ones.
func (t *httpConns) Accept() (net.Conn, error) {
	if t.freezing.Load() {
		return nil, net.ErrClosed
	}
	t.mu.Lock()
	if len(t.queued) > 0 {
		c := t.queued[0]
		t.queued = t.queued[1:]
		t.trackLocked(c)
		t.mu.Unlock()
		return c, nil
	}
	t.mu.Unlock()
	nc, err := t.ln.Accept()
	if err != nil {
		return nil, err
	}
	c := t.newConn(nc)
	t.mu.Lock()
	t.trackLocked(c)
	t.mu.Unlock()
	return c, nil
}

func (t *httpConns) trackLocked(c *httpConn) {
	t.live[c] = struct{}{}
	t.pending[connKey(c)] = c
}

// Close stops accepting; the socket stays open in the copies a handoff took.
func (t *httpConns) Close() error { return t.ln.Close() }

// Addr is the listening socket's address.
func (t *httpConns) Addr() net.Addr { return t.ln.Addr() }

type httpConnKey struct{}

// connContext is http.Server.ConnContext: it learns how net/http names the
// connection, and puts it in its requests' context for serve.
func (t *httpConns) connContext(ctx context.Context, nc net.Conn) context.Context {
	t.mu.Lock()
	c := t.pending[connKey(nc)]
	if c != nil {
		delete(t.pending, connKey(nc))
		t.byConn[nc] = c
	}
	t.mu.Unlock()
	if c == nil {
		return ctx
	}
	return context.WithValue(ctx, httpConnKey{}, c)
}

// connState is http.Server.ConnState.
func (t *httpConns) connState(nc net.Conn, st http.ConnState) {
	t.mu.Lock()
	c := t.byConn[nc]
	if st == http.StateClosed || st == http.StateHijacked {
		delete(t.byConn, nc)
	}
	t.mu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch st {
	case http.StateNew:
		c.movableLocked()
	case http.StateActive:
		c.active = true
	case http.StateIdle:
		// The request is answered: what net/http read since is the next
		// one, and the byte its background read took during this one
		// (net/http keeps that byte for the next request).
		c.busy, c.active, c.committed, c.overflow = false, false, false, false
		c.since = append(c.since[:0], c.bg...)
		c.bg = c.bg[:0]
		c.movableLocked()
	}
}

// serve wraps the HTTP API's handler: a request read from a connection
// that moves is not served (the successor reads it again), and one being
// served holds its connection until it is answered, unless its handler
// waits for the rest of the body.
func (t *httpConns) serve(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(httpConnKey{}).(*httpConn)
		if c == nil {
			next.ServeHTTP(w, r)
			return
		}
		c.mu.Lock()
		if c.moving {
			c.mu.Unlock()
			return
		}
		c.busy = true
		c.mu.Unlock()
		if r.Body != nil && r.Body != http.NoBody {
			// One request at a time per connection: its body wrapper is reused.
			c.body = movableBody{ReadCloser: r.Body, c: c}
			r.Body = &c.body
		}
		next.ServeHTTP(w, r)
	})
}

// gone takes c out of the live connections; st is its state when it
// moves, nil when it closed.
func (t *httpConns) gone(c *httpConn, st *HTTPConnState) {
	t.mu.Lock()
	delete(t.live, c)
	delete(t.pending, connKey(c))
	if st != nil {
		if t.done.Load() {
			_ = st.File.Close() // too late to move: it closes
		} else {
			t.frozen = append(t.frozen, *st)
		}
	}
	t.mu.Unlock()
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// freeze stops accepting and takes every connection from net/http once it
// is idle, until none is left or ctx ends, and returns them with the
// adopted ones not accepted yet. Connections still served then stay with
// net/http, which closes them at its shutdown.
func (t *httpConns) freeze(ctx context.Context) []HTTPConnState {
	t.freezing.Store(true)
	_ = t.Close()
	t.mu.Lock()
	conns := make([]*httpConn, 0, len(t.live))
	for c := range t.live {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		c.movableLocked()
		c.mu.Unlock()
	}
	for waiting := true; waiting; {
		t.mu.Lock()
		left := len(t.live)
		t.mu.Unlock()
		if left == 0 {
			break
		}
		select {
		case <-t.changed:
		case <-ctx.Done():
			t.log.Warn("handoff: HTTP connections still answering a request close", "count", left)
			waiting = false
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done.Store(true)
	out := t.frozen
	for _, c := range t.queued {
		out = append(out, c.stateLocked())
	}
	t.frozen, t.queued = nil, nil
	return out
}

// discard closes the adopted connections never accepted.
func (t *httpConns) discard() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.queued {
		_ = c.Conn.Close()
	}
	t.queued = nil
}

// httpConn is one HTTP API connection as net/http sees it (httpConns).
type httpConn struct {
	net.Conn
	t    *httpConns
	body movableBody // the request's body (serve)

	mu   sync.Mutex
	cond sync.Cond // on mu: a read returned
	pre  []byte    // carried bytes from a predecessor, not yet read
	// since is what net/http read since the connection last went idle;
	// bg the bytes of its background reads (one byte at a time, made
	// while a request is served) since it became active.
	since, bg []byte
	overflow  bool // since passed httpCarryLimit: no move until answered
	active    bool // between StateActive and StateIdle
	busy      bool // a request is served, until StateIdle
	inBody    bool // the handler waits in a read of its body
	// committed: the handler may have acted on its request (it wrote
	// something, or read the whole body); it keeps the connection until
	// the request is answered.
	committed bool
	reading   bool // a read of the socket is in progress
	moving    bool // taken from net/http: reads and writes fail
	closed    bool
}

// movableLocked takes c from net/http if the freeze began and c may move
// now: idle (or reading a request head), or its handler waits for the
// body and wrote nothing. Its reads fail from now on, and net/http closes
// it (Close). c.mu held.
func (c *httpConn) movableLocked() {
	if !c.t.freezing.Load() || c.moving || c.closed || c.overflow || c.busy && (!c.inBody || c.committed) {
		return
	}
	if c.t.done.Load() {
		return
	}
	c.moving = true
	_ = c.Conn.SetReadDeadline(aLongTimeAgo)
}

func (c *httpConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.moving {
		c.mu.Unlock()
		return 0, errMoving
	}
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		c.tapLocked(p[:n], len(p))
		c.mu.Unlock()
		return n, nil
	}
	c.reading = true
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.reading = false
	c.tapLocked(p[:n], len(p))
	c.cond.Broadcast()
	c.mu.Unlock()
	return n, err
}

// tapLocked records b, read into a buffer of size asked.
func (c *httpConn) tapLocked(b []byte, asked int) {
	if c.active && asked == 1 {
		c.bg = append(c.bg, b...)
	}
	if c.overflow {
		return
	}
	if len(c.since)+len(b) > httpCarryLimit {
		c.overflow, c.since = true, c.since[:0]
		return
	}
	c.since = append(c.since, b...)
}

func (c *httpConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if c.moving {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if c.busy {
		c.committed = true
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// SetReadDeadline keeps the past deadline of a connection that moves.
func (c *httpConn) SetReadDeadline(d time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.moving {
		return nil
	}
	return c.Conn.SetReadDeadline(d)
}

func (c *httpConn) SetDeadline(d time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.moving {
		return c.Conn.SetWriteDeadline(d)
	}
	return c.Conn.SetDeadline(d)
}

// Close closes the connection, or, when it moves, detaches its socket
// with the bytes read since it was last idle.
func (c *httpConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	if !c.moving {
		c.mu.Unlock()
		c.t.gone(c, nil)
		return c.Conn.Close()
	}
	for c.reading { // the past deadline ends it
		c.cond.Wait()
	}
	st := c.stateLocked()
	c.mu.Unlock()
	if st.File == nil {
		c.t.gone(c, nil)
		return nil
	}
	c.t.gone(c, &st)
	return nil
}

// stateLocked duplicates c's socket and closes c: the socket lives on in
// the copy. File is nil if it could not be duplicated (c is closed then).
func (c *httpConn) stateLocked() HTTPConnState {
	buf := append(append([]byte(nil), c.since...), c.pre...)
	f, err := core.FileOf(c.Conn)
	_ = c.Conn.Close()
	if err != nil {
		c.t.log.Warn("handoff: an HTTP connection cannot move; it closes", "err", err)
		return HTTPConnState{}
	}
	return HTTPConnState{File: f, Buffered: buf}
}

// movableBody is a request body whose handler may lose its connection to
// a successor while it waits for the body: the handler then gets an error
// rather than the rest, and has done nothing the successor would do again.
type movableBody struct {
	io.ReadCloser
	c *httpConn
}

func (b *movableBody) Read(p []byte) (int, error) {
	c := b.c
	c.mu.Lock()
	c.inBody = true
	c.movableLocked()
	if c.moving {
		c.inBody = false
		c.mu.Unlock()
		return 0, errMoving
	}
	c.mu.Unlock()
	n, err := b.ReadCloser.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inBody = false
	if c.moving {
		return 0, errMoving
	}
	if errors.Is(err, io.EOF) {
		c.committed = true // the handler acts on the whole body now
	}
	return n, err
}
