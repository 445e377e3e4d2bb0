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
	_ broker.Adopter  = (*Broker)(nil)
)

// token is a delivery's handed-over form.
type token struct {
	Reply       string `json:"reply"`
	ID          string `json:"id"`
	Redelivered int    `json:"redelivered,omitempty"`
	Timestamp   int64  `json:"ts,omitempty"` // Unix nanoseconds; 0 when unknown
}

// ackPrefix starts every JetStream ack subject.
const ackPrefix = "$JS.ACK."

// Token implements broker.Portable.
func (d *delivery) Token() ([]byte, bool) {
	reply := d.m.Reply()
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
	if !strings.HasPrefix(t.Reply, ackPrefix) || strings.ContainsAny(t.Reply, " \t\r\n") {
		return nil, fmt.Errorf("natsbroker: adopt: %w: %q is not a JetStream ack subject", broker.ErrRejected, t.Reply)
	}
	a := &adopted{b: b, t: t}
	if t.Timestamp != 0 {
		a.ts = time.Unix(0, t.Timestamp)
	}
	return a, nil
}

// adopted is a delivery handed over by another process.
type adopted struct {
	b       *Broker
	t       token
	ts      time.Time
	msg     broker.Message
	settled atomic.Bool
}

func (a *adopted) Inherited() {}

// Token implements broker.Portable: an adopted delivery moves on at the
// next upgrade as it came.
func (a *adopted) Token() ([]byte, bool) {
	b, err := json.Marshal(a.t)
	return b, err == nil
}

func (a *adopted) Message() *broker.Message { return &a.msg }
func (a *adopted) MessageID() string        { return a.t.ID }
func (a *adopted) Redelivered() int         { return a.t.Redelivered }
func (a *adopted) Timestamp() time.Time     { return a.ts }

// Ack and Nack publish to the ack subject without waiting for the server,
// as a delivery's own do; a second answer is an error.
func (a *adopted) Ack(ctx context.Context) error { return a.settle(ctx, "ack", []byte("+ACK")) }

func (a *adopted) Nack(ctx context.Context, delay time.Duration) error {
	body := []byte("-NAK")
	if delay > 0 {
		body = fmt.Appendf(nil, "-NAK {\"delay\": %d}", delay.Nanoseconds())
	}
	return a.settle(ctx, "nack", body)
}

func (a *adopted) settle(ctx context.Context, op string, body []byte) error {
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
