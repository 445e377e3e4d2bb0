// Package msgtrace carries W3C trace context (traceparent, tracestate)
// inside message headers and names the spans and attributes msgmesh uses
// for messaging, in one place for the SDK (package client) and the sidecar
// (package observe).
//
// It depends on the OpenTelemetry API only (no SDK, no exporter), so an app
// that imports the SDK pulls in no gRPC or Prometheus code through it.
//
// The propagator is always the W3C TraceContext one, whatever the app set
// as its global propagator: the headers are msgmesh's wire contract between
// producer, sidecars, brokers and consumer. Baggage is not carried.
//
// # Spans
//
// Every span has messaging.system and messaging.destination.name = the
// topic; spans about a consumer group add messaging.consumer.group.name,
// spans about one message add messaging.message.id. The sidecar's spans
// name the broker the topic lives on in messaging.system ("kafka", "nats",
// "rocketmq", as the OpenTelemetry conventions name them) with its
// server.address and server.port, and, where the broker has them, the
// message's partition (messaging.destination.partition.id), offset
// (messaging.kafka.offset) and key (messaging.kafka.message.key;
// messaging.rocketmq.message.keys). The SDK's spans (publish, process) say
// "msgmesh": the app talks to the mesh and does not know which broker a
// topic lives on. The operation is given by messaging.operation.name
// and messaging.operation.type (semantic conventions 1.26 and later; the
// older single messaging.operation attribute is not written).
//
//	span name          kind      operation.name  operation.type  started by
//	publish <topic>    PRODUCER  publish         send            the SDK, per Publish/PublishAsync
//	send <topic>       PRODUCER  send            send            the sidecar, app publish → broker ack
//	deliver <topic>    CONSUMER  deliver         process         the sidecar, broker → app ack/nack
//	forward <topic>    PRODUCER  forward         send            the sidecar, to a sibling sidecar
//	pull <topic>       SERVER    pull            receive         the sidecar, one PULL request
//	process <topic>    CONSUMER  process         process         the SDK, per delivery (handler / Ack)
//
// A trace thus reads: publish (app) → send (sidecar) → deliver (sidecar of
// the consumer) → process (app), or publish → send → forward → deliver (on
// the sibling) → process when the consuming sidecar forwards, whatever
// brokers and sidecars sit in between, because each hop extracts its parent
// from the message headers and injects its own span context in their place.
package msgtrace

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// The W3C trace-context header names, as written into messages.
const (
	TraceParent = "traceparent"
	TraceState  = "tracestate"
)

// System is the value of messaging.system on the SDK's spans, and on the
// sidecar's when the broker of a topic is not known.
const System = "msgmesh"

// Attribute keys (OpenTelemetry messaging semantic conventions, plus two of
// msgmesh's own).
const (
	KeySystem        = attribute.Key("messaging.system")
	KeyDestination   = attribute.Key("messaging.destination.name")
	KeyConsumerGroup = attribute.Key("messaging.consumer.group.name")
	KeyMessageID     = attribute.Key("messaging.message.id")
	KeyOperationName = attribute.Key("messaging.operation.name")
	KeyOperationType = attribute.Key("messaging.operation.type")
	KeyBodySize      = attribute.Key("messaging.message.body.size")
	KeyBatchCount    = attribute.Key("messaging.batch.message_count")
	KeyPartition     = attribute.Key("messaging.destination.partition.id")
	KeyKafkaOffset   = attribute.Key("messaging.kafka.offset")
	KeyKafkaKey      = attribute.Key("messaging.kafka.message.key")
	KeyRocketMQKeys  = attribute.Key("messaging.rocketmq.message.keys")
	KeyServerAddress = attribute.Key("server.address")
	KeyServerPort    = attribute.Key("server.port")
	// KeyOffset is a message's place on brokers the conventions name no
	// offset attribute for: RocketMQ's queue offset, JetStream's stream
	// sequence (msgmesh.offset).
	KeyOffset = attribute.Key("msgmesh.offset")
	// KeyRedelivered is how many times the broker delivered the message
	// before (msgmesh.redelivered).
	KeyRedelivered = attribute.Key("msgmesh.redelivered")
	// KeyCluster is the broker cluster a message goes to (msgmesh.cluster).
	KeyCluster = attribute.Key("msgmesh.cluster")
	// KeySibling is the sibling sidecar a delivery is forwarded to
	// (msgmesh.sibling).
	KeySibling = attribute.Key("msgmesh.sibling")
	// KeySettle says how a delivery was settled: "ack" or "nack"
	// (msgmesh.settle).
	KeySettle = attribute.Key("msgmesh.settle")
	// KeyRoutingRule names the routing rule that sent a delivery to a
	// sibling (msgmesh.routing.rule, docs/routing.md); KeyRoutingFallback
	// is true when that rule's targets could not take it and its fallback
	// decided.
	KeyRoutingRule     = attribute.Key("msgmesh.routing.rule")
	KeyRoutingFallback = attribute.Key("msgmesh.routing.fallback")
)

var propagator propagation.TraceContext

// Headers is the type of both header representations msgmesh moves
// messages with: the wire's mesh.HeaderField and the broker adapters'
// broker.Header (the same two strings).
type Headers interface {
	~struct {
		Key   string
		Value string
	}
}

// carrier adapts a header slice to propagation.TextMapCarrier. It is one
// pointer wide, so boxing it in the interface does not allocate.
type carrier[H Headers] struct{ hs *[]H }

type kv = struct {
	Key   string
	Value string
}

func (c carrier[H]) Get(key string) string {
	v, _ := get(*c.hs, key)
	return v
}

// Set replaces the first header named key (case-insensitively) and drops
// any later duplicate, or appends one.
func (c carrier[H]) Set(key, value string) {
	hs := *c.hs
	found := -1
	out := hs[:0]
	for i, h := range hs {
		p := kv(h)
		if strings.EqualFold(p.Key, key) {
			if found >= 0 {
				continue
			}
			found = i
			p.Value = value
			h = H(p)
		}
		out = append(out, h)
	}
	if found < 0 {
		out = append(out, H(kv{Key: key, Value: value}))
	}
	// Zero what was dropped so it does not keep strings alive.
	for i := len(out); i < len(hs); i++ {
		hs[i] = H{}
	}
	*c.hs = out
}

func (c carrier[H]) Keys() []string {
	keys := make([]string, len(*c.hs))
	for i, h := range *c.hs {
		keys[i] = kv(h).Key
	}
	return keys
}

func get[H Headers](hs []H, key string) (string, bool) {
	for _, h := range hs {
		if p := kv(h); p.Key == key || strings.EqualFold(p.Key, key) {
			return p.Value, true
		}
	}
	return "", false
}

// Has reports whether hs carries a traceparent header.
func Has[H Headers](hs []H) bool {
	_, ok := get(hs, TraceParent)
	return ok
}

// Inject writes the span context of ctx into *hs as traceparent (and
// tracestate when it is not empty), replacing headers of those names. It
// writes into *hs in place (appending may reallocate it): copy first when
// the slice belongs to someone else (see InjectCopy). If ctx carries no
// valid span context nothing is written.
func Inject[H Headers](ctx context.Context, hs *[]H) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	propagator.Inject(ctx, carrier[H]{hs})
}

// InjectCopy returns hs with the span context of ctx injected, leaving hs
// itself untouched: it copies hs only when there is something to write.
func InjectCopy[H Headers](ctx context.Context, hs []H) []H {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return hs
	}
	cp := make([]H, len(hs), len(hs)+2)
	copy(cp, hs)
	propagator.Inject(ctx, carrier[H]{&cp})
	return cp
}

// Extract returns ctx with the remote span context found in hs, or ctx
// itself when hs carries none (or a malformed one).
func Extract[H Headers](ctx context.Context, hs []H) context.Context {
	if !Has(hs) {
		return ctx
	}
	h := hs // only this copy escapes, and only when there is something to read
	return propagator.Extract(ctx, carrier[H]{&h})
}

// SpanContext returns the remote span context carried by hs; it is not
// valid when hs carries none.
func SpanContext[H Headers](hs []H) trace.SpanContext {
	if !Has(hs) {
		return trace.SpanContext{}
	}
	h := hs
	return trace.SpanContextFromContext(propagator.Extract(context.Background(), carrier[H]{&h}))
}

// Compile-time checks that both header types satisfy Headers.
var (
	_ = Inject[broker.Header]
	_ = Inject[mesh.HeaderField]
)
