package observe_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/observe"
)

// benchTelemetry returns a Telemetry with tracing off, or on with the real
// SDK: a batching span processor in front of an exporter that discards.
func benchTelemetry(b *testing.B, on bool) *observe.Telemetry {
	cfg := observe.Config{}
	if on {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		cfg.TracerProvider = tp
	}
	return newTelemetry(b, cfg)
}

// BenchmarkStartPublishSpan is the cost of one publish span, started and
// ended, with tracing off and on.
func BenchmarkStartPublishSpan(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			tel := benchTelemetry(b, on)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_, span := tel.StartPublish(ctx, "orders.created")
				observe.End(span, nil)
			}
		})
	}
}

// BenchmarkTracePublish adds the header work of the sidecar's publish
// hook: extract the app's traceparent, start the span, inject its own.
func BenchmarkTracePublish(b *testing.B) {
	app := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	defer app.Shutdown(context.Background())
	actx, aspan := app.Tracer("app").Start(context.Background(), "publish")
	defer aspan.End()
	var hs []broker.Header
	observe.Inject(actx, &hs)
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			tel := benchTelemetry(b, on)
			ctx := context.Background()
			m := &broker.Message{Topic: "orders.created", Headers: make([]broker.Header, 0, 2), Body: make([]byte, 256)}
			b.ReportAllocs()
			for b.Loop() {
				m.Headers = append(m.Headers[:0], hs...)
				_, span := tel.TracePublish(ctx, m, "main")
				observe.End(span, nil)
			}
		})
	}
}

// BenchmarkMetricsPublished is the cost of recording one acknowledged
// publish (messages, bytes, latency histogram), on one goroutine and on
// all of them.
func BenchmarkMetricsPublished(b *testing.B) {
	tel := benchTelemetry(b, false)
	topics := make([]string, 64)
	for i := range topics {
		topics[i] = fmt.Sprintf("topic-%d", i)
	}
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tel.Metrics.Published(ctx, topics[i%len(topics)], 256, 2*time.Millisecond, nil)
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				tel.Metrics.Published(ctx, topics[i%len(topics)], 256, 2*time.Millisecond, nil)
				i++
			}
		})
	})
}

// benchDelivery is a broker delivery that settles without a broker.
type benchDelivery struct{ msg broker.Message }

func (d *benchDelivery) Message() *broker.Message                  { return &d.msg }
func (d *benchDelivery) MessageID() string                         { return "S:1" }
func (d *benchDelivery) Redelivered() int                          { return 0 }
func (d *benchDelivery) Timestamp() time.Time                      { return time.Time{} }
func (d *benchDelivery) Ack(context.Context) error                 { return nil }
func (d *benchDelivery) Nack(context.Context, time.Duration) error { return nil }

// BenchmarkDeliverAck is what observing one delivery costs the sidecar
// with tracing off (as the msgmesh binary runs by default): Deliver
// (messages and bytes out, in flight) and its Ack (settled, latency, in
// flight), over 64 (topic, group) series.
func BenchmarkDeliverAck(b *testing.B) {
	tel := benchTelemetry(b, false)
	ds := make([]*benchDelivery, 64)
	for i := range ds {
		ds[i] = &benchDelivery{msg: broker.Message{Topic: fmt.Sprintf("topic-%d", i), Body: make([]byte, 1024)}}
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := tel.Deliver(ds[i%len(ds)], "g1").Ack(ctx); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
