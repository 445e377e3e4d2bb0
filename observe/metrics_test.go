package observe_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/observe"
)

// reasoned is an error that says why a publish was refused, as flowctl's
// errors do.
type reasoned string

func (r reasoned) Error() string  { return "refused: " + string(r) }
func (r reasoned) Reason() string { return string(r) }

func TestMetricsInPrometheusText(t *testing.T) {
	tel := newTelemetry(t, observe.Config{ServiceName: "sidecar-a"})
	m := tel.Metrics
	ctx := context.Background()

	m.Published(ctx, "orders", 100, 3*time.Millisecond, nil)
	m.Published(ctx, "orders", 50, 20*time.Millisecond, nil)
	m.Published(ctx, "orders", 70, time.Second, fmt.Errorf("publish: %w", broker.ErrUnavailable))
	m.Published(ctx, "orders", 70, 0, fmt.Errorf("flow control: %w", reasoned("rate_limited")))
	m.Rejected(ctx, "", "not_registered")
	m.Delivered(ctx, "orders", "billing", 10)
	m.Delivered(ctx, "orders", "billing", 30)
	m.Delivered(ctx, "orders", "audit", 5)
	m.Acked(ctx, "orders", "billing")
	m.Nacked(ctx, "orders", "billing")
	m.TimedOut(ctx, "orders", "audit")
	m.Redelivered(ctx, "orders", "billing")
	m.DeliveryLatency(ctx, "orders", "billing", 400*time.Microsecond)
	m.InflightAdd("orders", "billing", 3)
	m.InflightAdd("orders", "billing", -1)
	m.Forwarded(ctx, "orders", "billing", "ack")
	m.Pushed(ctx, "orders", "billing", "retry_after")
	m.Pushed(ctx, "orders", "billing", "ack")
	m.BrokerError(ctx, "main")
	m.BrokerError(ctx, "main")
	m.ConnectedApps(4)
	m.ConnectedApps(2)

	wantLines(t, scrape(t, tel),
		`msgmesh_messages_in_total{topic="orders"} 2`,
		`msgmesh_in_bytes_total{topic="orders"} 150`,
		`msgmesh_publish_duration_seconds_count{topic="orders"} 2`,
		`msgmesh_publish_duration_seconds_sum{topic="orders"} 0.023`,
		`msgmesh_publish_duration_seconds_bucket{topic="orders",le="0.0025"} 0`,
		`msgmesh_publish_duration_seconds_bucket{topic="orders",le="0.005"} 1`,
		`msgmesh_publish_duration_seconds_bucket{topic="orders",le="0.025"} 2`,
		`msgmesh_publish_duration_seconds_bucket{topic="orders",le="+Inf"} 2`,
		`msgmesh_publish_errors_total{topic="orders"} 1`,
		`msgmesh_rejected_total{reason="rate_limited",topic="orders"} 1`,
		`msgmesh_rejected_total{reason="not_registered",topic=""} 1`,
		`msgmesh_messages_out_total{group="billing",topic="orders"} 2`,
		`msgmesh_messages_out_total{group="audit",topic="orders"} 1`,
		`msgmesh_out_bytes_total{group="billing",topic="orders"} 40`,
		`msgmesh_deliveries_settled_total{group="billing",outcome="ack",topic="orders"} 1`,
		`msgmesh_deliveries_settled_total{group="billing",outcome="nack",topic="orders"} 1`,
		`msgmesh_deliveries_settled_total{group="audit",outcome="timeout",topic="orders"} 1`,
		`msgmesh_redelivered_total{group="billing",topic="orders"} 1`,
		`msgmesh_delivery_duration_seconds_bucket{group="billing",topic="orders",le="0.00025"} 0`,
		`msgmesh_delivery_duration_seconds_bucket{group="billing",topic="orders",le="0.0005"} 1`,
		`msgmesh_deliveries_inflight{group="billing",topic="orders"} 2`,
		`msgmesh_forwarded_total{group="billing",outcome="ack",topic="orders"} 1`,
		`msgmesh_pushed_total{group="billing",outcome="ack",topic="orders"} 1`,
		`msgmesh_pushed_total{group="billing",outcome="retry_after",topic="orders"} 1`,
		`msgmesh_broker_errors_total{cluster="main"} 2`,
		`msgmesh_apps_connected 2`,
		`target_info{service_name="sidecar-a",telemetry_sdk_language="go",telemetry_sdk_name="opentelemetry",telemetry_sdk_version="1.47.0"} 1`,
	)
}

func TestCardinalityCap(t *testing.T) {
	tel := newTelemetry(t, observe.Config{MaxSeries: 3})
	m := tel.Metrics
	ctx := context.Background()
	for i := range 10 {
		topic := fmt.Sprintf("topic-%d", i)
		m.Published(ctx, topic, 1, time.Millisecond, nil)
		m.Rejected(ctx, topic, "rate_limited")
	}
	m.Rejected(ctx, "topic-9", "message_too_big") // folded, reason kept
	// Free input as a reason (a caller bug) is bounded too: past 64 folded
	// sets everything folds.
	for i := range 200 {
		m.Rejected(ctx, fmt.Sprintf("x-%d", i), fmt.Sprintf("reason-%d", i))
	}
	got := scrape(t, tel)
	wantLines(t, got,
		`msgmesh_messages_in_total{topic="topic-0"} 1`,
		`msgmesh_messages_in_total{topic="topic-1"} 1`,
		`msgmesh_messages_in_total{topic="topic-2"} 1`,
		`msgmesh_messages_in_total{topic="other"} 7`,
		`msgmesh_in_bytes_total{topic="other"} 7`,
		`msgmesh_publish_duration_seconds_count{topic="other"} 7`,
		`msgmesh_rejected_total{reason="rate_limited",topic="topic-2"} 1`,
		`msgmesh_rejected_total{reason="rate_limited",topic="other"} 7`,
		`msgmesh_rejected_total{reason="message_too_big",topic="other"} 1`,
	)
	if n := countPrefix(got, "msgmesh_messages_in_total{"); n != 4 {
		t.Errorf("%d series of msgmesh_messages_in_total, want 3 + other", n)
	}
	if n := countPrefix(got, "msgmesh_rejected_total{"); n > 3+64+1 {
		t.Errorf("%d series of msgmesh_rejected_total, want at most %d", n, 3+64+1)
	}
	if !got[`msgmesh_rejected_total{reason="other",topic="other"}`+fmt.Sprintf(" %d", 200-62)] {
		t.Errorf("fully folded series missing or wrong")
		for l := range got {
			t.Log(l)
		}
	}
}

// TestNewMetricsManualReader uses NewMetrics on a meter of the caller's
// (read with the SDK's ManualReader), with a cap of 2.
func TestNewMetricsManualReader(t *testing.T) {
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	defer mp.Shutdown(context.Background())
	m, err := observe.NewMetrics(mp.Meter("test"), observe.WithMaxSeries(2))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"a", "b", "c", "d"} {
		m.InflightAdd("t", g, 5)
	}
	m.InflightAdd("t", "a", -2)
	var rm metricdata.ResourceMetrics
	if err := rd.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != "msgmesh.deliveries.inflight" {
				continue
			}
			for _, dp := range mt.Data.(metricdata.Sum[int64]).DataPoints {
				g, _ := dp.Attributes.Value(attribute.Key("group"))
				got[g.AsString()] = dp.Value
			}
		}
	}
	want := map[string]int64{"a": 3, "b": 5, "other": 10}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("inflight by group = %v, want %v", got, want)
	}
	if _, err := observe.NewMetrics(mp.Meter("x"), observe.WithMaxSeries(0)); err == nil {
		t.Fatal("WithMaxSeries(0) accepted")
	}
}

func TestNilMetricsAndConfigErrors(t *testing.T) {
	var m *observe.Metrics
	ctx := context.Background()
	m.Published(ctx, "t", 1, 0, nil)
	m.Delivered(ctx, "t", "g", 1)
	m.Acked(ctx, "t", "g")
	m.InflightAdd("t", "g", 1)
	m.Forwarded(ctx, "t", "g", "ack")
	m.BrokerError(ctx, "c")
	m.ConnectedApps(1)
	var tel *observe.Telemetry
	if tel.Deliver(nil, "g") != nil || tel.Tracing() || tel.Shutdown(ctx) != nil {
		t.Fatal("nil Telemetry is not inert")
	}
	if _, err := observe.New(ctx, observe.Config{SampleRatio: 1.5}); err == nil {
		t.Fatal("SampleRatio 1.5 accepted")
	}
}

// TestOTLPConfigured checks that an OTLP endpoint turns tracing on with a
// real exporter; nothing listens there, and Shutdown still returns within
// its context.
func TestOTLPConfigured(t *testing.T) {
	tel, err := observe.New(testCtx(t), observe.Config{OTLPEndpoint: "http://127.0.0.1:1", SampleRatio: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if !tel.Tracing() {
		t.Fatal("tracing off with an OTLP endpoint")
	}
	_, span := tel.StartPublish(context.Background(), "t")
	observe.End(span, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err1 := tel.Shutdown(ctx) // may fail: nothing listens
	if err2 := tel.Shutdown(ctx); err2 != err1 {
		t.Fatalf("second Shutdown = %v, first %v", err2, err1)
	}
}

// TestKnownSeriesStartAtZero: Known creates the series of a consumed
// (topic, group) at zero, and what is recorded afterwards counts from
// there, on the counters kept by the sidecar (messages and bytes out, in
// flight, settled) as on the others.
func TestKnownSeriesStartAtZero(t *testing.T) {
	tel := newTelemetry(t, observe.Config{})
	m := tel.Metrics
	ctx := context.Background()
	m.Known(nil, [][2]string{{"orders", "billing"}, {"orders", "audit"}}, nil)
	m.Known(nil, [][2]string{{"orders", "billing"}}, nil) // again: changes nothing
	m.Delivered(ctx, "orders", "billing", 10)
	m.InflightAdd("orders", "billing", 1)
	m.Acked(ctx, "orders", "billing")
	m.InflightAdd("orders", "billing", -1)
	wantLines(t, scrape(t, tel),
		`msgmesh_messages_out_total{group="billing",topic="orders"} 1`,
		`msgmesh_out_bytes_total{group="billing",topic="orders"} 10`,
		`msgmesh_deliveries_inflight{group="billing",topic="orders"} 0`,
		`msgmesh_deliveries_settled_total{group="billing",outcome="ack",topic="orders"} 1`,
		`msgmesh_deliveries_settled_total{group="billing",outcome="nack",topic="orders"} 0`,
		`msgmesh_messages_out_total{group="audit",topic="orders"} 0`,
		`msgmesh_out_bytes_total{group="audit",topic="orders"} 0`,
		`msgmesh_deliveries_inflight{group="audit",topic="orders"} 0`,
		`msgmesh_redelivered_total{group="audit",topic="orders"} 0`,
		`msgmesh_deliveries_settled_total{group="audit",outcome="timeout",topic="orders"} 0`,
		`msgmesh_deliveries_settled_total{group="audit",outcome="dead_letter",topic="orders"} 0`,
	)
}
