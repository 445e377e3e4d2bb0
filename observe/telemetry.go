package observe

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/msgmesh/msgmesh/broker"
)

// InstrumentationName names the tracer and meter of the sidecar.
const InstrumentationName = "github.com/msgmesh/msgmesh"

// Config configures New. The zero value is valid: no trace export (tracing
// off), metrics on /metrics, service name "msgmesh".
type Config struct {
	// OTLPEndpoint is where spans are exported, over OTLP/gRPC. Either a URL,
	// whose scheme picks the transport security ("http://collector:4317" is
	// plaintext, "https://collector:4317" TLS), or a bare "host:port", which
	// uses TLS. Empty: spans are not exported and tracing is off (a no-op
	// tracer; the trace context apps put in message headers still passes
	// through the sidecar unchanged). The exporter also reads the standard
	// OTEL_EXPORTER_OTLP_* variables (headers, timeout, certificates); the
	// endpoint set here wins.
	OTLPEndpoint string `yaml:"otlp_endpoint" json:"otlp_endpoint"`
	// ServiceName is the service.name resource attribute of spans and of
	// the target_info metric. Zero: "msgmesh".
	ServiceName string `yaml:"service_name" json:"service_name"`
	// SampleRatio is the share of new traces sampled, 0 to 1; spans whose
	// parent (the app's span, from the message headers) was sampled are
	// always sampled and the others never (parent-based). Zero: 1 when
	// exporting. Ignored when not exporting.
	SampleRatio float64 `yaml:"sample_ratio" json:"sample_ratio"`
	// TracerProvider, if set, is used as is instead of building one from
	// OTLPEndpoint and SampleRatio (tests; a sidecar embedded in a program
	// that has its own). Tracing is on unless it is a noop.TracerProvider.
	// Shutdown does not shut it down.
	TracerProvider trace.TracerProvider `yaml:"-" json:"-"`
	// MaxSeries caps the distinct label sets per instrument family
	// (WithMaxSeries). Zero: DefaultMaxSeries.
	MaxSeries int `yaml:"max_series" json:"max_series"`
}

// Telemetry is the sidecar's OpenTelemetry setup: a tracer (no-op unless
// spans are exported), a meter whose readings are served in Prometheus
// format by MetricsHandler from its own registry, and the sidecar's
// instruments. Its methods are safe for concurrent use, and a nil
// *Telemetry is valid: tracing off, no metrics.
type Telemetry struct {
	// Tracer starts the sidecar's spans (a no-op tracer when tracing is off).
	Tracer trace.Tracer
	// Meter is the meter Metrics was created on.
	Meter metric.Meter
	// Metrics are the sidecar's instruments.
	Metrics *Metrics

	tracing  bool
	tp       *sdktrace.TracerProvider // nil unless New built it
	mp       *sdkmetric.MeterProvider
	registry *prometheus.Registry
	handler  http.Handler

	// endpoints resolves a topic to its cluster (SetEndpoints).
	endpoints atomic.Pointer[func(topic string) broker.Endpoint]

	shutdownOnce sync.Once
	shutdownErr  error
}

// New builds the tracer provider (OTLP/gRPC with a batching span processor
// when cfg.OTLPEndpoint is set, else a no-op one), a meter provider whose
// reader is a Prometheus exporter registered on a registry of its own (with
// the Go runtime and process collectors; nothing touches the global
// registry or the global OpenTelemetry providers), and the sidecar's
// instruments. ctx bounds setting up the exporter only. Call Shutdown when
// done.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	if cfg.SampleRatio < 0 || cfg.SampleRatio > 1 {
		return nil, fmt.Errorf("observe: sample_ratio %g: must be between 0 and 1", cfg.SampleRatio)
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "msgmesh"
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", cfg.ServiceName)))
	if err != nil {
		return nil, fmt.Errorf("observe: resource: %w", err)
	}
	t := &Telemetry{registry: prometheus.NewRegistry()}

	switch tp := cfg.TracerProvider; {
	case tp != nil:
		_, isNoop := tp.(noop.TracerProvider)
		t.tracing = !isNoop
		t.Tracer = tp.Tracer(InstrumentationName)
	case cfg.OTLPEndpoint != "":
		opt := otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint)
		if strings.Contains(cfg.OTLPEndpoint, "://") {
			opt = otlptracegrpc.WithEndpointURL(cfg.OTLPEndpoint)
		}
		exp, err := otlptracegrpc.New(ctx, opt)
		if err != nil {
			return nil, fmt.Errorf("observe: OTLP exporter for %q: %w", cfg.OTLPEndpoint, err)
		}
		ratio := cfg.SampleRatio
		if ratio == 0 {
			ratio = 1
		}
		t.tp = sdktrace.NewTracerProvider(
			sdktrace.WithBatcher(exp),
			sdktrace.WithResource(res),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		)
		t.tracing = true
		t.Tracer = t.tp.Tracer(InstrumentationName)
	default:
		t.Tracer = noop.NewTracerProvider().Tracer(InstrumentationName)
	}

	exporter, err := otelprom.New(
		otelprom.WithRegisterer(t.registry),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		otelprom.WithoutScopeInfo(),
	)
	if err != nil {
		t.shutdownTracer(ctx)
		return nil, fmt.Errorf("observe: Prometheus exporter: %w", err)
	}
	if err := errors.Join(
		t.registry.Register(collectors.NewGoCollector()),
		t.registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})),
	); err != nil {
		t.shutdownTracer(ctx)
		return nil, fmt.Errorf("observe: registering runtime collectors: %w", err)
	}
	t.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	t.Meter = t.mp.Meter(InstrumentationName)
	var mopts []MetricsOption
	if cfg.MaxSeries != 0 {
		mopts = append(mopts, WithMaxSeries(cfg.MaxSeries))
	}
	if t.Metrics, err = NewMetrics(t.Meter, mopts...); err != nil {
		_ = t.Shutdown(ctx)
		return nil, err
	}
	// OpenMetrics to a scraper that asks for it (Accept:
	// application/openmetrics-text), the classic text format otherwise.
	t.handler = promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{EnableOpenMetrics: true})
	return t, nil
}

// SetEndpoints tells the sidecar's spans which broker each topic lives on:
// fn returns the Endpoint of the cluster of a topic (zero when unknown),
// whose System and address become messaging.system, server.address and
// server.port. The sidecar sets it when it is created; the last call wins.
func (t *Telemetry) SetEndpoints(fn func(topic string) broker.Endpoint) {
	if t != nil {
		t.endpoints.Store(&fn)
	}
}

// endpoint is the Endpoint of topic's cluster, zero when unknown.
func (t *Telemetry) endpoint(topic string) broker.Endpoint {
	if t == nil {
		return broker.Endpoint{}
	}
	if fn := t.endpoints.Load(); fn != nil {
		return (*fn)(topic)
	}
	return broker.Endpoint{}
}

// Tracing reports whether spans are recorded (false: every span helper
// returns at once and allocates nothing).
func (t *Telemetry) Tracing() bool { return t != nil && t.tracing }

// MetricsHandler serves the metrics in the Prometheus text format (or the
// protobuf format when the scraper asks for it), for GET /metrics. A nil
// *Telemetry serves 404.
func (t *Telemetry) MetricsHandler() http.Handler {
	if t == nil {
		return http.NotFoundHandler()
	}
	return t.handler
}

// Registerer is the Prometheus registry MetricsHandler serves, for
// collectors of other parts of the program. A nil *Telemetry returns a
// registry nothing serves.
func (t *Telemetry) Registerer() prometheus.Registerer {
	if t == nil {
		return prometheus.NewRegistry()
	}
	return t.registry
}

// Shutdown flushes buffered spans to the exporter and stops the providers
// New built, bounded by ctx. It is idempotent; the span helpers keep
// working afterwards (recording nothing that is exported).
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	t.shutdownOnce.Do(func() {
		var errs []error
		if t.tp != nil {
			errs = append(errs, t.tp.Shutdown(ctx))
		}
		if t.mp != nil {
			errs = append(errs, t.mp.Shutdown(ctx))
		}
		if err := errors.Join(errs...); err != nil {
			t.shutdownErr = fmt.Errorf("observe: shutdown: %w", err)
		}
	})
	return t.shutdownErr
}

func (t *Telemetry) shutdownTracer(ctx context.Context) {
	if t.tp != nil {
		_ = t.tp.Shutdown(ctx)
	}
}
