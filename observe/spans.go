package observe

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/observe/msgtrace"
)

// noSpan is what the span helpers return when tracing is off: the API's
// no-op span, whose methods do nothing.
var noSpan = trace.SpanFromContext(context.Background())

// Inject writes the span context of ctx into *hs as W3C traceparent and
// tracestate headers, replacing any of those names; nothing when ctx
// carries no valid span context. It changes *hs in place (see
// msgtrace.InjectCopy for a copying variant).
func Inject(ctx context.Context, hs *[]broker.Header) { msgtrace.Inject(ctx, hs) }

// Extract returns ctx with the remote span context carried by hs, or ctx
// itself when hs carries none.
func Extract(ctx context.Context, hs []broker.Header) context.Context {
	return msgtrace.Extract(ctx, hs)
}

// InjectMesh is Inject for wire headers.
func InjectMesh(ctx context.Context, hs *[]mesh.HeaderField) { msgtrace.Inject(ctx, hs) }

// ExtractMesh is Extract for wire headers.
func ExtractMesh(ctx context.Context, hs []mesh.HeaderField) context.Context {
	return msgtrace.Extract(ctx, hs)
}

// End ends span, recording err as its error status when err is not nil.
// With tracing off it does nothing and allocates nothing.
func End(span trace.Span, err error) {
	if !span.IsRecording() {
		span.End()
		return
	}
	msgtrace.End(span, err)
}

// The span helpers below start the sidecar's spans (names, kinds and
// attributes: package msgtrace). When tracing is off they return ctx and a
// no-op span at once, allocating nothing; End the span either way.

// StartPublish starts the span "send <topic>" (CLIENT) of a publish on its
// way from the app to the broker, as a child of the span context in ctx.
// End it when the broker answered. TracePublish does the header work too.
func (t *Telemetry) StartPublish(ctx context.Context, topic string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, noSpan
	}
	return msgtrace.Start(ctx, t.Tracer, msgtrace.Span{Op: msgtrace.OpSend, Topic: topic, BodySize: -1})
}

// TracePublish starts the publish span of m (see StartPublish) as a child
// of the trace context in m's headers (the app's "publish" span), and
// writes the new span's context into m.Headers in its place, so consumers
// join the trace. m.Headers is changed in place: m must be the sidecar's
// own copy. cluster names the broker cluster (attribute msgmesh.cluster).
func (t *Telemetry) TracePublish(ctx context.Context, m *broker.Message, cluster string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, noSpan
	}
	ctx = msgtrace.Extract(ctx, m.Headers)
	ctx, span := msgtrace.Start(ctx, t.Tracer, msgtrace.Span{Op: msgtrace.OpSend, Topic: m.Topic,
		BodySize: len(m.Body), Attrs: []attribute.KeyValue{msgtrace.KeyCluster.String(cluster)}})
	msgtrace.Inject(ctx, &m.Headers)
	return ctx, span
}

// StartDeliver starts the span "deliver <topic>" (CONSUMER) of a delivery
// from the broker to the app, as a child of the span context in ctx (put
// there with Extract from the message's headers). End it when the app
// answered. Deliver does all of this for a broker.Delivery.
func (t *Telemetry) StartDeliver(ctx context.Context, topic, group, msgID string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, noSpan
	}
	return msgtrace.Start(ctx, t.Tracer, msgtrace.Span{Op: msgtrace.OpDeliver, Topic: topic, Group: group, MessageID: msgID, BodySize: -1})
}

// StartForward starts the span "forward <topic>" (PRODUCER) of a delivery
// forwarded to the sibling sidecar sibling, as a child of the span context
// in ctx. Forward does this for a broker.Delivery.
func (t *Telemetry) StartForward(ctx context.Context, topic, group, sibling string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, noSpan
	}
	return msgtrace.Start(ctx, t.Tracer, msgtrace.Span{Op: msgtrace.OpForward, Topic: topic, Group: group, BodySize: -1,
		Attrs: []attribute.KeyValue{msgtrace.KeySibling.String(sibling)}})
}

// StartPull starts the span "pull <topic>" (SERVER) of one PULL request.
// End it with EndPull when the request is answered; LinkDelivery links it
// to each delivery put in the answer.
func (t *Telemetry) StartPull(ctx context.Context, group, topic string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, noSpan
	}
	return msgtrace.Start(ctx, t.Tracer, msgtrace.Span{Op: msgtrace.OpPull, Topic: topic, Group: group, BodySize: -1})
}

// EndPull ends a pull span, recording how many messages the answer held.
func EndPull(span trace.Span, n int, err error) {
	if span.IsRecording() {
		span.SetAttributes(msgtrace.KeyBatchCount.Int(n))
	}
	End(span, err)
}

// LinkDelivery links span (a pull span) to the trace of d: d's deliver
// span when d came from Telemetry.Deliver, else the trace context in its
// headers.
func LinkDelivery(span trace.Span, d broker.Delivery) {
	if !span.IsRecording() {
		return
	}
	if sc := spanContextOf(d); sc.IsValid() {
		span.AddLink(trace.Link{SpanContext: sc})
	}
}
