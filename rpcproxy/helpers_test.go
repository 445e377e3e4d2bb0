package rpcproxy

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/rpcproxy/rpctest"
)

// testLog is quiet unless RPCPROXY_TEST_LOG is set.
func testLog() *slog.Logger {
	if os.Getenv("RPCPROXY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testHeartbeat checks often, and waits long enough for an answer that a
// loaded machine does not make a healthy app look dead.
var testHeartbeat = HeartbeatConfig{Interval: 20 * time.Millisecond, Timeout: 500 * time.Millisecond, UnhealthyThreshold: 2}

// startProxy starts a proxy on loopback ports and stops it at the end of
// the test.
func startProxy(t testing.TB, cfg Config) *Proxy {
	t.Helper()
	if cfg.Egress.Listen == "" {
		cfg.Egress.Listen = "127.0.0.1:0"
	}
	if cfg.Ingress.Listen == "" {
		cfg.Ingress.Listen = "127.0.0.1:0"
	}
	p, err := New(cfg, testLog())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return p
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func startMeshEcho(t testing.TB) *rpctest.MeshServer {
	t.Helper()
	s, err := rpctest.StartMesh("", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func startHTTPEcho(t testing.TB) *rpctest.HTTPServer {
	t.Helper()
	s, err := rpctest.StartHTTP("", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func dialMesh(t *testing.T, addr string) *rpctest.MeshClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rpctest.DialMesh(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sidecarPair starts an ingress sidecar in front of the app addresses and
// an egress sidecar routing service "echo" (and any HTTP host) to it.
func sidecarPair(t testing.TB, app map[string]string) (egress, ingress *Proxy) {
	t.Helper()
	ingress = startProxy(t, Config{Egress: EgressConfig{Listen: Off}, Ingress: IngressConfig{App: app,
		Heartbeat: testHeartbeat}})
	waitFor(t, 10*time.Second, "the ingress to find the app healthy", ingress.Healthy)
	egress = startProxy(t, Config{
		Ingress:  IngressConfig{Listen: Off},
		Clusters: []ClusterConfig{{Name: "echo", Hosts: []HostConfig{{Address: ingress.IngressAddr().String()}}}},
		Routes:   []RouteConfig{{Service: "echo", Cluster: "echo"}, {Protocol: "http1", Cluster: "echo"}},
	})
	return egress, ingress
}
