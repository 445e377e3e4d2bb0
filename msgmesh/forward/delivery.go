package forward

import (
	"context"
	"sync"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// sibDelivery is the broker.Delivery the receiving side builds for each
// DELIVER: the message as the forwarder sent it, and Ack/Nack that send
// ACK/NACK back on the forwarder's connection.
type sibDelivery struct {
	c           *serverConn
	id          uint64
	group       string
	topic       string
	msg         broker.Message
	messageID   string
	redelivered int
	ts          time.Time

	// mu guards the answer state; the OK frame is written under it.
	mu       sync.Mutex
	accepted bool   // OK was sent
	settled  bool   // Ack or Nack was called (or the delivery was refused)
	final    *final // an answer given before OK went out, sent right after it
}

type final struct {
	ack   bool
	delay time.Duration
}

var _ broker.Delivery = (*sibDelivery)(nil)

func newSibDelivery(c *serverConn, m *mesh.Message) *sibDelivery {
	d := &sibDelivery{
		c:           c,
		id:          m.DeliveryID,
		group:       m.Group,
		topic:       m.Topic,
		msg:         broker.Message{Topic: m.Topic, Key: m.Key, Body: m.Body, NullBody: m.Flags.NullBody(), EmptyKey: m.Flags.EmptyKey()},
		messageID:   m.MessageID,
		redelivered: int(m.Redelivered),
	}
	if m.Timestamp != 0 {
		d.ts = time.Unix(0, m.Timestamp)
	}
	if len(m.Headers) > 0 {
		d.msg.Headers = make([]broker.Header, len(m.Headers))
		for i, h := range m.Headers {
			d.msg.Headers[i] = broker.Header{Key: h.Key, Value: h.Value}
		}
	}
	return d
}

func (d *sibDelivery) Message() *broker.Message { return &d.msg }
func (d *sibDelivery) MessageID() string        { return d.messageID }
func (d *sibDelivery) Redelivered() int         { return d.redelivered }
func (d *sibDelivery) Timestamp() time.Time     { return d.ts }

// Ack sends ACK to the forwarder, which then acks at the broker. It does not
// wait for the forwarder; it fails with ErrConnLost if the connection is
// gone (the forwarder has then handed the message back to its broker) and
// with ErrSettled on a second answer.
func (d *sibDelivery) Ack(ctx context.Context) error { return d.settle(final{ack: true}) }

// Nack sends NACK with delay (millisecond resolution) to the forwarder,
// which nacks at the broker with that delay.
func (d *sibDelivery) Nack(ctx context.Context, delay time.Duration) error {
	return d.settle(final{delay: max(delay, 0)})
}

func (d *sibDelivery) settle(a final) error {
	d.mu.Lock()
	if d.settled {
		d.mu.Unlock()
		return ErrSettled
	}
	d.settled = true
	if !d.accepted {
		// The app answered before take sent OK; take sends this answer
		// right after OK.
		d.final = &a
		d.mu.Unlock()
		return nil
	}
	d.mu.Unlock()
	return d.c.answer(d, a)
}
