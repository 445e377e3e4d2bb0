package observe_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
	"github.com/msgmesh/msgmesh/observe"
	"github.com/msgmesh/msgmesh/observe/msgtrace"
)

// newBroker starts an embedded NATS JetStream server and connects a real
// broker adapter to it.
func newBroker(t *testing.T) *natsbroker.Broker {
	t.Helper()
	e := natstest.Start(t)
	b, err := natsbroker.New(testCtx(t), natsbroker.Config{URL: e.ClientURL(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// consumeOne publishes nothing; it starts group's consumer on topic and
// returns the next delivery.
func consumeOne(t *testing.T, b broker.Broker, topic, group string) broker.Delivery {
	t.Helper()
	ctx := testCtx(t)
	c, err := b.Consume(ctx, broker.ConsumerSpec{Topic: topic, Group: group, AckWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	d, err := c.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// appSpan starts a producer span the way an app's tracer would, on its own
// SDK provider, and returns headers carrying it.
func appSpan(t *testing.T, exp *tracetest.InMemoryExporter) (trace.Span, []broker.Header) {
	t.Helper()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("app").Start(context.Background(), "publish orders", trace.WithSpanKind(trace.SpanKindProducer))
	hs := []broker.Header{{Key: "app-header", Value: "1"}}
	observe.Inject(ctx, &hs)
	return span, hs
}

func spanNamed(t *testing.T, exp *tracetest.InMemoryExporter, name string) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d spans named %q, want 1; have %v", len(found), name, spanNames(exp))
	}
	return found[0]
}

func spanNames(exp *tracetest.InMemoryExporter) []string {
	var ns []string
	for _, s := range exp.GetSpans() {
		ns = append(ns, s.Name)
	}
	return ns
}

func attr(s tracetest.SpanStub, k attribute.Key) (attribute.Value, bool) {
	for _, a := range s.Attributes {
		if a.Key == k {
			return a.Value, true
		}
	}
	return attribute.Value{}, false
}

func wantAttrs(t *testing.T, s tracetest.SpanStub, want map[attribute.Key]string) {
	t.Helper()
	for k, v := range want {
		got, ok := attr(s, k)
		if !ok || got.String() != v {
			t.Errorf("span %q: %s = %q (present %v), want %q", s.Name, k, got.String(), ok, v)
		}
	}
}

func wantChild(t *testing.T, child tracetest.SpanStub, parent trace.SpanContext) {
	t.Helper()
	if child.SpanContext.TraceID() != parent.TraceID() {
		t.Errorf("span %q: trace %s, want the producer's %s", child.Name, child.SpanContext.TraceID(), parent.TraceID())
	}
	if child.Parent.SpanID() != parent.SpanID() {
		t.Errorf("span %q: parent %s, want %s", child.Name, child.Parent.SpanID(), parent.SpanID())
	}
}

func TestSpanAfterExtractJoinsProducerTrace(t *testing.T) {
	tel, exp := traced(t, observe.Config{})
	producer, hs := appSpan(t, exp)
	producer.End()

	ctx := observe.Extract(context.Background(), hs)
	if sc := trace.SpanContextFromContext(ctx); !sc.IsRemote() || sc.SpanID() != producer.SpanContext().SpanID() {
		t.Fatalf("Extract gave %v, want the producer's span context, remote", sc)
	}
	_, span := tel.StartDeliver(ctx, "orders", "g1", "MESH_orders:7")
	observe.End(span, nil)

	s := spanNamed(t, exp, "deliver orders")
	wantChild(t, s, producer.SpanContext())
	if !s.Parent.IsRemote() || s.SpanKind != trace.SpanKindConsumer {
		t.Errorf("deliver span: parent remote %v, kind %v", s.Parent.IsRemote(), s.SpanKind)
	}
	wantAttrs(t, s, map[attribute.Key]string{
		"messaging.system":              "msgmesh",
		"messaging.destination.name":    "orders",
		"messaging.consumer.group.name": "g1",
		"messaging.message.id":          "MESH_orders:7",
		"messaging.operation.name":      "deliver",
		"messaging.operation.type":      "process",
	})
}

// TestTraceAcrossBroker follows one message through a real JetStream
// broker: app publish → sidecar send → sidecar deliver → forward, each a
// child of the one before, all in the producer's trace; and the message the
// app receives carries the last hop's context.
func TestTraceAcrossBroker(t *testing.T) {
	tel, exp := traced(t, observe.Config{})
	b := newBroker(t)
	ctx := testCtx(t)

	producer, hs := appSpan(t, exp)
	m := &broker.Message{Topic: "orders.created", Key: "k", Headers: hs, Body: []byte("hello")}
	tel.SetEndpoints(func(string) broker.Endpoint { return b.Endpoint() })
	start := time.Now()
	pctx, span := tel.TracePublish(ctx, m, "main")
	res, err := b.Publish(pctx, m)
	tel.EndPublish(span, m.Topic, res, err)
	tel.Metrics.Published(ctx, m.Topic, len(m.Body), time.Since(start), err)
	if err != nil {
		t.Fatal(err)
	}
	producer.End()
	send := spanNamed(t, exp, "send orders.created")
	wantChild(t, send, producer.SpanContext())
	if send.SpanKind != trace.SpanKindProducer {
		t.Errorf("send span kind %v, want PRODUCER: its context goes into the message", send.SpanKind)
	}
	wantAttrs(t, send, map[attribute.Key]string{"msgmesh.cluster": "main", "messaging.operation.type": "send", "messaging.message.body.size": "5",
		"messaging.system": "nats", "server.address": b.Endpoint().Address, "msgmesh.offset": fmt.Sprint(res.Offset)})
	if got := msgtrace.SpanContext(m.Headers); got.SpanID() != send.SpanContext.SpanID() {
		t.Fatalf("published headers carry span %s, want the send span %s", got.SpanID(), send.SpanContext.SpanID())
	}
	if m.Headers[0] != (broker.Header{Key: "app-header", Value: "1"}) {
		t.Fatalf("app headers changed: %+v", m.Headers)
	}

	raw := consumeOne(t, b, "orders.created", "g1")
	if raw.MessageID() != res.MessageID {
		t.Fatalf("consumed %q, published %q", raw.MessageID(), res.MessageID)
	}
	// The consuming sidecar first tries a sibling that refuses: the
	// forward span hangs under the producer's send span.
	refused := tel.Forward(raw, "g1", "10.0.0.3:7700")
	observe.ForwardFailed(refused, "refused", errors.New("not registered there"))
	wantChild(t, spanNamed(t, exp, "forward orders.created"), send.SpanContext)
	exp.Reset()

	d := tel.Deliver(raw, "g1")
	if got := msgtrace.SpanContext(raw.Message().Headers); got.SpanID() != send.SpanContext.SpanID() {
		t.Fatal("Deliver changed the broker's message headers")
	}
	fd := tel.Forward(d, "g1", "10.0.0.2:7700")
	fwdCtx := msgtrace.SpanContext(fd.Message().Headers)
	if err := fd.Ack(ctx); err != nil {
		t.Fatal(err)
	}

	deliver := spanNamed(t, exp, "deliver orders.created")
	wantChild(t, deliver, send.SpanContext)
	wantAttrs(t, deliver, map[attribute.Key]string{"messaging.message.id": res.MessageID, "msgmesh.settle": "ack"})
	forward := spanNamed(t, exp, "forward orders.created")
	wantChild(t, forward, deliver.SpanContext)
	wantAttrs(t, forward, map[attribute.Key]string{"msgmesh.sibling": "10.0.0.2:7700", "msgmesh.settle": "ack"})
	if forward.SpanKind != trace.SpanKindProducer || fwdCtx.SpanID() != forward.SpanContext.SpanID() {
		t.Errorf("forward span kind %v; forwarded headers carry %s, want %s", forward.SpanKind, fwdCtx.SpanID(), forward.SpanContext.SpanID())
	}

	wantLines(t, scrape(t, tel),
		`msgmesh_messages_in_total{topic="orders.created"} 1`,
		`msgmesh_in_bytes_total{topic="orders.created"} 5`,
		`msgmesh_messages_out_total{group="g1",topic="orders.created"} 1`,
		`msgmesh_out_bytes_total{group="g1",topic="orders.created"} 5`,
		`msgmesh_deliveries_settled_total{group="g1",outcome="ack",topic="orders.created"} 1`,
		`msgmesh_deliveries_inflight{group="g1",topic="orders.created"} 0`,
		`msgmesh_forwarded_total{group="g1",outcome="ack",topic="orders.created"} 1`,
		`msgmesh_delivery_duration_seconds_count{group="g1",topic="orders.created"} 1`,
	)
}

func TestForwardFailedAndTimeout(t *testing.T) {
	tel, exp := traced(t, observe.Config{})
	b := newBroker(t)
	ctx := testCtx(t)
	for range 2 {
		if _, err := b.Publish(ctx, &broker.Message{Topic: "t", Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := b.Consume(ctx, broker.ConsumerSpec{Topic: "t", Group: "g", AckWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())

	raw, err := c.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := tel.Deliver(raw, "g")
	fd := tel.Forward(d, "g", "sib:1")
	observe.ForwardFailed(fd, "unavailable", errors.New("sibling down"))
	observe.ForwardFailed(fd, "unavailable", errors.New("again")) // counted once
	if observe.Unwrap(d) != raw {
		t.Fatal("Unwrap did not return the broker's delivery")
	}
	// Delivered locally instead; the app does not answer in time.
	observe.MarkTimeout(d)
	if err := d.Nack(ctx, 0); err != nil {
		t.Fatal(err)
	}

	fwd := spanNamed(t, exp, "forward t")
	if fwd.Status.Code != codes.Error || fwd.Status.Description != "sibling down" {
		t.Errorf("forward span status %+v", fwd.Status)
	}
	wantAttrs(t, spanNamed(t, exp, "deliver t"), map[attribute.Key]string{"msgmesh.settle": "timeout"})
	got := scrape(t, tel)
	wantLines(t, got,
		`msgmesh_forwarded_total{group="g",outcome="unavailable",topic="t"} 1`,
		`msgmesh_deliveries_settled_total{group="g",outcome="timeout",topic="t"} 1`,
		`msgmesh_deliveries_inflight{group="g",topic="t"} 0`,
	)

	// The nacked message comes back: a redelivery.
	raw, err = c.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for raw.Redelivered() == 0 { // the second message may come first
		if err := raw.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		if raw, err = c.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	d = tel.Deliver(raw, "g")
	if err := d.Nack(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	wantLines(t, scrape(t, tel),
		`msgmesh_redelivered_total{group="g",topic="t"} 1`,
		`msgmesh_deliveries_settled_total{group="g",outcome="nack",topic="t"} 1`,
	)
}

func TestPullSpan(t *testing.T) {
	tel, exp := traced(t, observe.Config{})
	producer, hs := appSpan(t, exp)
	producer.End()
	b := newBroker(t)
	ctx := testCtx(t)
	if _, err := b.Publish(ctx, &broker.Message{Topic: "t", Headers: hs}); err != nil {
		t.Fatal(err)
	}
	_, pull := tel.StartPull(ctx, "g", "t")
	d := tel.Deliver(consumeOne(t, b, "t", "g"), "g")
	observe.LinkDelivery(pull, d)
	observe.EndPull(pull, 1, nil)
	_ = d.Ack(ctx)

	s := spanNamed(t, exp, "pull t")
	wantAttrs(t, s, map[attribute.Key]string{"messaging.batch.message_count": "1", "messaging.operation.type": "receive"})
	if s.SpanKind != trace.SpanKindServer || len(s.Links) != 1 {
		t.Fatalf("pull span kind %v, links %d", s.SpanKind, len(s.Links))
	}
	deliver := spanNamed(t, exp, "deliver t")
	if s.Links[0].SpanContext.SpanID() != deliver.SpanContext.SpanID() {
		t.Error("pull span does not link to the delivery's span")
	}
	wantChild(t, deliver, producer.SpanContext())
}

// TestTracingOff checks that with no exporter the helpers record nothing,
// leave the app's trace context alone, and allocate nothing.
func TestTracingOff(t *testing.T) {
	tel := newTelemetry(t, observe.Config{})
	if tel.Tracing() {
		t.Fatal("tracing on without an OTLP endpoint")
	}
	exp := tracetest.NewInMemoryExporter()
	_, hs := appSpan(t, exp)
	m := &broker.Message{Topic: "orders", Headers: hs}
	before := append([]broker.Header(nil), hs...)
	ctx := context.Background()
	err := errors.New("broker down")

	allocs := testing.AllocsPerRun(1000, func() {
		c, span := tel.TracePublish(ctx, m, "main")
		observe.End(span, err)
		c, span = tel.StartPublish(c, "orders")
		observe.End(span, nil)
		c, span = tel.StartDeliver(c, "orders", "g", "id")
		observe.End(span, nil)
		c, span = tel.StartForward(c, "orders", "g", "sib")
		observe.End(span, nil)
		_, span = tel.StartPull(c, "g", "orders")
		observe.EndPull(span, 3, nil)
	})
	if allocs != 0 {
		t.Errorf("tracing off: %v allocations per publish/deliver/forward/pull, want 0", allocs)
	}
	if len(m.Headers) != len(before) || m.Headers[1] != before[1] {
		t.Errorf("tracing off changed the headers: %+v, was %+v", m.Headers, before)
	}

	var nilTel *observe.Telemetry
	if allocs := testing.AllocsPerRun(100, func() {
		_, span := nilTel.StartPublish(ctx, "orders")
		observe.End(span, nil)
	}); allocs != 0 {
		t.Errorf("nil Telemetry: %v allocs", allocs)
	}
}
