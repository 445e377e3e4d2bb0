package client

import (
	"context"
	"reflect"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/msgmesh/msgmesh/observe/msgtrace"
)

// instrumentationName names the SDK's tracer.
const instrumentationName = "github.com/msgmesh/msgmesh/client"

// bootGlobal is the OpenTelemetry API's own global tracer provider, the one
// otel.GetTracerProvider returns until the app sets its own: it records
// nothing, so while it is in place tracing is off.
var bootGlobal = otel.GetTracerProvider()

// tracing resolves the tracer of each operation. With WithTracerProvider
// the provider is fixed; else it is the app's global one at the time of the
// call, so an app may set it after Dial.
type tracing struct {
	fixed trace.TracerProvider
	cache atomic.Pointer[tracerFor]
}

type tracerFor struct {
	tp trace.TracerProvider
	t  trace.Tracer
}

// tracer returns the tracer to use, or false when tracing is off: no
// provider set, or a noop.TracerProvider. Off costs an atomic load and two
// comparisons.
func (tr *tracing) tracer() (trace.Tracer, bool) {
	tp := tr.fixed
	if tp == nil {
		tp = otel.GetTracerProvider()
		if tp == bootGlobal {
			return nil, false
		}
	}
	if _, ok := tp.(noop.TracerProvider); ok {
		return nil, false
	}
	// Comparing interfaces panics only for equal dynamic types that are not
	// comparable; such providers are never cached.
	if c := tr.cache.Load(); c != nil && c.tp == tp {
		return c.t, true
	}
	t := tp.Tracer(instrumentationName)
	if reflect.TypeOf(tp).Comparable() {
		tr.cache.Store(&tracerFor{tp: tp, t: t})
	}
	return t, true
}

// startPublish starts the "publish <topic>" span of m and returns the
// message to send: a copy of m whose headers carry the span's context, or
// m itself when tracing is off. Off, a valid span context already in ctx
// (from a provider the Client does not know) is still passed on, so the
// trace is not cut; nothing is allocated otherwise.
func (c *Client) startPublish(ctx context.Context, m *Message) (trace.Span, *Message) {
	if m.Colour == "" {
		if colour := ColourFrom(ctx); colour != "" { // inherited (WithColour)
			mm := *m
			mm.Colour = colour
			m = &mm
		}
	}
	tracer, on := c.tracing.tracer()
	if !on {
		if !trace.SpanContextFromContext(ctx).IsValid() {
			return nil, m
		}
		mm := *m
		mm.Headers = msgtrace.InjectCopy(ctx, m.Headers)
		return nil, &mm
	}
	ctx, span := msgtrace.Start(ctx, tracer, msgtrace.Span{Op: msgtrace.OpPublish, Topic: m.Topic, BodySize: len(m.Body)})
	mm := *m
	mm.Headers = msgtrace.InjectCopy(ctx, m.Headers)
	return span, &mm
}

// endPublish ends a publish span with the publish's outcome.
func endPublish(span trace.Span, ack PublishAck, err error) {
	if span == nil {
		return
	}
	if err == nil && ack.MessageID != "" {
		span.SetAttributes(msgtrace.KeyMessageID.String(ack.MessageID))
	}
	msgtrace.End(span, err)
}

// startProcess starts the "process <topic>" span of d, child of the trace
// context in d's headers, under base (the handler's context, or the
// caller's values for a pulled delivery, with links). It returns base and
// nil when tracing is off.
func (c *Client) startProcess(base context.Context, d *Delivery, links []trace.Link) (context.Context, trace.Span) {
	base = withDeliveryColour(base, d) // what the handler publishes inherits it
	tracer, on := c.tracing.tracer()
	if !on {
		return base, nil
	}
	ctx := msgtrace.Extract(base, d.Headers)
	return msgtrace.Start(ctx, tracer, msgtrace.Span{Op: msgtrace.OpProcess, Topic: d.Topic, Group: d.Group,
		MessageID: d.MessageID, BodySize: len(d.Body), Links: links})
}

// endProcess ends d's span, saying how it was settled.
func endProcess(span trace.Span, settle string, err error) {
	if span == nil {
		return
	}
	if settle != "" {
		span.SetAttributes(msgtrace.KeySettle.String(settle))
	}
	msgtrace.End(span, err)
}
