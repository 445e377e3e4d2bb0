package client_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/allocs"
	"github.com/msgmesh/msgmesh/observe/msgtrace"
)

// sdkTracer is the real OpenTelemetry SDK exporting, synchronously, to an
// in-memory exporter.
func sdkTracer(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// exported returns the first span named name, waiting for it: a handler's
// span ends just after its ACK is written.
func exported(t *testing.T, exp *tracetest.InMemoryExporter, name string) tracetest.SpanStub {
	t.Helper()
	var found tracetest.SpanStub
	eventually(t, func() bool {
		for _, s := range exp.GetSpans() {
			if s.Name == name {
				found = s
				return true
			}
		}
		return false
	}, "span "+name+" exported")
	return found
}

// eventually polls cond until it holds, failing the test after wait.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// spanAttr returns the attribute k of s, "" if absent.
func spanAttr(s tracetest.SpanStub, k string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == k {
			return a.Value.String()
		}
	}
	return ""
}

func decodePublish(t *testing.T, f mesh.Frame) mesh.Publish {
	t.Helper()
	var p mesh.Publish
	if err := p.Decode(f.Payload); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPublishCarriesTraceContext(t *testing.T) {
	tp, exp := sdkTracer(t)
	p := newPeer(t)
	p.autoPublish = true
	c := dial(t, p, client.WithTracerProvider(tp))
	pc := p.accept(t)
	pc.handshake(t)

	// The app's own span is the parent of the SDK's publish span.
	ctx, parent := tp.Tracer("app").Start(testCtx(t), "handle order")
	msg := &client.Message{Topic: "orders.created", Headers: []mesh.HeaderField{{Key: "h", Value: "v"}}, Body: []byte("hello")}
	if _, err := c.Publish(ctx, msg); err != nil {
		t.Fatal(err)
	}
	parent.End()
	pub := decodePublish(t, pc.expect(t, mesh.KindPublish, false))
	if len(msg.Headers) != 1 {
		t.Fatalf("Publish changed the caller's headers: %+v", msg.Headers)
	}
	if pub.Headers[0] != (mesh.HeaderField{Key: "h", Value: "v"}) || len(pub.Headers) != 2 || pub.Headers[1].Key != "traceparent" {
		t.Fatalf("PUBLISH headers = %+v, want h then traceparent", pub.Headers)
	}
	s := exported(t, exp, "publish orders.created")
	sc := msgtrace.SpanContext(pub.Headers)
	if sc.TraceID() != parent.SpanContext().TraceID() || sc.SpanID() != s.SpanContext.SpanID() {
		t.Fatalf("traceparent %s/%s, want trace %s, span %s", sc.TraceID(), sc.SpanID(), parent.SpanContext().TraceID(), s.SpanContext.SpanID())
	}
	if s.Parent.SpanID() != parent.SpanContext().SpanID() || s.SpanKind != trace.SpanKindProducer {
		t.Fatalf("publish span parent %s kind %v", s.Parent.SpanID(), s.SpanKind)
	}
	for k, v := range map[string]string{"messaging.system": "msgmesh", "messaging.destination.name": "orders.created",
		"messaging.operation.name": "publish", "messaging.operation.type": "send", "messaging.message.body.size": "5"} {
		if got := spanAttr(s, k); got != v {
			t.Errorf("publish span %s = %q, want %q", k, got, v)
		}
	}

	// PublishAsync: the span ends when done runs, with the outcome.
	done := make(chan error, 1)
	c.PublishAsync(testCtx(t), &client.Message{Topic: "async"}, func(_ client.PublishAck, err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	pub = decodePublish(t, pc.expect(t, mesh.KindPublish, false))
	if sc := msgtrace.SpanContext(pub.Headers); sc.SpanID() != exported(t, exp, "publish async").SpanContext.SpanID() {
		t.Fatal("async PUBLISH does not carry its span")
	}
}

func TestPublishSpanRecordsError(t *testing.T) {
	tp, exp := sdkTracer(t)
	p := newPeer(t)
	c := dial(t, p, client.WithTracerProvider(tp))
	pc := p.accept(t)
	pc.handshake(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Publish(testCtx(t), &client.Message{Topic: "t"})
		errc <- err
	}()
	f := pc.expect(t, mesh.KindPublish, false)
	pc.send(mesh.KindError, mesh.FlagResponse, f.ID, &mesh.Error{Code: mesh.CodeRateLimited, Message: "over the rate"})
	if err := <-errc; client.CodeOf(err) != mesh.CodeRateLimited {
		t.Fatalf("Publish = %v", err)
	}
	if s := exported(t, exp, "publish t"); s.Status.Code != codes.Error {
		t.Fatalf("span status %+v, want an error", s.Status)
	}
}

// producerHeaders returns headers carrying a producer span of another
// process (its own provider), and that span's context.
func producerHeaders(t *testing.T) ([]mesh.HeaderField, trace.SpanContext) {
	t.Helper()
	tp, _ := sdkTracer(t)
	ctx, span := tp.Tracer("producer").Start(context.Background(), "publish t", trace.WithSpanKind(trace.SpanKindProducer))
	span.End()
	hs := msgtrace.InjectCopy(ctx, []mesh.HeaderField{{Key: "k", Value: "v"}})
	return hs, span.SpanContext()
}

func TestHandlerContextJoinsProducerTrace(t *testing.T) {
	tp, exp := sdkTracer(t)
	p := newPeer(t)
	c := dial(t, p, client.WithTracerProvider(tp))
	pc := p.accept(t)
	pc.handshake(t)

	type seen struct {
		sc        trace.SpanContext
		recording bool
		same      bool
	}
	got := make(chan seen, 2)
	_, err := c.Subscribe(testCtx(t), "g1", "orders", func(ctx context.Context, d *client.Delivery) error {
		span := trace.SpanFromContext(ctx)
		got <- seen{span.SpanContext(), span.IsRecording(), trace.SpanFromContext(d.Context()) == span}
		if string(d.Body) == "fail" {
			return errors.New("boom")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pc.expectDeclare(t)
	hs, producer := producerHeaders(t)
	pc.send(mesh.KindDeliver, 0, 1, &mesh.Message{DeliveryID: 1, Group: "g1", Topic: "orders", Headers: hs, Body: []byte("ok"), MessageID: "m-1"})
	s := <-got
	if s.sc.TraceID() != producer.TraceID() || !s.recording || !s.same {
		t.Fatalf("handler span: trace %s (want %s), recording %v, Delivery.Context same span %v", s.sc.TraceID(), producer.TraceID(), s.recording, s.same)
	}
	pc.expect(t, mesh.KindAck, true)
	span := exported(t, exp, "process orders")
	if span.Parent.SpanID() != producer.SpanID() || !span.Parent.IsRemote() || span.SpanKind != trace.SpanKindConsumer {
		t.Fatalf("process span parent %s (remote %v), kind %v; want parent %s", span.Parent.SpanID(), span.Parent.IsRemote(), span.SpanKind, producer.SpanID())
	}
	for k, v := range map[string]string{"messaging.consumer.group.name": "g1", "messaging.message.id": "m-1",
		"messaging.operation.name": "process", "msgmesh.settle": "ack"} {
		if got := spanAttr(span, k); got != v {
			t.Errorf("process span %s = %q, want %q", k, got, v)
		}
	}

	// A failing handler: nacked, span in error.
	pc.send(mesh.KindDeliver, 0, 2, &mesh.Message{DeliveryID: 2, Group: "g1", Topic: "orders", Headers: hs, Body: []byte("fail")})
	<-got
	pc.expect(t, mesh.KindNack, true)
	var failed tracetest.SpanStub
	eventually(t, func() bool {
		for _, sp := range exp.GetSpans() {
			if sp.Name == "process orders" && sp.Status.Code == codes.Error {
				failed = sp
				return true
			}
		}
		return false
	}, "the failed handler's span")
	if failed.Status.Description != "boom" || spanAttr(failed, "msgmesh.settle") != "nack" {
		t.Fatalf("failed handler's span: status %+v, settle %q", failed.Status, spanAttr(failed, "msgmesh.settle"))
	}
}

func TestPulledDeliverySpanEndsOnSettle(t *testing.T) {
	tp, exp := sdkTracer(t)
	p := newPeer(t)
	c := dial(t, p, client.WithTracerProvider(tp))
	pc := p.accept(t)
	pc.handshake(t)

	ctx, poll := tp.Tracer("app").Start(testCtx(t), "poll")
	hs, producer := producerHeaders(t)
	res := make(chan []*client.Delivery, 1)
	go func() {
		ds, err := c.Pull(ctx, "g1", "jobs", 10)
		if err != nil {
			t.Error(err)
		}
		res <- ds
	}()
	pc.expectDeclare(t)
	f := pc.expect(t, mesh.KindPull, false)
	pc.send(mesh.KindPullResult, mesh.FlagResponse, f.ID, &mesh.PullResult{Messages: []mesh.Message{
		{DeliveryID: 11, Group: "g1", Topic: "jobs", Headers: hs, MessageID: "a"},
		{DeliveryID: 12, Group: "g1", Topic: "jobs", MessageID: "b"},
	}})
	ds := <-res
	poll.End()
	if len(ds) != 2 {
		t.Fatalf("%d deliveries", len(ds))
	}
	if sc := trace.SpanContextFromContext(ds[0].Context()); sc.TraceID() != producer.TraceID() {
		t.Fatalf("pulled delivery's context: trace %s, want %s", sc.TraceID(), producer.TraceID())
	}
	if n := len(exp.GetSpans()); n != 1 { // only "poll": the deliveries are not settled
		t.Fatalf("%d spans ended before settling, want 1", n)
	}
	if err := ds[0].Ack(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if err := ds[1].Nack(testCtx(t), time.Second); err != nil {
		t.Fatal(err)
	}
	var spans []tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == "process jobs" {
			spans = append(spans, s)
		}
	}
	if len(spans) != 2 {
		t.Fatalf("%d process spans, want 2", len(spans))
	}
	slices.SortFunc(spans, func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) })
	a, b := spans[0], spans[1]
	if spanAttr(a, "messaging.message.id") != "a" {
		a, b = b, a
	}
	if a.Parent.SpanID() != producer.SpanID() || spanAttr(a, "msgmesh.settle") != "ack" {
		t.Fatalf("first delivery's span: parent %s, settle %q", a.Parent.SpanID(), spanAttr(a, "msgmesh.settle"))
	}
	// No trace context in the message: the span hangs under Pull's ctx.
	if b.Parent.SpanID() != poll.SpanContext().SpanID() || spanAttr(b, "msgmesh.settle") != "nack" {
		t.Fatalf("second delivery's span: parent %s, settle %q", b.Parent.SpanID(), spanAttr(b, "msgmesh.settle"))
	}
	if len(a.Links) != 1 || a.Links[0].SpanContext.SpanID() != poll.SpanContext().SpanID() {
		t.Fatalf("first delivery's span links %+v, want the poll span", a.Links)
	}
	if err := ds[0].Ack(testCtx(t)); !errors.Is(err, client.ErrAlreadySettled) {
		t.Fatal(err)
	}
}

// TestTracingOff: with the default (untouched global) provider or a noop
// one, no span is made and no header added, and a publish allocates no
// more than it did before tracing existed; a span context already in ctx
// is passed on, and Delivery.Context still carries the producer's.
func TestTracingOff(t *testing.T) {
	for name, opts := range map[string][]client.Option{
		"global": nil,
		"noop":   {client.WithTracerProvider(noop.NewTracerProvider())},
	} {
		t.Run(name, func(t *testing.T) {
			p := newPeer(t)
			p.autoPublish = true
			c := dial(t, p, opts...)
			pc := p.accept(t)
			pc.handshake(t)
			if _, err := c.Publish(testCtx(t), &client.Message{Topic: "t", Headers: []mesh.HeaderField{{Key: "h", Value: "v"}}}); err != nil {
				t.Fatal(err)
			}
			if pub := decodePublish(t, pc.expect(t, mesh.KindPublish, false)); len(pub.Headers) != 1 {
				t.Fatalf("tracing off: PUBLISH headers %+v", pub.Headers)
			}

			other, _ := sdkTracer(t)
			ctx, span := other.Tracer("unknown to the client").Start(testCtx(t), "x")
			defer span.End()
			if _, err := c.Publish(ctx, &client.Message{Topic: "t"}); err != nil {
				t.Fatal(err)
			}
			pub := decodePublish(t, pc.expect(t, mesh.KindPublish, false))
			if sc := msgtrace.SpanContext(pub.Headers); sc.SpanID() != span.SpanContext().SpanID() {
				t.Fatalf("tracing off: the ctx's span context was not passed on: %+v", pub.Headers)
			}

			hs, producer := producerHeaders(t)
			got := make(chan *client.Delivery, 1)
			var handlerSpan trace.Span
			if _, err := c.Subscribe(testCtx(t), "g", "t", func(ctx context.Context, d *client.Delivery) error {
				handlerSpan = trace.SpanFromContext(ctx)
				got <- d
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			pc.expectDeclare(t)
			pc.send(mesh.KindDeliver, 0, 5, &mesh.Message{DeliveryID: 5, Group: "g", Topic: "t", Headers: hs})
			d := <-got
			if handlerSpan.SpanContext().IsValid() {
				t.Fatal("tracing off: the handler's ctx has a span")
			}
			if sc := trace.SpanContextFromContext(d.Context()); sc.SpanID() != producer.SpanID() {
				t.Fatalf("Delivery.Context = %v, want the producer's span context", sc)
			}
		})
	}
}

// TestTracingOffCostsNothing: a no-op tracer provider allocates no more per
// publish than the default (the global no-op), and tracing on does
// allocate more (the measurement sees it). The counts are averages over
// many publishes, compared with a margin below one allocation: under the
// race detector sync.Pool drops a quarter of what is put back at random,
// so each run's average carries a fraction that testing.AllocsPerRun's
// rounding down turned into a whole allocation more or less (4 against 5
// seen in CI).
func TestTracingOffCostsNothing(t *testing.T) {
	p := newPeer(t)
	p.autoPublish, p.noRecord = true, true
	measure := func(opts ...client.Option) float64 {
		c := dial(t, p, opts...)
		m := &client.Message{Topic: "t", Body: make([]byte, 64)}
		ctx := context.Background()
		n, _ := allocs.PerRun(1000, func() {
			if _, err := c.Publish(ctx, m); err != nil {
				t.Fatal(err)
			}
		})
		return n
	}
	base := measure()
	off := measure(client.WithTracerProvider(noop.NewTracerProvider()))
	tp, _ := sdkTracer(t)
	on := measure(client.WithTracerProvider(tp))
	t.Logf("allocations per Publish: global no-op %.2f, noop provider %.2f, SDK %.2f", base, off, on)
	if off > base+0.5 {
		t.Errorf("a noop provider costs %.2f allocations per publish over the default %.2f", off, base)
	}
	if on <= base+0.5 {
		t.Errorf("tracing on allocates %.2f, no more than off (%.2f): is it on?", on, base)
	}
}
