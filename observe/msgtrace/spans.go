package msgtrace

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Operation describes one kind of span: its name prefix, kind and
// messaging.operation.* values (see the package doc's table).
type Operation struct {
	Name string // messaging.operation.name, and the span name's first word
	Type string // messaging.operation.type
	Kind trace.SpanKind
}

// The operations msgmesh traces.
var (
	OpPublish = Operation{Name: "publish", Type: "send", Kind: trace.SpanKindProducer}
	// OpSend is the sidecar's publish to the broker. Its context is what
	// the message carries to consumers, so it is a PRODUCER span.
	OpSend    = Operation{Name: "send", Type: "send", Kind: trace.SpanKindProducer}
	OpDeliver = Operation{Name: "deliver", Type: "process", Kind: trace.SpanKindConsumer}
	OpForward = Operation{Name: "forward", Type: "send", Kind: trace.SpanKindProducer}
	OpPull    = Operation{Name: "pull", Type: "receive", Kind: trace.SpanKindServer}
	OpProcess = Operation{Name: "process", Type: "process", Kind: trace.SpanKindConsumer}
)

// Span describes one span to start. Empty Group and MessageID are left out
// of the attributes; BodySize < 0 too.
type Span struct {
	Op Operation
	// System is messaging.system; "" stands for System ("msgmesh").
	System    string
	Topic     string
	Group     string
	MessageID string
	BodySize  int
	// Extra attributes (cluster, sibling, redelivered count).
	Attrs []attribute.KeyValue
	// Links, for instance to the span that asked for a pulled message.
	Links []trace.Link
}

// Start starts the span s describes under tracer, as a child of the span
// context in ctx (a remote one put there by Extract, or a local span).
func Start(ctx context.Context, tracer trace.Tracer, s Span) (context.Context, trace.Span) {
	attrs := make([]attribute.KeyValue, 0, 7+len(s.Attrs))
	system := s.System
	if system == "" {
		system = System
	}
	attrs = append(attrs,
		KeySystem.String(system),
		KeyDestination.String(s.Topic),
		KeyOperationName.String(s.Op.Name),
		KeyOperationType.String(s.Op.Type),
	)
	if s.Group != "" {
		attrs = append(attrs, KeyConsumerGroup.String(s.Group))
	}
	if s.MessageID != "" {
		attrs = append(attrs, KeyMessageID.String(s.MessageID))
	}
	if s.BodySize >= 0 {
		attrs = append(attrs, KeyBodySize.Int(s.BodySize))
	}
	attrs = append(attrs, s.Attrs...)
	opts := []trace.SpanStartOption{trace.WithSpanKind(s.Op.Kind), trace.WithAttributes(attrs...)}
	if len(s.Links) > 0 {
		opts = append(opts, trace.WithLinks(s.Links...))
	}
	return tracer.Start(ctx, s.Op.Name+" "+s.Topic, opts...)
}

// End ends span, recording err (if any) as the span's error status.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
