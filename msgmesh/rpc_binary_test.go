package msgmesh_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/rpcproxy/rpctest"
)

// TestBinaryServesRPC: the msgmesh binary runs the RPC proxy beside the
// message mesh from the rpc section of its config file: an HTTP call to
// the egress listener reaches the app server behind the ingress listener
// (here of the same sidecar), the call is counted on the binary's
// /metrics, and /healthz reports the ingress app's health.
func TestBinaryServesRPC(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	app, err := rpctest.StartHTTP("", nil)
	if err != nil {
		t.Fatal(err)
	}
	appAddr := app.Addr()
	t.Cleanup(func() { app.Close() })
	egress, ingress := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`rpc:
  egress: {listen: %q}
  ingress:
    listen: %q
    app: {http1: %q}
    heartbeat: {interval: 100ms, unhealthy_threshold: 2, healthy_threshold: 1, http_path: /}
  clusters:
    - name: echo
      hosts: [{address: %q}]
  routes:
    - name: echo
      service: echo.local
      cluster: echo
`, egress, ingress, appAddr, ingress)
	path := filepath.Join(t.TempDir(), "msgmesh.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	httpAddr := freePort(t)
	p := sidecartest.StartProc(t, bin, "--data-dir", t.TempDir(), "--listen", freePort(t), "--http", httpAddr, "--config", path, "--log-level", "warn")
	sidecartest.WaitHealthy(t, p, httpAddr)

	req, _ := http.NewRequest(http.MethodPost, "http://"+egress+"/hello", strings.NewReader("ping"))
	req.Host = "echo.local"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("call through egress and ingress: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "ping") {
		t.Fatalf("echo through the sidecar: %d %q", resp.StatusCode, body)
	}

	// The proxy's stages counted the call on both listeners before it was
	// answered, and the binary serves those counters on its /metrics,
	// beside the message mesh's.
	m := scrape(t, httpAddr)
	for _, series := range []string{
		`msgmesh_exchanges_total{class="2xx",kind="rpc",listener="egress",route="echo"}`,
		`msgmesh_exchanges_total{class="2xx",kind="rpc",listener="ingress",route="app/http1"}`,
		`msgmesh_exchange_seconds_count{kind="rpc",listener="egress",route="echo"}`,
	} {
		if m[series] != 1 {
			t.Errorf("GET /metrics: %s = %d, want 1", series, m[series])
		}
	}
	if m[`msgmesh_exchanges_in_flight{kind="rpc",listener="egress",route="echo"}`] != 0 {
		t.Error("GET /metrics: the answered call is still in flight")
	}

	// The app behind the ingress dies: the sidecar reports unhealthy.
	app.Close()
	sidecartest.WaitFor(t, 10*time.Second, "/healthz to report the dead RPC app", func() bool {
		status, _ := sidecartest.HTTPDo(t, http.MethodGet, "http://"+httpAddr+"/healthz", "", nil)
		return status == http.StatusServiceUnavailable
	})
}
