package observe

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/observe/msgtrace"
)

// tracked is a broker.Delivery that Deliver or Forward wrapped: it records
// the delivery's metrics and ends its span when it is settled.
type tracked struct {
	broker.Delivery // the wrapped delivery; settled through

	m            *Metrics
	series       *seriesOpts // m's (topic, group) series, looked up once; nil when m is
	topic, group string
	start        time.Time
	forward      bool // a Forward wrapper: counts msgmesh_forwarded_total

	span   trace.Span     // noSpan when tracing is off
	msg    broker.Message // the message with span's context in its headers (traced only)
	traced bool

	timeout    atomic.Bool // the next Nack is a timeout
	deadLetter atomic.Bool // the next Ack follows a dead-letter publish
	settled    atomic.Bool
}

var _ broker.Delivery = (*tracked)(nil)

// Deliver wraps d, a delivery the sidecar is handing to an app connection
// for group (pushed, or put in a PULL answer; from the broker or from a
// sibling), so that it is observed from here to its settlement. Call it
// where the delivery becomes in flight on the connection, once the
// connection is known to take it:
//
//   - now: msgmesh_messages_out_total and msgmesh_out_bytes_total,
//     msgmesh_redelivered_total if the broker delivered it before, and one
//     more in msgmesh_deliveries_inflight;
//   - with tracing on: a "deliver <topic>" span, child of the trace context
//     in the message's headers; the wrapper's Message() carries the new
//     span's context in its headers instead (a copy: the broker's message
//     is not changed), so the delivery the app gets joins the trace;
//   - on the first Ack or Nack (which it passes on to d): the settle
//     outcome, the delivery latency, one less in flight, and the span
//     ended (with the settle's error, if any). MarkTimeout before Nack
//     records the outcome "timeout" instead of "nack".
//
// Keep and settle the wrapper in d's place, and build the wire message from
// its Message(). A nil *Telemetry returns d as it is.
func (t *Telemetry) Deliver(d broker.Delivery, group string) broker.Delivery {
	if t == nil {
		return d
	}
	msg := d.Message()
	w := &tracked{Delivery: d, m: t.Metrics, topic: msg.Topic, group: group, start: time.Now(), span: noSpan}
	ctx := context.Background()
	if w.m != nil {
		w.series = w.m.byGroup.get(labels{w.topic, group})
		w.series.delivered(len(msg.Body))
		if d.Redelivered() > 0 {
			w.m.redelivered.Add(ctx, 1, w.series.add...)
		}
		w.series.count(countInflight, 1)
	}
	if t.Tracing() {
		pctx := msgtrace.Extract(ctx, msg.Headers)
		ep := t.endpoint(w.topic)
		attrs := keyAttrs(ep.System, msg.Key, serverAttrs(ep, redeliveredAttr(d.Redelivered())))
		if p, o, ok := broker.PositionOf(d); ok {
			attrs = positionAttrs(ep.System, p, o, attrs)
		}
		pctx, w.span = msgtrace.Start(pctx, t.Tracer, msgtrace.Span{
			Op: msgtrace.OpDeliver, System: ep.System, Topic: w.topic, Group: group, MessageID: d.MessageID(), BodySize: len(msg.Body),
			Attrs: attrs,
		})
		w.withHeaders(pctx, msg)
	}
	return w
}

// Forward wraps d for forwarding to the sibling sidecar sibling: with
// tracing on it starts a "forward <topic>" span, child of d's trace context
// (its deliver span if d is a Deliver wrapper, else the context in its
// headers: the producer's send span), and its Message() carries the forward
// span's context. When the
// forwarder settles it (the sibling's app answered, or the forward was
// lost), msgmesh_forwarded_total counts the outcome ("ack" or "nack") and
// the span ends; the settle goes on to d. If the forward fails before the
// sibling took it, call ForwardFailed and deliver d (not the wrapper)
// locally. Call it once per attempt. A nil *Telemetry returns d as it is.
func (t *Telemetry) Forward(d broker.Delivery, group, sibling string) broker.Delivery {
	if t == nil {
		return d
	}
	msg := d.Message()
	w := &tracked{Delivery: d, m: t.Metrics, topic: msg.Topic, group: group, start: time.Now(), forward: true, span: noSpan}
	if t.Tracing() {
		pctx := trace.ContextWithRemoteSpanContext(context.Background(), spanContextOf(d))
		pctx, w.span = t.StartForward(pctx, w.topic, group, sibling)
		w.withHeaders(pctx, msg)
	}
	return w
}

// MarkRouted records on the forward span of fd (a Forward wrapper) that
// routing rule sent it there (docs/routing.md), and whether that was the
// rule's fallback. Other deliveries, and untraced ones, are left alone.
func MarkRouted(fd broker.Delivery, rule string, fallback bool) {
	if w, ok := fd.(*tracked); ok && w.traced {
		w.span.SetAttributes(msgtrace.KeyRoutingRule.String(rule), msgtrace.KeyRoutingFallback.Bool(fallback))
	}
}

// ForwardFailed ends the forward of fd (a Forward wrapper the forwarder did
// not take: Forward returned err) with outcome ("refused", "unavailable",
// ...); it settles nothing. The caller delivers the original delivery
// locally.
func ForwardFailed(fd broker.Delivery, outcome string, err error) {
	w, ok := fd.(*tracked)
	if !ok || !w.settled.CompareAndSwap(false, true) {
		return
	}
	w.m.Forwarded(context.Background(), w.topic, w.group, outcome)
	End(w.span, err)
}

// MarkTimeout makes the next Nack of d (a Deliver wrapper) count as the
// outcome "timeout": call it when the sidecar hands an unanswered delivery
// back. Other deliveries are left alone.
func MarkTimeout(d broker.Delivery) {
	if w, ok := d.(*tracked); ok {
		w.timeout.Store(true)
	}
}

// MarkDeadLetter makes the next Ack of d (a Deliver wrapper) count as the
// outcome "dead_letter": call it when the sidecar acks a message it moved
// to a dead-letter topic. Other deliveries are left alone.
func MarkDeadLetter(d broker.Delivery) {
	if w, ok := d.(*tracked); ok {
		w.deadLetter.Store(true)
	}
}

// Unwrap returns the delivery d wraps, or d itself when it is not a
// wrapper of this package.
func Unwrap(d broker.Delivery) broker.Delivery {
	if w, ok := d.(*tracked); ok {
		return w.Delivery
	}
	return d
}

// Unwrap returns the wrapped delivery (broker.PositionOf looks through it).
func (w *tracked) Unwrap() broker.Delivery { return w.Delivery }

// withHeaders makes Message() return a copy of msg whose headers carry the
// span context of ctx.
func (w *tracked) withHeaders(ctx context.Context, msg *broker.Message) {
	w.msg = *msg
	w.msg.Headers = msgtrace.InjectCopy(ctx, msg.Headers)
	w.traced = true
}

// Message returns the message, with this hop's trace context in its
// headers when traced.
func (w *tracked) Message() *broker.Message {
	if w.traced {
		return &w.msg
	}
	return w.Delivery.Message()
}

// Ack acks the wrapped delivery and records the settlement.
func (w *tracked) Ack(ctx context.Context) error {
	err := w.Delivery.Ack(ctx)
	outcome := OutcomeAck
	if w.deadLetter.Load() {
		outcome = OutcomeDeadLetter
	}
	w.done(outcome, err)
	return err
}

// Nack nacks the wrapped delivery and records the settlement.
func (w *tracked) Nack(ctx context.Context, delay time.Duration) error {
	err := w.Delivery.Nack(ctx, delay)
	outcome := OutcomeNack
	if w.timeout.Load() {
		outcome = OutcomeTimeout
	}
	w.done(outcome, err)
	return err
}

// Detach ends the observation of a delivery handed over to a successor
// process (broker.Detacher): it counts as settled with the outcome
// "handed_over" here; the successor observes its settlement.
func (w *tracked) Detach() { w.done(OutcomeHandedOver, nil) }

func (w *tracked) done(outcome string, err error) {
	if !w.settled.CompareAndSwap(false, true) {
		return
	}
	ctx := context.Background()
	if w.forward {
		w.m.Forwarded(ctx, w.topic, w.group, outcome)
	} else {
		w.m.Settled(ctx, w.topic, w.group, outcome)
		if w.series != nil {
			w.m.deliveryDur.Record(ctx, time.Since(w.start).Seconds(), w.series.rec...)
			w.series.count(countInflight, -1)
		}
	}
	if w.span.IsRecording() {
		w.span.SetAttributes(msgtrace.KeySettle.String(outcome))
	}
	End(w.span, err)
}

// spanContextOf is the trace context d continues: its deliver or forward
// span when it is a traced wrapper, else the one in its headers.
func spanContextOf(d broker.Delivery) trace.SpanContext {
	if w, ok := d.(*tracked); ok && w.traced {
		return w.span.SpanContext()
	}
	return msgtrace.SpanContext(d.Message().Headers)
}

func redeliveredAttr(n int) []attribute.KeyValue {
	if n <= 0 {
		return nil
	}
	return []attribute.KeyValue{msgtrace.KeyRedelivered.Int(n)}
}
