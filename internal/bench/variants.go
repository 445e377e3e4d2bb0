package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/observe"
	"github.com/msgmesh/msgmesh/schema"
)

// benchSchema is the Avro record the schema variant validates against.
const benchSchema = `{"type":"record","name":"Bench","namespace":"msgmesh.bench","fields":[
 {"name":"id","type":"long"},
 {"name":"payload","type":"string"}]}`

// setSchema registers benchSchema for topic in an in-memory registry and
// pushes it to the sidecar with policy enforce; it returns the schema id.
func setSchema(ctx context.Context, sc *msgmesh.Sidecar, topic string) (int, error) {
	reg, err := schema.New(ctx, schema.NewMemoryStore(), schema.RegistryOptions{})
	if err != nil {
		return 0, err
	}
	v, err := reg.Register(ctx, topic, benchSchema)
	if err != nil {
		return 0, err
	}
	ts, err := reg.TopicSchemas(topic)
	if err != nil {
		return 0, err
	}
	sc.SetSchemas(map[string]msgmesh.TopicSchema{topic: {Schemas: ts, Policy: schema.PolicyEnforce}})
	return v.ID, nil
}

// body is, for the schema variant, a Confluent-framed Avro Bench record of
// about size bytes (magic 0, 4-byte schema id, id 42, a string payload);
// else the plain body.
func (s *sidecarPath) body(size int) []byte {
	if s.schemaID == 0 {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte('a' + i%26)
		}
		return b
	}
	n := max(size-5-1-3, 1) // framing, the id, the string's length
	b := []byte{0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(s.schemaID))
	b = binary.AppendVarint(b, 42) // Avro long: zigzag varint
	b = binary.AppendVarint(b, int64(n))
	for i := range n {
		b = append(b, byte('a'+i%26))
	}
	return b
}

// discardExporter takes spans and drops them: the tracing variant pays for
// creating, recording and batching spans, not for a collector.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// newTelemetry builds the telemetry of a variant: nil for the plain
// sidecar, metrics only, or metrics and tracing through a real SDK tracer
// provider with a batch span processor, sampling everything.
func newTelemetry(ctx context.Context, o sidecarOpts) (*observe.Telemetry, func(), error) {
	if !o.tracing && !o.metrics {
		return nil, func() {}, nil
	}
	cfg := observe.Config{ServiceName: "msgmesh-bench"}
	var tp *sdktrace.TracerProvider
	if o.tracing {
		tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
		cfg.TracerProvider = tp
	}
	tel, err := observe.New(ctx, cfg)
	if err != nil {
		if tp != nil {
			_ = tp.Shutdown(ctx)
		}
		return nil, nil, fmt.Errorf("telemetry: %w", err)
	}
	return tel, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
		if tp != nil {
			_ = tp.Shutdown(sctx)
		}
	}, nil
}
