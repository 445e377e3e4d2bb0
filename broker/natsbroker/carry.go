package natsbroker

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/msgmesh/msgmesh/broker"
)

// Prefetched messages across a hot upgrade (broker.Keeper). A NAK on
// hand-back counts a delivery at the server, so every upgrade would add an
// attempt to the messages it caught prefetched, and the successor would
// show them as redeliveries. Instead the paused consumer keeps them (its
// carry), Kept hands them over whole, with their ack subjects, and the
// successor's consumer of the same durable returns them from Next first,
// as the first deliveries they are, settling them through those subjects
// (JetStream takes an ack from any connection of the account). At most
// Prefetch messages per consumer are carried: the fetcher's window (fetch.go).

// carried is one kept message: its token (ack subject, id, count, time)
// and its content.
type carried struct {
	token
	Subject string      `json:"subject"`
	Header  nats.Header `json:"header,omitempty"`
	Data    []byte      `json:"data,omitempty"`
}

// carriedOf keeps m; false if m has no ack subject to settle it by.
func (c *consumer) carriedOf(m *nats.Msg) (carried, bool) {
	if !strings.HasPrefix(m.Reply, ackPrefix) {
		return carried{}, false
	}
	d := c.newDelivery(m)
	k := carried{token: token{Reply: m.Reply, ID: d.id, Redelivered: d.redelivered},
		Subject: m.Subject, Header: m.Header, Data: m.Data}
	if !d.ts.IsZero() {
		k.Timestamp = d.ts.UnixNano()
	}
	return k, true
}

// delivery is k as a delivery of this process: settled through its ack
// subject, and portable on.
func (k carried) delivery(b *Broker) *remote {
	r := remoteOf(b, k.token, fromNATS(k.Subject, k.Header, k.Data))
	r.carried = &k
	return r
}

// parseCarry reads ConsumerSpec.Carry; one that is not ours is refused.
func parseCarry(b []byte) ([]carried, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var ks []carried
	if err := json.Unmarshal(b, &ks); err != nil {
		return nil, fmt.Errorf("%w: carried messages: %w", broker.ErrRejected, err)
	}
	for _, k := range ks {
		if err := k.check(); err != nil {
			return nil, fmt.Errorf("carried message: %w", err)
		}
	}
	return ks, nil
}

// Keep implements broker.Keeper.
func (c *consumer) Keep() {
	c.mu.Lock()
	c.keep = true
	c.mu.Unlock()
}

// Return implements broker.Keeper: a delivery fetched as the pause began
// goes back to the front of the carry, as the message received before
// everything kept after it.
func (c *consumer) Return(d broker.Delivery) bool {
	var k carried
	switch x := d.(type) {
	case *delivery:
		var ok bool
		if k, ok = c.carriedOf(x.m); !ok {
			return false
		}
	case *remote:
		if x.carried == nil {
			return false // an adopted delivery: an app held it
		}
		k = *x.carried
	default:
		if inner, ok := broker.As[*delivery](d); ok {
			return c.Return(inner)
		}
		if inner, ok := broker.As[*remote](d); ok {
			return c.Return(inner)
		}
		return false
	}
	if !strings.Contains(k.Reply, "."+c.name+".") {
		return false // another durable's: not for this carry
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.keep {
		return false
	}
	c.carry = slices.Insert(c.carry, 0, k)
	return true
}

// Kept implements broker.Keeper: the carry, in order, up to limit bytes
// of JSON; the rest is handed back as Pause would.
func (c *consumer) Kept(ctx context.Context, limit int) ([]byte, error) {
	c.mu.Lock()
	ks := c.carry
	c.carry = nil
	c.mu.Unlock()
	n := len(ks)
	var out []byte
	for ; n > 0; n-- {
		b, err := json.Marshal(ks[:n])
		if err != nil {
			c.nakCarried(ctx, ks)
			return nil, fmt.Errorf("natsbroker: kept messages of %s: %w", c.name, err)
		}
		if len(b) <= limit {
			out = b
			break
		}
		// Over the bound: drop the last eighth (at least one) and measure again.
		n -= max(n/8, 1) - 1
	}
	if n < len(ks) {
		c.log.Info("kept messages over the hand-over bound go back to the server", "count", len(ks)-n, "limit", limit)
		c.nakCarried(ctx, ks[n:])
	}
	return out, nil
}

// nakCarried hands ks back to the server (see handBackDelay); one whose
// nak is lost comes back after AckWait.
func (c *consumer) nakCarried(ctx context.Context, ks []carried) {
	for _, k := range ks {
		if err := k.delivery(c.b).Nack(ctx, handBackDelay); err != nil {
			c.log.Debug("nak of a kept message failed; redelivery after AckWait", "error", err)
		}
	}
}
