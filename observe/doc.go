// Package observe is the sidecar's OpenTelemetry setup (docs/design.md flow 11;
// docs/observability.md): traces of every publish, delivery, forward and
// pull, with the W3C trace context carried in message headers so that one
// trace runs from the producing app through the sidecars and brokers to the
// consuming app; and metrics served in the Prometheus format on GET
// /metrics.
//
// New builds it from a Config. Tracing is off unless spans are exported
// (Config.OTLPEndpoint): the tracer is then a no-op and every span helper
// returns at once without allocating, while the trace context that apps
// put in their messages still passes through untouched. Metrics are always
// on; they are read by a Prometheus exporter on a registry of the
// Telemetry's own, never the global one, and nothing here has init side
// effects or sets the global OpenTelemetry providers.
//
// The sidecar reaches it through two stages of its pipeline (package
// pipeline): MetricsStage, outermost, counts every publish's outcome and
// observes every delivery (Telemetry.Deliver, which records its metrics
// and span until it is acked or nacked); TracingStage, just outside flow
// control, traces every publish (Telemetry.TracePublish / EndPublish).
// Besides those:
//
//   - forward: Telemetry.Forward on the delivery handed to the forwarder;
//   - pull: Telemetry.StartPull / EndPull around a PULL request;
//   - /metrics: Telemetry.MetricsHandler, which also serves what other
//     parts of the program register on Telemetry.Registerer (the RPC
//     proxy's exchange counters).
//
// The span names, kinds and attributes are in package msgtrace, which is
// shared with the SDK and depends on the OpenTelemetry API only.
package observe
