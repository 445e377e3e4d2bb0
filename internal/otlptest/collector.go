// Package otlptest is an OTLP/gRPC trace receiver for tests that run the
// msgmesh binary (or whole systems of them) and look at the spans it
// exports: it stands in for an OpenTelemetry collector, keeping every span
// it is sent. The sidecar exports through the real OTLP exporter to it, so
// what a test sees is what a collector would.
package otlptest

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
)

// MaxSpans bounds what a Collector keeps; later spans are dropped.
const MaxSpans = 200_000

// Span is what tests look at in an exported span.
type Span struct {
	Service  string // resource attribute service.name
	Name     string
	Kind     string // SPAN_KIND_PRODUCER, ...
	TraceID  string
	SpanID   string
	ParentID string
	Attrs    map[string]string
}

func (s Span) String() string {
	return fmt.Sprintf("%s: %q %s span=%s parent=%s", s.Service, s.Name, strings.TrimPrefix(s.Kind, "SPAN_KIND_"), s.SpanID, s.ParentID)
}

// Collector receives OTLP/gRPC trace exports.
type Collector struct {
	coltracepb.UnimplementedTraceServiceServer
	ln   net.Listener
	srv  *grpc.Server
	done chan struct{}

	mu    sync.Mutex
	spans []Span
}

// Serve starts a Collector on ln; Close stops it.
func Serve(ln net.Listener) *Collector {
	c := &Collector{ln: ln, srv: grpc.NewServer(), done: make(chan struct{})}
	coltracepb.RegisterTraceServiceServer(c.srv, c)
	go func() {
		defer close(c.done)
		_ = c.srv.Serve(ln)
	}()
	return c
}

// Addr is where the Collector listens.
func (c *Collector) Addr() net.Addr { return c.ln.Addr() }

// Close stops the Collector and waits for its server to end.
func (c *Collector) Close() {
	c.srv.Stop()
	<-c.done
}

// Export implements the OTLP trace service.
func (c *Collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := attrs(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				if len(c.spans) >= MaxSpans {
					return &coltracepb.ExportTraceServiceResponse{}, nil
				}
				c.spans = append(c.spans, Span{
					Service:  service,
					Name:     sp.GetName(),
					Kind:     sp.GetKind().String(),
					TraceID:  hex.EncodeToString(sp.GetTraceId()),
					SpanID:   hex.EncodeToString(sp.GetSpanId()),
					ParentID: hex.EncodeToString(sp.GetParentSpanId()),
					Attrs:    attrs(sp.GetAttributes()),
				})
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			m[kv.GetKey()] = v.GetStringValue()
		default:
			m[kv.GetKey()] = strings.TrimSpace(fmt.Sprint(v.GetValue()))
		}
	}
	return m
}

// Spans returns the spans received so far that match keep (all with nil).
func (c *Collector) Spans(keep func(Span) bool) []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Span
	for _, s := range c.spans {
		if keep == nil || keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// Trace returns the spans of one trace.
func (c *Collector) Trace(id string) []Span {
	return c.Spans(func(s Span) bool { return s.TraceID == id })
}

// Count is how many spans were received.
func (c *Collector) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.spans)
}
