package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// newTracerProvider exports every span over OTLP/gRPC to endpoint (a URL:
// http:// is plaintext) with service.name service, in batches of at most
// half a second, so a test sees them quickly.
func newTracerProvider(ctx context.Context, endpoint, service string, log *slog.Logger) (trace.TracerProvider, func(context.Context) error, error) {
	otel.SetErrorHandler(&exportErrors{log: log})
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(endpoint))
	if err != nil {
		return nil, nil, fmt.Errorf("OTLP exporter for %q: %w", endpoint, err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", service))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(500*time.Millisecond)),
	)
	return tp, tp.Shutdown, nil
}

// exportErrors logs OpenTelemetry's errors (a collector that went away)
// at most once a minute instead of once per batch.
type exportErrors struct {
	log  *slog.Logger
	mu   sync.Mutex
	last time.Time
	n    int
}

func (h *exportErrors) Handle(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	if time.Since(h.last) < time.Minute {
		return
	}
	h.log.Warn("exporting spans failed", "err", err, "errors_since_last_report", h.n)
	h.last, h.n = time.Now(), 0
}
