//go:build e2e

package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
)

// collector is the stand-in for an OpenTelemetry collector: an OTLP/gRPC
// trace receiver in the driver that keeps every span it is sent.
// Containers reach it as host.docker.internal (docker-compose.yml maps
// that name to the host's docker bridge address).
type collector struct {
	coltracepb.UnimplementedTraceServiceServer
	listen   string // where it listens on the host
	endpoint string // the URL containers export to
	srv      *grpc.Server

	mu    sync.Mutex
	spans []span
}

// span is what the scenarios look at in an exported span.
type span struct {
	Service  string // resource attribute service.name
	Name     string
	Kind     string // SPAN_KIND_PRODUCER, ...
	TraceID  string
	SpanID   string
	ParentID string
	Attrs    map[string]string
}

func (s span) String() string {
	return fmt.Sprintf("%s: %q %s span=%s parent=%s", s.Service, s.Name, strings.TrimPrefix(s.Kind, "SPAN_KIND_"), s.SpanID, s.ParentID)
}

// maxSpans bounds what the collector keeps.
const maxSpans = 200_000

// startCollector listens on the docker bridge's gateway address (what
// host-gateway resolves to in the containers: the IPAM gateway of the
// default bridge network, else docker0's address), or on every interface
// if that address cannot be had.
func startCollector() (*collector, error) {
	host := "0.0.0.0"
	if gw, err := run(time.Minute, "docker", "network", "inspect", "bridge", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}"); err == nil && net.ParseIP(strings.TrimSpace(gw)) != nil {
		host = strings.TrimSpace(gw)
	} else if ip := interfaceIPv4("docker0"); ip != "" {
		host = ip
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil && host != "0.0.0.0" {
		ln, err = net.Listen("tcp", "0.0.0.0:0")
	}
	if err != nil {
		return nil, err
	}
	c := &collector{listen: ln.Addr().String(), srv: grpc.NewServer()}
	c.endpoint = fmt.Sprintf("http://host.docker.internal:%d", ln.Addr().(*net.TCPAddr).Port)
	coltracepb.RegisterTraceServiceServer(c.srv, c)
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

func (c *collector) close() { c.srv.Stop() }

// interfaceIPv4 is the first IPv4 address of a network interface, "" if
// it has none.
func interfaceIPv4(name string) string {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return ""
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

// Export implements the OTLP trace service.
func (c *collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := attrs(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				if len(c.spans) >= maxSpans {
					return &coltracepb.ExportTraceServiceResponse{}, nil
				}
				c.spans = append(c.spans, span{
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

// trace returns the spans of one trace.
func (c *collector) trace(id string) []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []span
	for _, s := range c.spans {
		if s.TraceID == id {
			out = append(out, s)
		}
	}
	return out
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.spans)
}
