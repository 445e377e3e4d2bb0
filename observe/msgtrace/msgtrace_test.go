package msgtrace_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/observe/msgtrace"
)

func TestInjectReplacesAndExtracts(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tr := tp.Tracer("test")
	ctx, span := tr.Start(context.Background(), "producer")
	defer span.End()

	// An old traceparent (different case) and a duplicate must be replaced
	// by exactly one header; other headers stay in order.
	hs := []broker.Header{
		{Key: "a", Value: "1"},
		{Key: "TraceParent", Value: "00-00000000000000000000000000000001-0000000000000001-01"},
		{Key: "b", Value: "2"},
		{Key: "traceparent", Value: "stale"},
	}
	msgtrace.Inject(ctx, &hs)
	var n int
	for _, h := range hs {
		if h.Key == "TraceParent" || h.Key == "traceparent" {
			n++
		}
	}
	if n != 1 || len(hs) != 3 || hs[0].Key != "a" || hs[2].Key != "b" {
		t.Fatalf("headers after Inject = %+v", hs)
	}
	sc := msgtrace.SpanContext(hs)
	if sc.TraceID() != span.SpanContext().TraceID() || sc.SpanID() != span.SpanContext().SpanID() || !sc.IsRemote() {
		t.Fatalf("extracted %v, want remote %v", sc, span.SpanContext())
	}

	// Mesh headers, copy variant: the caller's slice is untouched.
	orig := []mesh.HeaderField{{Key: "x", Value: "y"}}
	cp := msgtrace.InjectCopy(ctx, orig)
	if len(orig) != 1 || len(cp) != 2 || cp[1].Key != msgtrace.TraceParent {
		t.Fatalf("InjectCopy: orig %+v, copy %+v", orig, cp)
	}
	got := trace.SpanContextFromContext(msgtrace.Extract(context.Background(), cp))
	if got.TraceID() != span.SpanContext().TraceID() {
		t.Fatalf("Extract from mesh headers: %v", got)
	}
}

func TestNoContextNoHeaders(t *testing.T) {
	var hs []broker.Header
	msgtrace.Inject(context.Background(), &hs)
	if hs != nil {
		t.Fatalf("Inject without a span wrote %+v", hs)
	}
	if got := msgtrace.InjectCopy(context.Background(), hs); got != nil {
		t.Fatalf("InjectCopy without a span = %+v", got)
	}
	ctx := context.Background()
	if msgtrace.Extract(ctx, []mesh.HeaderField{{Key: "k", Value: "v"}}) != ctx {
		t.Fatal("Extract without traceparent returned a new context")
	}
	bad := []mesh.HeaderField{{Key: "traceparent", Value: "garbage"}}
	if trace.SpanContextFromContext(msgtrace.Extract(ctx, bad)).IsValid() {
		t.Fatal("Extract accepted a malformed traceparent")
	}
	plain := []mesh.HeaderField{{Key: "k", Value: "v"}}
	allocs := testing.AllocsPerRun(100, func() {
		msgtrace.Inject(ctx, &hs)
		_ = msgtrace.Extract(ctx, plain)
	})
	if allocs != 0 {
		t.Fatalf("Inject/Extract with nothing to carry: %v allocs", allocs)
	}
}
