package observe

import (
	"context"
	"strconv"
	"strings"

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

// StartPublish starts the span "send <topic>" (PRODUCER) of a publish on
// its way from the app to the broker, as a child of the span context in
// ctx. End it when the broker answered. TracePublish does the header work
// too.
func (t *Telemetry) StartPublish(ctx context.Context, topic string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, noSpan
	}
	ep := t.endpoint(topic)
	return msgtrace.Start(ctx, t.Tracer, msgtrace.Span{Op: msgtrace.OpSend, System: ep.System, Topic: topic, BodySize: -1, Attrs: serverAttrs(ep, nil)})
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
	ep := t.endpoint(m.Topic)
	attrs := serverAttrs(ep, []attribute.KeyValue{msgtrace.KeyCluster.String(cluster)})
	attrs = keyAttrs(ep.System, m.Key, attrs)
	ctx, span := msgtrace.Start(ctx, t.Tracer, msgtrace.Span{Op: msgtrace.OpSend, System: ep.System, Topic: m.Topic,
		BodySize: len(m.Body), Attrs: attrs})
	msgtrace.Inject(ctx, &m.Headers)
	return ctx, span
}

// EndPublish ends a publish span (TracePublish), recording where the broker
// stored the message when it did: the partition or queue
// (messaging.destination.partition.id) and the offset
// (messaging.kafka.offset on Kafka; msgmesh.offset, the queue offset or
// stream sequence, on the others).
func (t *Telemetry) EndPublish(span trace.Span, topic string, res broker.PublishResult, err error) {
	if err == nil && span.IsRecording() {
		span.SetAttributes(positionAttrs(t.endpoint(topic).System, res.Partition, res.Offset, nil)...)
	}
	End(span, err)
}

// serverAttrs appends server.address and server.port of ep to attrs.
func serverAttrs(ep broker.Endpoint, attrs []attribute.KeyValue) []attribute.KeyValue {
	if ep.Address != "" {
		attrs = append(attrs, msgtrace.KeyServerAddress.String(ep.Address))
	}
	if ep.Port > 0 {
		attrs = append(attrs, msgtrace.KeyServerPort.Int(ep.Port))
	}
	return attrs
}

// keyAttrs appends the message key as system's conventions name it: Kafka's
// key, RocketMQ's keys (the key is a space-separated list there). NATS has
// no key of its own.
func keyAttrs(system, key string, attrs []attribute.KeyValue) []attribute.KeyValue {
	if key == "" {
		return attrs
	}
	switch system {
	case "kafka":
		attrs = append(attrs, msgtrace.KeyKafkaKey.String(key))
	case "rocketmq":
		attrs = append(attrs, msgtrace.KeyRocketMQKeys.StringSlice(strings.Fields(key)))
	}
	return attrs
}

// positionAttrs appends a message's partition (when it has one, >= 0) and
// offset, named for system.
func positionAttrs(system string, partition int32, offset int64, attrs []attribute.KeyValue) []attribute.KeyValue {
	if partition >= 0 {
		attrs = append(attrs, msgtrace.KeyPartition.String(strconv.Itoa(int(partition))))
	}
	if system == "kafka" {
		return append(attrs, msgtrace.KeyKafkaOffset.Int64(offset))
	}
	return append(attrs, msgtrace.KeyOffset.Int64(offset))
}

// StartDeliver starts the span "deliver <topic>" (CONSUMER) of a delivery
// from the broker to the app, as a child of the span context in ctx (put
// there with Extract from the message's headers). End it when the app
// answered. Deliver does all of this for a broker.Delivery.
func (t *Telemetry) StartDeliver(ctx context.Context, topic, group, msgID string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, noSpan
	}
	ep := t.endpoint(topic)
	return msgtrace.Start(ctx, t.Tracer, msgtrace.Span{Op: msgtrace.OpDeliver, System: ep.System, Topic: topic, Group: group, MessageID: msgID, BodySize: -1,
		Attrs: serverAttrs(ep, nil)})
}

// StartForward starts the span "forward <topic>" (PRODUCER) of a delivery
// forwarded to the sibling sidecar sibling, as a child of the span context
// in ctx. Forward does this for a broker.Delivery.
func (t *Telemetry) StartForward(ctx context.Context, topic, group, sibling string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, noSpan
	}
	return msgtrace.Start(ctx, t.Tracer, msgtrace.Span{Op: msgtrace.OpForward, System: t.endpoint(topic).System, Topic: topic, Group: group, BodySize: -1,
		Attrs: []attribute.KeyValue{msgtrace.KeySibling.String(sibling)}})
}

// StartPull starts the span "pull <topic>" (SERVER) of one PULL request.
// End it with EndPull when the request is answered; LinkDelivery links it
// to each delivery put in the answer.
func (t *Telemetry) StartPull(ctx context.Context, group, topic string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, noSpan
	}
	return msgtrace.Start(ctx, t.Tracer, msgtrace.Span{Op: msgtrace.OpPull, System: t.endpoint(topic).System, Topic: topic, Group: group, BodySize: -1})
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
