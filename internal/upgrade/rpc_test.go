package upgrade_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/rpcproxy/rpctest"
)

// TestHotUpgradeRPCInFlight: RPC calls keep flowing through a sidecar's
// egress (sidecar A) and another's ingress (sidecar B) to an app that takes
// 20 ms per call, over the mesh RPC protocol and HTTP/1.1, while A, then
// B, then A again are hot-upgraded, and then A's rpc section is reloaded.
// The callers' connections, and A's upstream connections into B's
// ingress, move to the successor (or, in the reload, to the new proxy):
// every call completes with its own answer (none reset, none failed), and
// no caller dials again. Every call is counted.
func TestHotUpgradeRPCInFlight(t *testing.T) {
	const work = 20 * time.Millisecond
	app, err := rpctest.StartMesh("", func(ctx context.Context, req *mesh.Request) (*mesh.Response, *mesh.Error) {
		time.Sleep(work) // the app's work: calls are in flight at any moment
		return rpctest.Echo(ctx, req)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	appHTTP, err := rpctest.StartHTTP("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(work)
		rpctest.EchoHTTP.ServeHTTP(w, r)
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(appHTTP.Close)

	ingress, egress := brokertest.FreeAddr(t), brokertest.FreeAddr(t)
	b := newSidecarArgs(t, "--config", sidecartest.WriteConfig(t, fmt.Sprintf(`rpc:
  egress: {listen: "off"}
  ingress:
    listen: %q
    app: {mesh: %q, http1: %q}
    heartbeat: {interval: 200ms}
`, ingress, app.Addr(), appHTTP.Addr())))
	aConfig := fmt.Sprintf(`rpc:
  egress: {listen: %q}
  ingress: {listen: "off"}
  clusters:
    - name: b
      hosts: [{address: %q}]
  routes:
    - {name: mesh, service: echo, cluster: b, timeout: 60s}
    - {name: http, service: echo.local, cluster: b, timeout: 60s}
`, egress, ingress)
	aPath := sidecartest.WriteConfig(t, aConfig)
	a := newSidecarArgs(t, "--config", aPath)
	procB := b.start(t)
	procA := a.start(t)

	var (
		calls, inflight, dials atomic.Int64
		mu                     sync.Mutex
		failures               []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	const perProtocol = 8
	for w := range perProtocol {
		c, err := rpctest.DialMesh(ctx, egress)
		if err != nil {
			t.Fatal(err)
		}
		dials.Add(1)
		t.Cleanup(func() { c.Close() })
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				body := fmt.Appendf(nil, "mesh-%d-%d", w, i)
				inflight.Add(1)
				resp, err := c.Call(context.Background(), "echo", "m", nil, body)
				inflight.Add(-1)
				calls.Add(1)
				switch {
				case err != nil:
					fail("mesh caller %d, call %d: %v", w, i, err)
					return // a broken connection would fail every later call
				case !bytes.Equal(resp.Body, body):
					fail("mesh caller %d, call %d: answer %q", w, i, resp.Body)
				}
			}
		})
	}
	for w := range perProtocol {
		tr := &http.Transport{MaxIdleConnsPerHost: 1, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
		t.Cleanup(tr.CloseIdleConnections)
		hc := &http.Client{Transport: tr}
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				body := fmt.Sprintf("http-%d-%d", w, i)
				req, _ := http.NewRequest(http.MethodPost, "http://"+egress+"/call", bytes.NewBufferString(body))
				req.Host = "echo.local"
				inflight.Add(1)
				resp, err := hc.Do(req)
				var got []byte
				if err == nil {
					got, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				inflight.Add(-1)
				calls.Add(1)
				switch {
				case err != nil:
					fail("http caller %d, call %d: %v", w, i, err)
				case resp.StatusCode != http.StatusOK || string(got) != body:
					fail("http caller %d, call %d: %d %q", w, i, resp.StatusCode, got)
				}
			}
		})
	}

	flow := func(what string) {
		before := calls.Load()
		sidecartest.WaitFor(t, waitLong, what, func() bool { return calls.Load() > before+300 })
	}
	flow("calls to flow")
	for i, step := range []struct {
		name string
		args sidecarArgs
		p    **sidecartest.Proc
	}{{"A (egress)", a, &procA}, {"B (ingress)", b, &procB}, {"A (egress)", a, &procA}} {
		atStart, before := inflight.Load(), calls.Load()
		var gone time.Duration
		*step.p, gone = step.args.upgrade(t, *step.p)
		t.Logf("upgrade %d of %s: old process gone %s after the new one started; %d calls in flight at its start, %d completed meanwhile",
			i, step.name, gone.Round(time.Millisecond), atStart, calls.Load()-before)
		flow("calls to flow after the upgrade")
	}
	// A reload of A with a changed rpc section (one more route, a longer
	// idle timeout) moves the same connections in-process.
	if err := os.WriteFile(aPath, []byte(aConfig+"    - {name: other, service: other, cluster: b}\n  idle_timeout: 10m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	atStart, before := inflight.Load(), calls.Load()
	if out, err := exec.Command(build(t), "reload", "--data-dir", a.args[1]).CombinedOutput(); err != nil {
		t.Fatalf("msgmesh reload of A: %v\n%s", err, out)
	}
	t.Logf("reload of A's rpc section: %d calls in flight at its start, %d completed meanwhile", atStart, calls.Load()-before)
	flow("calls to flow after the reload")
	stop()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d calls, %d failed; %d connections dialled by %d callers", calls.Load(), len(failures), dials.Load(), 2*perProtocol)
	for i, f := range failures {
		if i == 10 {
			t.Errorf("... and %d more", len(failures)-10)
			break
		}
		t.Error(f)
	}
	if d := dials.Load(); d != 2*perProtocol {
		t.Errorf("%d connections dialled by %d callers: a caller's connection broke", d, 2*perProtocol)
	}
}
