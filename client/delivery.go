package client

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/observe/msgtrace"
)

// Message is what an app publishes, and the message part of a Delivery.
type Message struct {
	Topic   string
	Key     string // partitioning / ordering key; may be empty
	Headers []mesh.HeaderField
	Body    []byte
	// Tag is the message's tag (RocketMQ's TAGS), which consumer groups
	// can filter on (a binding's tags); "" for none. It travels as the
	// header HeaderTag: Publish adds it, and a Delivery has it here, not
	// in Headers.
	Tag string
	// Colour is the message's colour (docs/routing.md), which operators'
	// routing rules send to the instances whose labels they select; ""
	// for none. It travels as the header HeaderColour: Publish adds it
	// (from the ctx, WithColour, when it is empty), and a Delivery has it
	// here, not in Headers.
	Colour string
	// NullBody: the body is null, not empty: a Kafka tombstone (Body is
	// empty). Only Kafka stores one: publishing it to a NATS or RocketMQ
	// topic is refused with INVALID.
	NullBody bool
	// EmptyKey: the message has a key, and it is "" (Kafka and NATS tell
	// an empty key from none). Without it an empty Key means no key.
	// RocketMQ has no empty key: INVALID there.
	EmptyKey bool
}

// HeaderTag is the header a message's tag travels in (Message.Tag).
const HeaderTag = "Msgmesh-Tag"

// Delivery is one message delivered to the app, pushed to a Handler or
// returned by Pull. Settle it exactly once with Ack or Nack; the sidecar
// redelivers a delivery left unsettled past its timeout, and one whose
// connection dropped.
type Delivery struct {
	Message
	Group       string
	DeliveryID  uint64    // the sidecar's id for this delivery, valid on its connection only
	MessageID   string    // the broker's id, stable across redeliveries
	Redelivered int       // how many times the broker delivered it before
	Timestamp   time.Time // broker timestamp; zero when unknown

	cn      *conn
	settled atomic.Bool
	nack    mesh.Nack

	// ctx carries the delivery's "process" span (nil: not traced); for a
	// pulled delivery the span ends on settle (endOnSettle).
	ctx         context.Context
	span        trace.Span
	endOnSettle bool
}

// Context returns the context of the delivery's trace. With tracing on it
// holds the delivery's "process <topic>" span (for a Subscribe handler,
// the same span as the handler's ctx; for a pulled delivery, a span that
// Ack or Nack ends) and, for a pulled delivery, the values of Pull's ctx
// without its cancellation. With tracing off it holds the remote trace
// context the message's headers carry, if any, so work the app starts from
// it (a publish, an outgoing call) stays in the producer's trace. Never
// nil.
func (d *Delivery) Context() context.Context {
	if d.ctx != nil {
		return d.ctx
	}
	return msgtrace.Extract(withDeliveryColour(context.Background(), d), d.Headers)
}

func newDelivery(cn *conn, id uint64, m *mesh.Message) *Delivery {
	d := &Delivery{
		Message:     Message{Topic: m.Topic, Key: m.Key, Headers: m.Headers, Body: m.Body},
		Group:       m.Group,
		DeliveryID:  id,
		MessageID:   m.MessageID,
		Redelivered: int(m.Redelivered),
		cn:          cn,
	}
	if m.Timestamp != 0 {
		d.Timestamp = time.Unix(0, m.Timestamp)
	}
	d.NullBody, d.EmptyKey = m.Flags.NullBody(), m.Flags.EmptyKey()
	for i, h := range d.Headers {
		if strings.EqualFold(h.Key, HeaderTag) {
			d.Tag = h.Value
			d.Headers = append(d.Headers[:i:i], d.Headers[i+1:]...)
			break
		}
	}
	for i, h := range d.Headers {
		if strings.EqualFold(h.Key, HeaderColour) {
			d.Colour = h.Value
			d.Headers = append(d.Headers[:i:i], d.Headers[i+1:]...)
			break
		}
	}
	return d
}

// Ack tells the sidecar the message was processed; it is then acked to the
// broker. The ACK is a fire-and-forget frame: Ack returns once it is
// queued on the connection (Client.Close still writes it). It returns ErrAlreadySettled on a second settle, and
// ErrConnectionLost if the delivery's connection has been lost (the
// message will be redelivered), ErrClosed after Client.Close. ctx is checked before anything is done.
func (d *Delivery) Ack(ctx context.Context) error {
	return d.settle(ctx, mesh.KindAck, nil, 0)
}

// Nack asks for redelivery after delay (rounded up to milliseconds; zero or
// negative: as soon as the broker can). Errors as for Ack.
func (d *Delivery) Nack(ctx context.Context, delay time.Duration) error {
	return d.settle(ctx, mesh.KindNack, &d.nack, delayMillis(delay))
}

func (d *Delivery) settle(ctx context.Context, kind mesh.Kind, payload *mesh.Nack, ms uint32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !d.settled.CompareAndSwap(false, true) {
		return ErrAlreadySettled
	}
	err := d.send(kind, payload, ms)
	if d.span != nil {
		if d.endOnSettle {
			endProcess(d.span, settleName(kind), err)
		} else {
			d.span.SetAttributes(msgtrace.KeySettle.String(settleName(kind)))
		}
	}
	return err
}

func (d *Delivery) send(kind mesh.Kind, payload *mesh.Nack, ms uint32) error {
	if d.cn.Closed() {
		return d.cn.Err()
	}
	// Queued, not written on the handler's goroutine: a subscription's
	// worker settles one delivery after another alone, so each answer
	// took a syscall of its own; queued, answers in a row share them.
	if payload == nil {
		return d.cn.Queue(kind, mesh.FlagResponse, d.DeliveryID, nil)
	}
	payload.DelayMillis = ms
	return d.cn.Queue(kind, mesh.FlagResponse, d.DeliveryID, payload)
}

func settleName(kind mesh.Kind) string {
	if kind == mesh.KindAck {
		return "ack"
	}
	return "nack"
}

func delayMillis(delay time.Duration) uint32 {
	if delay <= 0 {
		return 0
	}
	ms := (delay + time.Millisecond - 1) / time.Millisecond
	return uint32(min(int64(ms), math.MaxUint32))
}

// RetryAfter is an error a Handler returns to have its delivery nacked with
// a redelivery delay. Err, if set, is the cause.
type RetryAfter struct {
	Delay time.Duration
	Err   error
}

func (e *RetryAfter) Error() string {
	msg := "retry after " + e.Delay.String()
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *RetryAfter) Unwrap() error { return e.Err }

// retryDelay is the NACK delay for a handler's error.
func retryDelay(err error) time.Duration {
	var ra *RetryAfter
	if errors.As(err, &ra) {
		return ra.Delay
	}
	return 0
}
