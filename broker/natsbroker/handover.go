package natsbroker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// Deliveries move between processes (broker.Portable, broker.Adopter):
// JetStream settles a message by a publish to its ack subject, from any
// connection of the account, so the token is that subject plus what the
// sidecar shows of the delivery.

var (
	_ broker.Portable = (*delivery)(nil)
	_ broker.Portable = (*adopted)(nil) // moves again at the next upgrade
	_ broker.Portable = (*remote)(nil)
	_ broker.Adopter  = (*Broker)(nil)
	_ broker.Keeper   = (*consumer)(nil)
)

// token is a delivery's handed-over form.
type token struct {
	Reply       string `json:"reply"`
	ID          string `json:"id"`
	Redelivered int    `json:"redelivered,omitempty"`
	Timestamp   int64  `json:"ts,omitempty"` // Unix nanoseconds; 0 when unknown
}

// check refuses a token from elsewhere: its reply is no ack subject.
func (t token) check() error {
	if !strings.HasPrefix(t.Reply, ackPrefix) || strings.ContainsAny(t.Reply, " \t\r\n") {
		return fmt.Errorf("%w: %q is not a JetStream ack subject", broker.ErrRejected, t.Reply)
	}
	return nil
}

// ackPrefix starts every JetStream ack subject.
const ackPrefix = "$JS.ACK."

// Token implements broker.Portable.
func (d *delivery) Token() ([]byte, bool) {
	reply := d.m.Reply
	if !strings.HasPrefix(reply, ackPrefix) {
		return nil, false
	}
	t := token{Reply: reply, ID: d.id, Redelivered: d.redelivered}
	if !d.ts.IsZero() {
		t.Timestamp = d.ts.UnixNano()
	}
	b, err := json.Marshal(t)
	return b, err == nil
}

// Adopt implements broker.Adopter.
func (b *Broker) Adopt(tok []byte) (broker.Delivery, error) {
	var t token
	if err := json.Unmarshal(tok, &t); err != nil {
		return nil, fmt.Errorf("natsbroker: adopt: %w: %w", broker.ErrRejected, err)
	}
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("natsbroker: adopt: %w", err)
	}
	return &adopted{remoteOf(b, t, broker.Message{})}, nil
}

// remoteOf makes the delivery of message m that t names, settled from b.
func remoteOf(b *Broker, t token, m broker.Message) *remote {
	r := &remote{b: b, t: t, msg: m}
	if t.Timestamp != 0 {
		r.ts = time.Unix(0, t.Timestamp)
	}
	return r
}

// adopted is a delivery handed over by another process: an app holds it.
type adopted struct{ *remote }

func (a *adopted) Inherited() {}

// remote is a delivery fetched on another connection (or by another
// process), settled by a publish to its ack subject from this one.
type remote struct {
	b       *Broker
	t       token
	ts      time.Time
	msg     broker.Message
	settled atomic.Bool
	carried *carried // the kept message it was made from; nil if adopted
}

// Token implements broker.Portable: the delivery moves on at the next
// upgrade as it came.
func (a *remote) Token() ([]byte, bool) {
	b, err := json.Marshal(a.t)
	return b, err == nil
}

func (a *remote) Message() *broker.Message { return &a.msg }
func (a *remote) MessageID() string        { return a.t.ID }
func (a *remote) Redelivered() int         { return a.t.Redelivered }
func (a *remote) Timestamp() time.Time     { return a.ts }

// Ack and Nack publish to the ack subject without waiting for the server,
// as a delivery's own do; a second answer is an error.
func (a *remote) Ack(ctx context.Context) error { return a.settle(ctx, "ack", []byte("+ACK")) }

func (a *remote) Nack(ctx context.Context, delay time.Duration) error {
	body := []byte("-NAK")
	if delay > 0 {
		body = fmt.Appendf(nil, "-NAK {\"delay\": %d}", delay.Nanoseconds())
	}
	return a.settle(ctx, "nack", body)
}

func (a *remote) settle(ctx context.Context, op string, body []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("natsbroker: %s %s: %w", op, a.t.ID, err)
	}
	if !a.settled.CompareAndSwap(false, true) {
		return fmt.Errorf("natsbroker: %s %s: already answered", op, a.t.ID)
	}
	if a.b.isClosed() {
		return fmt.Errorf("natsbroker: %s %s: %w", op, a.t.ID, broker.ErrClosed)
	}
	if err := a.b.nc.Publish(a.t.Reply, body); err != nil {
		return fmt.Errorf("natsbroker: %s %s: %w", op, a.t.ID, withSentinel(err))
	}
	return nil
}
