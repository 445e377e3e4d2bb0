package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/codecs/mesh/meshconn"
)

// conn is one connection to the sidecar, on the mesh connection engine
// (meshconn: read loop, request ids and answers, heartbeats, pooled
// writes). It is never reused: a reconnect makes a new conn, so a delivery
// remembers the conn it came on and can tell whether its id still means
// anything.
type conn struct {
	*meshconn.Conn
	c *Client
}

// newConn returns the connection on nc. Closing it (Close) makes it stop
// being current, and fails outstanding requests with ErrConnectionLost
// (ErrClosed when the cause is ErrClosed).
func newConn(c *Client, nc net.Conn) *conn {
	cn := &conn{c: c}
	cn.Conn = meshconn.New(nc, cn, meshconn.Config{
		MaxFrameSize: c.cfg.maxFrameSize,
		Heartbeat:    c.cfg.heartbeat,
		OnClose:      func(error) { c.detach(cn) },
		Lost:         lostErr,
		OnTooLarge: func(f mesh.Frame, err error) {
			c.log.Error("msgmesh: skipped a request over the frame limit; raise WithMaxFrameSize", "kind", f.Kind, "id", f.ID, "err", err)
		},
	})
	return cn
}

// lostErr is the error for requests and settles on a connection closed
// for cause.
func lostErr(cause error) error {
	switch {
	case errors.Is(cause, ErrClosed):
		return ErrClosed
	case errors.Is(cause, io.EOF):
		cause = errors.New("the sidecar closed the connection")
	case errors.Is(cause, meshconn.ErrSilent):
		cause = errHeartbeat
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, cause)
}

// HandleRequest handles a request from the sidecar: a DELIVER; any other kind
// (including answer kinds sent without RESPONSE, protocol §4) is refused.
func (cn *conn) HandleRequest(f mesh.Frame) {
	if f.Kind == mesh.KindDeliver {
		cn.deliver(f)
		return
	}
	_ = cn.Error(f.ID, mesh.CodeUnsupported, "the client does not accept "+f.Kind.String()+" requests")
}

// HandleAnswer handles an answer for no outstanding request: see unmatched. One
// over WithMaxFrameSize, whose payload was skipped, is only logged.
func (cn *conn) HandleAnswer(f mesh.Frame, err error) {
	if err != nil {
		cn.c.log.Warn("msgmesh: skipped an answer over the frame limit", "kind", f.Kind, "id", f.ID, "err",
			fmt.Errorf("client: the sidecar's %s answer does not fit WithMaxFrameSize: %w", f.Kind, err))
		return
	}
	cn.unmatched(f)
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
		_ = cn.Error(f.ID, mesh.CodeBadFrame, err.Error())
		return
	}
	d := newDelivery(cn, f.ID, &m)
	e := (*cn.c.routes.Load())[subKey{m.Group, m.Topic}]
	if e.sub == nil || !e.sub.enqueue(d) {
		cn.c.log.Debug("msgmesh: no subscription takes the delivery; nacking", "group", m.Group, "topic", m.Topic)
		_ = d.Nack(context.Background(), 0)
	}
}
