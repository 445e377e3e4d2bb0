package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/core"
)

// conn is one connection to the sidecar. It is never reused: a reconnect
// makes a new conn, so a delivery remembers the conn it came on and can
// tell whether its id still means anything.
type conn struct {
	c       *Client
	nc      net.Conn
	w       *core.Writer
	pending *core.Pending[mesh.Frame] // answers to our requests
	ids     core.IDs                  // our request ids, counted from 1 on each connection
	frames  atomic.Uint64             // frames read; the heartbeat watches it

	once  sync.Once
	lost  chan struct{} // closed by fail
	cause error         // why it failed; written before lost is closed
}

func newConn(c *Client, nc net.Conn) *conn {
	return &conn{
		c:       c,
		nc:      nc,
		w:       core.NewWriter(nc, 0),
		pending: core.NewPending[mesh.Frame](),
		lost:    make(chan struct{}),
	}
}

// fail closes the connection once: it stops being current, outstanding
// requests fail with ErrConnectionLost (ErrClosed when cause is ErrClosed),
// and the read loop and heartbeat return. c.mu must not be held.
func (cn *conn) fail(cause error) {
	cn.once.Do(func() {
		cn.c.detach(cn)
		cn.cause = cause
		close(cn.lost)
		_ = cn.w.Close()
		_ = cn.nc.Close()
		cn.pending.FailAll(cn.lostErr())
	})
}

// dead reports whether fail was called.
func (cn *conn) dead() bool {
	select {
	case <-cn.lost:
		return true
	default:
		return false
	}
}

// lostErr is the error for requests and settles on a dead connection. Call
// it only after fail.
func (cn *conn) lostErr() error {
	if errors.Is(cn.cause, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, cn.cause)
}

// frameBufs holds encode buffers; frames are copied into the Writer's
// buffer (or written) before Write returns, so a buffer is reused at once.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBuf keeps a few huge publishes from pinning memory in the pool.
const maxPooledBuf = 1 << 20

// send encodes and writes one frame. A write error kills the connection
// and returns its lost error; an encode error (frame too large) is
// returned as is and the connection stays up.
func (cn *conn) send(kind mesh.Kind, flags mesh.Flags, id uint64, payload mesh.Encoder) error {
	bp := frameBufs.Get().(*[]byte)
	b, err := mesh.AppendFrame((*bp)[:0], cn.c.cfg.maxFrameSize, kind, flags, id, payload)
	if err == nil {
		err = cn.w.Write(b)
		if err != nil {
			cn.fail(err)
			err = cn.lostErr()
		}
	}
	if cap(b) <= maxPooledBuf {
		*bp = b[:0]
		frameBufs.Put(bp)
	}
	return err
}

// start sends a request and returns the channel its answer arrives on.
func (cn *conn) start(kind mesh.Kind, payload mesh.Encoder) (uint64, <-chan core.Result[mesh.Frame], error) {
	id := cn.ids.Next()
	ch := cn.pending.Add(id)
	if err := cn.send(kind, 0, id, payload); err != nil {
		cn.pending.Remove(id)
		return 0, nil, err
	}
	return id, ch, nil
}

// request sends a request and waits for its answer, or ctx.
func (cn *conn) request(ctx context.Context, kind mesh.Kind, payload mesh.Encoder) (mesh.Frame, error) {
	id, ch, err := cn.start(kind, payload)
	if err != nil {
		return mesh.Frame{}, err
	}
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		cn.pending.Remove(id)
		return mesh.Frame{}, ctx.Err()
	}
}

// readLoop reads frames until the connection fails. It never blocks on
// application code: answers go to Pending, deliveries to subscription
// queues (or are NACKed when there is no room).
func (cn *conn) readLoop() {
	r := mesh.NewReader(cn.nc, cn.c.cfg.maxFrameSize)
	for {
		f, err := r.ReadFrame()
		if errors.Is(err, mesh.ErrFrameTooLarge) {
			// The header is valid: the reader skips the payload and the
			// connection goes on (docs/protocol.md §2.2).
			cn.frames.Add(1)
			cn.tooLarge(f, err)
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the sidecar closed the connection")
			}
			cn.fail(err)
			return
		}
		cn.frames.Add(1)
		if f.IsResponse() {
			if !cn.pending.Resolve(f.ID, core.Result[mesh.Frame]{Val: f}) {
				cn.unmatched(f)
			}
			continue
		}
		switch f.Kind {
		case mesh.KindDeliver:
			cn.deliver(f)
		case mesh.KindHeartbeat:
			if len(f.Payload) != 0 {
				e := mesh.Error{Code: mesh.CodeBadFrame, Message: "HEARTBEAT with a payload"}
				_ = cn.send(mesh.KindError, mesh.FlagResponse, f.ID, &e)
				continue
			}
			_ = cn.send(mesh.KindHeartbeat, mesh.FlagResponse, f.ID, nil)
		default:
			// Including answer kinds sent without RESPONSE (protocol §4).
			e := mesh.Error{Code: mesh.CodeUnsupported, Message: "the client does not accept " + f.Kind.String() + " requests"}
			_ = cn.send(mesh.KindError, mesh.FlagResponse, f.ID, &e)
		}
	}
}

// tooLarge handles a frame from the sidecar over WithMaxFrameSize, whose
// payload the reader skips: the request it answers fails with an error
// wrapping mesh.ErrFrameTooLarge, and a request from the sidecar (a
// DELIVER) is answered ERROR FRAME_TOO_LARGE, which hands it back to the
// broker.
func (cn *conn) tooLarge(f mesh.Frame, err error) {
	if f.IsResponse() {
		err = fmt.Errorf("client: the sidecar's %s answer does not fit WithMaxFrameSize: %w", f.Kind, err)
		if !cn.pending.Resolve(f.ID, core.Result[mesh.Frame]{Err: err}) {
			cn.c.log.Warn("msgmesh: skipped an answer over the frame limit", "kind", f.Kind, "id", f.ID, "err", err)
		}
		return
	}
	cn.c.log.Error("msgmesh: skipped a request over the frame limit; raise WithMaxFrameSize", "kind", f.Kind, "id", f.ID, "err", err)
	e := mesh.Error{Code: mesh.CodeFrameTooLarge, Message: err.Error()}
	_ = cn.send(mesh.KindError, mesh.FlagResponse, f.ID, &e)
}

// unmatched handles an answer for no outstanding request: a heartbeat
// answer (nothing waits for those), an answer to a request we gave up on
// (ctx), or an ERROR about the connection itself, which the sidecar sends
// before closing it (protocol §2.3).
func (cn *conn) unmatched(f mesh.Frame) {
	switch f.Kind {
	case mesh.KindHeartbeat:
	case mesh.KindError:
		var e mesh.Error
		_ = e.Decode(f.Payload)
		cn.c.log.Warn("msgmesh: the sidecar reported a connection error", "id", f.ID, "code", e.Code, "message", e.Message)
	default:
		cn.c.log.Debug("msgmesh: answer for no outstanding request", "kind", f.Kind, "id", f.ID)
	}
}

// deliver routes one DELIVER to its subscription's queue. A delivery
// nobody can take (no push subscription for its pair, a closing
// subscription, a full queue) is NACKed at once so the sidecar can give it
// to another connection or back to the broker.
func (cn *conn) deliver(f mesh.Frame) {
	var m mesh.Message
	if err := m.Decode(f.Payload); err != nil {
		cn.c.log.Error("msgmesh: undecodable DELIVER; answering ERROR", "id", f.ID, "err", err)
		e := mesh.Error{Code: mesh.CodeBadFrame, Message: err.Error()}
		_ = cn.send(mesh.KindError, mesh.FlagResponse, f.ID, &e)
		return
	}
	d := newDelivery(cn, f.ID, &m)
	e := (*cn.c.routes.Load())[subKey{m.Group, m.Topic}]
	if e.sub == nil || !e.sub.enqueue(d) {
		cn.c.log.Debug("msgmesh: no subscription takes the delivery; nacking", "group", m.Group, "topic", m.Topic)
		_ = d.Nack(context.Background(), 0)
	}
}

// heartbeat sends a HEARTBEAT every interval and fails the connection when
// no frame arrived for three intervals.
func (cn *conn) heartbeat() {
	t := time.NewTicker(cn.c.cfg.heartbeat)
	defer t.Stop()
	seen, idle := cn.frames.Load(), 0
	for {
		select {
		case <-cn.lost:
			return
		case <-t.C:
		}
		if n := cn.frames.Load(); n != seen {
			seen, idle = n, 0
		} else if idle++; idle >= 3 {
			cn.fail(errHeartbeat)
			return
		}
		// Nothing waits for the answer: any frame counts as a sign of life.
		_ = cn.send(mesh.KindHeartbeat, 0, cn.ids.Next(), nil)
	}
}
