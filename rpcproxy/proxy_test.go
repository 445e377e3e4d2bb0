package rpcproxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/pipeline"
	"github.com/msgmesh/msgmesh/rpcproxy/rpctest"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

func meshCode(t *testing.T, err error) mesh.Code {
	t.Helper()
	var e *mesh.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want a *mesh.Error answer", err, err)
	}
	return e.Code
}

func call(t *testing.T, c *rpctest.MeshClient, service, body string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := c.Call(ctx, service, "M", nil, []byte(body))
	if err != nil {
		if ctx.Err() != nil {
			t.Fatalf("call to %s hangs: %v", service, err)
		}
		return "", err
	}
	return string(resp.Body), nil
}

// TestSameIDsManyConnsOneUpstream: 50 downstream connections each send
// requests with ids 1..20 at once; the egress sidecar multiplexes them all
// on one upstream connection, and every answer comes back on the right
// connection with its original id.
func TestSameIDsManyConnsOneUpstream(t *testing.T) {
	const conns, perConn = 50, 20
	app := startMeshEcho(t)
	egress := startProxy(t, Config{
		Ingress:  IngressConfig{Listen: Off},
		Clusters: []ClusterConfig{{Name: "echo", ConnsPerHost: 1, Hosts: []HostConfig{{Address: app.Addr()}}}},
		Routes:   []RouteConfig{{Service: "echo", Cluster: "echo"}},
	})
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- sameIDsConn(egress.EgressAddr().String(), c, perConn)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := app.Accepted(); n != 1 {
		t.Fatalf("the upstream accepted %d connections, want 1 shared by all %d downstream connections", n, conns)
	}
	if n := app.Calls(); n != conns*perConn {
		t.Fatalf("the upstream got %d calls, want %d", n, conns*perConn)
	}
}

// sameIDsConn sends requests 1..n, all at once, on a new connection and
// checks every answer.
func sameIDsConn(addr string, c, n int) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	var out []byte
	for id := 1; id <= n; id++ {
		out, err = mesh.AppendFrame(out, 0, mesh.KindRequest, 0, uint64(id),
			&mesh.Request{Service: "echo", Method: "M", Body: fmt.Appendf(nil, "conn %d request %d", c, id)})
		if err != nil {
			return err
		}
	}
	if _, err := conn.Write(out); err != nil {
		return err
	}
	rd := mesh.NewReader(conn, 0)
	seen := map[uint64]bool{}
	for range n {
		f, err := rd.ReadFrame()
		if err != nil {
			return fmt.Errorf("conn %d: %w", c, err)
		}
		var r mesh.Response
		if f.Kind != mesh.KindResponse || !f.IsResponse() || r.Decode(f.Payload) != nil {
			return fmt.Errorf("conn %d: answer %v %x", c, f.Kind, f.Payload)
		}
		if f.ID < 1 || f.ID > uint64(n) || seen[f.ID] {
			return fmt.Errorf("conn %d: answer with id %d (seen: %v)", c, f.ID, seen[f.ID])
		}
		seen[f.ID] = true
		if want := fmt.Sprintf("conn %d request %d", c, f.ID); string(r.Body) != want {
			return fmt.Errorf("conn %d: answer %d carries %q, want %q", c, f.ID, r.Body, want)
		}
	}
	return nil
}

func TestFailoverToSecondHost(t *testing.T) {
	app := startMeshEcho(t)
	httpApp := startHTTPEcho(t)
	for _, policy := range []string{"round_robin", "least_request"} {
		t.Run(policy, func(t *testing.T) {
			dead := deadAddr(t)
			egress := startProxy(t, Config{
				Ingress: IngressConfig{Listen: Off},
				Clusters: []ClusterConfig{
					{Name: "mesh", LBPolicy: policy, Hosts: []HostConfig{{Address: dead, Weight: 10}, {Address: app.Addr()}}},
					{Name: "http", LBPolicy: policy, Hosts: []HostConfig{{Address: dead, Weight: 10}, {Address: httpApp.Addr()}}},
				},
				Routes: []RouteConfig{{Protocol: "mesh", Cluster: "mesh"}, {Protocol: "http1", Cluster: "http"}},
			})
			c := dialMesh(t, egress.EgressAddr().String())
			for i := range 10 {
				if body, err := call(t, c, "echo", fmt.Sprint(i)); err != nil || body != fmt.Sprint(i) {
					t.Fatalf("call %d: %q, %v", i, body, err)
				}
				resp, body := httpDo(t, "POST", "http://"+egress.EgressAddr().String()+"/x", fmt.Sprint(i))
				if resp.StatusCode != 200 || body != fmt.Sprint(i) {
					t.Fatalf("HTTP call %d: %d %q", i, resp.StatusCode, body)
				}
			}
		})
	}
}

func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

var httpClient = &http.Client{Timeout: 20 * time.Second}

func httpDo(t *testing.T, method, url, body string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// httpError decodes the JSON body of an error the proxy answered.
func httpError(t *testing.T, resp *http.Response, body string) string {
	t.Helper()
	var e struct{ Error, Message string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" || resp.Header.Get("X-Mesh-Error") != e.Error {
		t.Fatalf("status %d, body %q: not a proxy error (%v)", resp.StatusCode, body, err)
	}
	return e.Error
}

// blockingApps returns a mesh app and an HTTP app whose calls never end
// until the servers close, and how many calls each received.
func blockingApps(t *testing.T) (*rpctest.MeshServer, *rpctest.HTTPServer, func() int) {
	t.Helper()
	meshApp, err := rpctest.StartMesh("", func(ctx context.Context, req *mesh.Request) (*mesh.Response, *mesh.Error) {
		<-ctx.Done()
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(meshApp.Close)
	var mu sync.Mutex
	httpCalls := 0
	stop := make(chan struct{})
	httpApp, err := rpctest.StartHTTP("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		httpCalls++
		mu.Unlock()
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(stop); httpApp.Close() })
	return meshApp, httpApp, func() int { mu.Lock(); defer mu.Unlock(); return httpCalls }
}

func TestUpstreamDiesMidRequest(t *testing.T) {
	meshApp, httpApp, httpCalls := blockingApps(t)
	egress := startProxy(t, Config{
		Ingress: IngressConfig{Listen: Off},
		Clusters: []ClusterConfig{{Name: "mesh", Hosts: []HostConfig{{Address: meshApp.Addr()}}},
			{Name: "http", Hosts: []HostConfig{{Address: httpApp.Addr()}}}},
		Routes: []RouteConfig{{Protocol: "mesh", Cluster: "mesh", Timeout: time.Minute}, {Protocol: "http1", Cluster: "http", Timeout: time.Minute}},
	})
	c := dialMesh(t, egress.EgressAddr().String())
	meshDone := make(chan error, 1)
	go func() { _, err := call(t, c, "svc", "x"); meshDone <- err }()
	type httpResult struct {
		resp *http.Response
		body string
	}
	httpDone := make(chan httpResult, 1)
	go func() {
		resp, body := httpDo(t, "GET", "http://"+egress.EgressAddr().String()+"/slow", "")
		httpDone <- httpResult{resp, body}
	}()
	waitFor(t, 10*time.Second, "both calls to reach their apps", func() bool { return meshApp.Calls() == 1 && httpCalls() == 1 })
	start := time.Now()
	meshApp.Close()
	httpApp.Close()
	select {
	case err := <-meshDone:
		if code := meshCode(t, err); code != mesh.CodeUpstreamReset {
			t.Fatalf("mesh caller got %v, want UPSTREAM_RESET", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the mesh call hangs after its upstream died")
	}
	select {
	case r := <-httpDone:
		if r.resp.StatusCode != 502 || httpError(t, r.resp, r.body) != "UPSTREAM_RESET" {
			t.Fatalf("HTTP caller got %d %q, want 502 UPSTREAM_RESET", r.resp.StatusCode, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the HTTP call hangs after its upstream died")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("callers learnt of the reset after %s", d)
	}
}

func TestRouteTimeout(t *testing.T) {
	meshApp, httpApp, _ := blockingApps(t)
	egress := startProxy(t, Config{
		Ingress: IngressConfig{Listen: Off},
		Clusters: []ClusterConfig{{Name: "mesh", Hosts: []HostConfig{{Address: meshApp.Addr()}}},
			{Name: "http", Hosts: []HostConfig{{Address: httpApp.Addr()}}}},
		Routes: []RouteConfig{{Protocol: "mesh", Cluster: "mesh", Timeout: 100 * time.Millisecond},
			{Protocol: "http1", Cluster: "http", Timeout: 100 * time.Millisecond}},
	})
	c := dialMesh(t, egress.EgressAddr().String())
	for i := range 2 { // the connection stays usable after a timeout
		if _, err := call(t, c, "svc", "x"); meshCode(t, err) != mesh.CodeTimeout {
			t.Fatalf("mesh call %d: %v, want TIMEOUT", i, err)
		}
		resp, body := httpDo(t, "GET", "http://"+egress.EgressAddr().String()+"/", "")
		if resp.StatusCode != 504 || httpError(t, resp, body) != "TIMEOUT" {
			t.Fatalf("HTTP call %d: %d %q", i, resp.StatusCode, body)
		}
	}
}

func TestNoRouteAndNoHealthyHost(t *testing.T) {
	egress := startProxy(t, Config{
		Ingress:  IngressConfig{Listen: Off},
		Clusters: []ClusterConfig{{Name: "gone", Hosts: []HostConfig{{Address: deadAddr(t)}, {Address: deadAddr(t)}}}},
		Routes:   []RouteConfig{{Service: "gone", Cluster: "gone"}},
	})
	c := dialMesh(t, egress.EgressAddr().String())
	if _, err := call(t, c, "nowhere", "x"); meshCode(t, err) != mesh.CodeNoRoute {
		t.Fatalf("unknown service: %v", err)
	}
	if _, err := call(t, c, "gone", "x"); meshCode(t, err) != mesh.CodeNoHealthyHost {
		t.Fatalf("dead cluster: %v", err)
	}
	base := "http://" + egress.EgressAddr().String()
	resp, body := httpDo(t, "GET", base+"/", "", "Host", "nowhere")
	if resp.StatusCode != 404 || httpError(t, resp, body) != "NO_ROUTE" {
		t.Fatalf("HTTP unknown host: %d %q", resp.StatusCode, body)
	}
	resp, body = httpDo(t, "GET", base+"/", "", "Host", "Gone:8080")
	if resp.StatusCode != 503 || httpError(t, resp, body) != "NO_HEALTHY_HOST" {
		t.Fatalf("HTTP dead cluster: %d %q", resp.StatusCode, body)
	}
}

func TestIngressFollowsAppHeartbeat(t *testing.T) {
	app := startMeshEcho(t)
	httpApp := startHTTPEcho(t)
	meshAddr, httpAddr := app.Addr(), httpApp.Addr()
	ingress := startProxy(t, Config{Egress: EgressConfig{Listen: Off}, Ingress: IngressConfig{
		App:       map[string]string{"mesh": meshAddr, "http1": httpAddr},
		Heartbeat: HeartbeatConfig{Interval: 20 * time.Millisecond, Timeout: 500 * time.Millisecond, UnhealthyThreshold: 2, HTTPPath: "/healthz"},
	}})
	waitFor(t, 10*time.Second, "the ingress to find the app healthy", ingress.Healthy)
	addr := ingress.IngressAddr().String()
	c := dialMesh(t, addr)
	if body, err := call(t, c, "any", "x"); err != nil || body != "x" {
		t.Fatalf("call through ingress: %q, %v", body, err)
	}

	// The mesh app stops answering heartbeats (it is up but stuck). The
	// HTTP app still answers, so the shared listener stays open: mesh
	// calls get UNAVAILABLE naming the mesh app, HTTP calls go through.
	app.AnswerHeartbeats(false)
	waitFor(t, 10*time.Second, "the ingress to find the mesh app unhealthy", func() bool { return !ingress.Healthy() })
	_, err := call(t, c, "any", "x")
	if meshCode(t, err) != mesh.CodeUnavailable || !strings.Contains(err.Error(), meshAddr) {
		t.Fatalf("mesh call while the mesh app is unhealthy: %v, want UNAVAILABLE naming %s", err, meshAddr)
	}
	if refuses(addr) {
		t.Fatal("the ingress listener closed although the HTTP app answers")
	}
	if resp, body := httpDo(t, "POST", "http://"+addr+"/p", "h"); resp.StatusCode != 200 || body != "h" {
		t.Fatalf("HTTP call while only the mesh app is unhealthy: %d %q", resp.StatusCode, body)
	}

	// The HTTP app dies too: no protocol answers, the listener closes.
	httpApp.Close()
	waitFor(t, 10*time.Second, "the ingress listener to refuse connections", func() bool { return refuses(addr) })

	// The mesh app answers again: the listener reopens; HTTP calls get
	// UNAVAILABLE naming the HTTP app, not the mesh one.
	app.AnswerHeartbeats(true)
	waitFor(t, 10*time.Second, "the ingress listener to accept again", func() bool { return !refuses(addr) })
	c2 := dialMesh(t, addr)
	if body, err := call(t, c2, "any", "y"); err != nil || body != "y" {
		t.Fatalf("mesh call after recovery: %q, %v", body, err)
	}
	resp, body := httpDo(t, "POST", "http://"+addr+"/p", "z")
	if resp.StatusCode != 503 || httpError(t, resp, body) != "UNAVAILABLE" || !strings.Contains(body, httpAddr) || strings.Contains(body, meshAddr) {
		t.Fatalf("HTTP call while the HTTP app is down: %d %q, want 503 UNAVAILABLE naming %s", resp.StatusCode, body, httpAddr)
	}

	// The HTTP app comes back on the same address.
	back, err := rpctest.StartHTTP(httpAddr, nil)
	if err != nil {
		t.Fatalf("restarting the HTTP app on %s: %v", httpAddr, err)
	}
	t.Cleanup(back.Close)
	waitFor(t, 10*time.Second, "the ingress to find the HTTP app back", ingress.Healthy)
	resp, body = httpDo(t, "POST", "http://"+addr+"/p", "z")
	if resp.StatusCode != 200 || body != "z" {
		t.Fatalf("HTTP call after recovery: %d %q", resp.StatusCode, body)
	}
}

// refuses reports whether a connect to addr is refused.
func refuses(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// TestEgressFailsOverFromUnhealthyIngress: two sidecars serve the same
// service; when one's app stops, egress calls keep succeeding on the other.
func TestEgressFailsOverFromUnhealthyIngress(t *testing.T) {
	appA, appB := startMeshEcho(t), startMeshEcho(t)
	inA := startProxy(t, Config{Egress: EgressConfig{Listen: Off}, Ingress: IngressConfig{App: map[string]string{"mesh": appA.Addr()}, Heartbeat: testHeartbeat}})
	inB := startProxy(t, Config{Egress: EgressConfig{Listen: Off}, Ingress: IngressConfig{App: map[string]string{"mesh": appB.Addr()}, Heartbeat: testHeartbeat}})
	waitFor(t, 10*time.Second, "both sidecars to find their apps healthy", func() bool { return inA.Healthy() && inB.Healthy() })
	egress := startProxy(t, Config{
		Ingress:  IngressConfig{Listen: Off},
		Clusters: []ClusterConfig{{Name: "svc", Hosts: []HostConfig{{Address: inA.IngressAddr().String()}, {Address: inB.IngressAddr().String()}}}},
		Routes:   []RouteConfig{{Cluster: "svc"}},
	})
	c := dialMesh(t, egress.EgressAddr().String())
	for i := range 10 {
		if _, err := call(t, c, "svc", "x"); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if appA.Calls() == 0 || appB.Calls() == 0 {
		t.Fatalf("calls not spread: %d and %d", appA.Calls(), appB.Calls())
	}
	appA.AnswerHeartbeats(false)
	waitFor(t, 10*time.Second, "sidecar A to find its app unhealthy", func() bool { return !inA.Healthy() })
	before := appA.Calls()
	for i := range 20 {
		if body, err := call(t, c, "svc", fmt.Sprint(i)); err != nil || body != fmt.Sprint(i) {
			t.Fatalf("call %d with one sidecar unhealthy: %q, %v", i, body, err)
		}
	}
	if appA.Calls() != before {
		t.Fatalf("the unhealthy sidecar's app got %d calls", appA.Calls()-before)
	}
}

func TestHTTPThroughSidecars(t *testing.T) {
	app := startHTTPEcho(t)
	egress, _ := sidecarPair(t, map[string]string{"http1": app.Addr()})
	base := "http://" + egress.EgressAddr().String()

	resp, body := httpDo(t, "GET", base+"/a/b?c=d", "", "Host", "Echo.Example")
	if resp.StatusCode != 200 || resp.Header.Get("X-Echo-Path") != "/a/b" || resp.Header.Get("X-Echo-Host") != "Echo.Example" || resp.Header.Get("X-Echo-Method") != "GET" {
		t.Fatalf("GET: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	big := strings.Repeat("0123456789", 50000)
	resp, body = httpDo(t, "PUT", base+"/big", big, "Content-Type", "application/octet-stream")
	if resp.StatusCode != 200 || body != big || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("PUT 500 kB: %d, %d bytes back", resp.StatusCode, len(body))
	}
	resp, body = httpDo(t, "HEAD", base+"/h", "")
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("X-Echo-Method") != "HEAD" {
		t.Fatalf("HEAD: %d %q %v", resp.StatusCode, body, resp.Header)
	}

	// A chunked request body, and three pipelined requests on one
	// connection, answered in order.
	conn, err := net.Dial("tcp", egress.EgressAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	_, err = conn.Write([]byte("POST /1 HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n0\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: echo\r\nContent-Length: 3\r\n\r\ntwo" +
		"GET /3 HTTP/1.0\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for _, want := range []string{"/1", "/2", "/3"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("X-Echo-Path") != want {
			t.Fatalf("pipelined answer for %s: %d %v %q", want, resp.StatusCode, resp.Header, b)
		}
		if want == "/1" && string(b) != "one" || want == "/2" && string(b) != "two" {
			t.Fatalf("pipelined answer for %s: body %q", want, b)
		}
	}
	// The HTTP/1.0 request without keep-alive closes the connection.
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after an HTTP/1.0 request: %v, want EOF", err)
	}
}

func TestHTTPLimits(t *testing.T) {
	app := startHTTPEcho(t)
	egress := startProxy(t, Config{
		Ingress:        IngressConfig{Listen: Off},
		MaxHeaderBytes: 1024, MaxBodyBytes: 4096,
		Clusters: []ClusterConfig{{Name: "echo", Hosts: []HostConfig{{Address: app.Addr()}}}},
		Routes:   []RouteConfig{{Cluster: "echo"}},
	})
	base := "http://" + egress.EgressAddr().String()
	resp, body := httpDo(t, "GET", base+"/", "", "X-Big", strings.Repeat("v", 2000))
	if resp.StatusCode != 431 || httpError(t, resp, body) != "HEADER_TOO_LARGE" {
		t.Fatalf("big header: %d %q", resp.StatusCode, body)
	}
	resp, body = httpDo(t, "POST", base+"/", strings.Repeat("b", 5000))
	if resp.StatusCode != 413 || httpError(t, resp, body) != "TOO_LARGE" {
		t.Fatalf("big body: %d %q", resp.StatusCode, body)
	}
	resp, body = httpDo(t, "POST", base+"/", strings.Repeat("b", 4000))
	if resp.StatusCode != 200 || len(body) != 4000 {
		t.Fatalf("body within the limit: %d, %d bytes", resp.StatusCode, len(body))
	}
}

func TestRouteLimits(t *testing.T) {
	release := make(chan struct{})
	app, err := rpctest.StartMesh("", func(ctx context.Context, req *mesh.Request) (*mesh.Response, *mesh.Error) {
		if string(req.Body) == "hold" {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return &mesh.Response{Body: req.Body}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	egress := startProxy(t, Config{
		Ingress:  IngressConfig{Listen: Off},
		Clusters: []ClusterConfig{{Name: "app", Hosts: []HostConfig{{Address: app.Addr()}}}},
		Routes: []RouteConfig{
			{Name: "one-at-a-time", Service: "serial", Cluster: "app", MaxConcurrent: 1},
			{Name: "slow-rate", Service: "rated", Cluster: "app", RateLimit: 0.01, Burst: 2},
		},
	})
	c := dialMesh(t, egress.EgressAddr().String())
	held := make(chan error, 1)
	go func() { _, err := call(t, c, "serial", "hold"); held <- err }()
	waitFor(t, 10*time.Second, "the first call to reach the app", func() bool { return app.Calls() == 1 })
	if _, err := call(t, c, "serial", "x"); meshCode(t, err) != mesh.CodeRateLimited {
		t.Fatalf("second concurrent call: %v, want RATE_LIMITED", err)
	}
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, c, "serial", "x"); err != nil {
		t.Fatalf("after the first call ended: %v", err)
	}
	for i := range 2 {
		if _, err := call(t, c, "rated", "x"); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	if _, err := call(t, c, "rated", "x"); meshCode(t, err) != mesh.CodeRateLimited {
		t.Fatalf("call over the rate: %v, want RATE_LIMITED", err)
	}
}

// exchangeLog is a stage that keeps what it saw.
type exchangeLog struct {
	mu   sync.Mutex
	seen []stream.Exchange
	tp   []string
}

func (l *exchangeLog) OnExchangeDone(x *stream.Exchange) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tp, _ := x.Headers.Get("traceparent")
	c := *x
	c.Headers, c.Ctx = nil, nil
	l.seen = append(l.seen, c)
	l.tp = append(l.tp, tp)
}

func TestStagesSeeEveryExchange(t *testing.T) {
	app := startMeshEcho(t)
	httpApp := startHTTPEcho(t)
	log := &exchangeLog{}
	egress := startProxy(t, Config{
		Ingress:  IngressConfig{Listen: Off},
		Stages:   []pipeline.Stage{log},
		Clusters: []ClusterConfig{{Name: "m", Hosts: []HostConfig{{Address: app.Addr()}}}, {Name: "h", Hosts: []HostConfig{{Address: httpApp.Addr()}}}},
		Routes:   []RouteConfig{{Name: "mesh-route", Service: "svc", Cluster: "m"}, {Name: "http-route", PathPrefix: "/api/", Cluster: "h"}},
	})
	c := dialMesh(t, egress.EgressAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, "svc", "Get", []mesh.HeaderField{{Key: "traceparent", Value: "00-aa-bb-01"}}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	resp, _ := httpDo(t, "GET", "http://"+egress.EgressAddr().String()+"/api/v1", "", "traceparent", "00-cc-dd-01")
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	resp, _ = httpDo(t, "GET", "http://"+egress.EgressAddr().String()+"/other", "")
	if resp.StatusCode != 404 {
		t.Fatal(resp.Status)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.seen) != 3 {
		t.Fatalf("stage saw %d exchanges, want 3", len(log.seen))
	}
	m, h, miss := log.seen[0], log.seen[1], log.seen[2]
	if m.Kind != stream.ExchangeRPC || m.Listener != "egress" || m.Protocol != "mesh" || m.Route != "mesh-route" || m.Target != "svc" || m.Path != "Get" ||
		m.Cluster != "m" || m.Upstream != app.Addr() || m.Status != 200 || m.ReqBytes == 0 || m.RespBytes == 0 || log.tp[0] != "00-aa-bb-01" {
		t.Fatalf("mesh exchange %+v, traceparent %q", m, log.tp[0])
	}
	if h.Protocol != "http1" || h.Route != "http-route" || h.Path != "/api/v1" || h.Status != 200 || log.tp[1] != "00-cc-dd-01" {
		t.Fatalf("HTTP exchange %+v, traceparent %q", h, log.tp[1])
	}
	if miss.Route != "" || miss.Status != 404 || miss.Err == nil {
		t.Fatalf("unrouted exchange %+v", miss)
	}
	if s := egress.Metrics().Stats(stream.ExchangeRPC, "egress", "mesh-route"); s.Requests.Load() != 1 || s.ByClass[2].Load() != 1 {
		t.Fatalf("metrics of mesh-route: %d requests", s.Requests.Load())
	}
}

func TestShutdownFinishesCallsInFlight(t *testing.T) {
	release := make(chan struct{})
	app, err := rpctest.StartMesh("", func(ctx context.Context, req *mesh.Request) (*mesh.Response, *mesh.Error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &mesh.Response{Body: req.Body}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	p, err := New(Config{
		Egress:   EgressConfig{Listen: "127.0.0.1:0"},
		Ingress:  IngressConfig{Listen: Off},
		Clusters: []ClusterConfig{{Name: "app", Hosts: []HostConfig{{Address: app.Addr()}}}},
		Routes:   []RouteConfig{{Cluster: "app"}},
	}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	addr := p.EgressAddr().String()
	c := dialMesh(t, addr)
	inFlight := make(chan error, 1)
	go func() { _, err := call(t, c, "svc", "late"); inFlight <- err }()
	waitFor(t, 10*time.Second, "the call to reach the app", func() bool { return app.Calls() == 1 })

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- p.Shutdown(ctx)
	}()
	waitFor(t, 10*time.Second, "the egress listener to close", func() bool { return refuses(addr) })
	close(release)
	if err := <-inFlight; err != nil {
		t.Fatalf("the call in flight during shutdown: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

func TestShutdownDeadlineFailsCalls(t *testing.T) {
	app, _, _ := blockingApps(t)
	p, err := New(Config{
		Egress:   EgressConfig{Listen: "127.0.0.1:0"},
		Ingress:  IngressConfig{Listen: Off},
		Clusters: []ClusterConfig{{Name: "app", Hosts: []HostConfig{{Address: app.Addr()}}}},
		Routes:   []RouteConfig{{Cluster: "app", Timeout: time.Minute}},
	}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := dialMesh(t, p.EgressAddr().String())
	inFlight := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := c.Call(ctx, "svc", "M", nil, nil)
		inFlight <- err
	}()
	waitFor(t, 10*time.Second, "the call to reach the app", func() bool { return app.Calls() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown past its deadline: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Shutdown took %s with a 100ms deadline", d)
	}
	// The caller gets a typed error or sees its connection close; it
	// never hangs.
	if err := <-inFlight; err == nil {
		t.Fatal("the call in flight succeeded")
	} else if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("the call in flight hung")
	}
}

func TestConfig(t *testing.T) {
	ok := ClusterConfig{Name: "c", Hosts: []HostConfig{{Address: "127.0.0.1:1"}}}
	bad := map[string]Config{
		"egress address":   {Egress: EgressConfig{Listen: "nope"}},
		"app protocol":     {Ingress: IngressConfig{App: map[string]string{"grpc": "127.0.0.1:1"}}},
		"app address":      {Ingress: IngressConfig{App: map[string]string{"mesh": "x"}}},
		"health path":      {Ingress: IngressConfig{Heartbeat: HeartbeatConfig{HTTPPath: "healthz"}}},
		"cluster name":     {Clusters: []ClusterConfig{{Hosts: ok.Hosts}}},
		"duplicate":        {Clusters: []ClusterConfig{ok, ok}},
		"no hosts":         {Clusters: []ClusterConfig{{Name: "c"}}},
		"host address":     {Clusters: []ClusterConfig{{Name: "c", Hosts: []HostConfig{{Address: "c"}}}}},
		"weight":           {Clusters: []ClusterConfig{{Name: "c", Hosts: []HostConfig{{Address: "h:1", Weight: -2}}}}},
		"policy":           {Clusters: []ClusterConfig{{Name: "c", LBPolicy: "random", Hosts: ok.Hosts}}},
		"route cluster":    {Routes: []RouteConfig{{Cluster: "missing"}}},
		"route no cluster": {Clusters: []ClusterConfig{ok}, Routes: []RouteConfig{{Service: "s"}}},
		"route protocol":   {Clusters: []ClusterConfig{ok}, Routes: []RouteConfig{{Cluster: "c", Protocol: "grpc"}}},
		"route names":      {Clusters: []ClusterConfig{ok}, Routes: []RouteConfig{{Name: "r", Cluster: "c"}, {Name: "r", Cluster: "c"}}},
		"route timeout":    {Clusters: []ClusterConfig{ok}, Routes: []RouteConfig{{Cluster: "c", Timeout: -1}}},
	}
	for name, cfg := range bad {
		if _, err := New(cfg, testLog()); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	p, err := New(Config{}, testLog())
	if err != nil {
		t.Fatalf("zero config: %v", err)
	}
	if p.cfg.Egress.Listen != DefaultEgressListen || p.cfg.Ingress.Listen != DefaultIngressListen || p.ingressEnabled() || !p.Healthy() {
		t.Fatalf("zero config defaults: %+v", p.cfg)
	}
	p, err = New(Config{Clusters: []ClusterConfig{ok}, Routes: []RouteConfig{{Service: "s", PathPrefix: "/p", Cluster: "c"}, {Service: "s", PathPrefix: "/p", Cluster: "c"}, {Cluster: "c"}}}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{p.routes[0].name, p.routes[1].name, p.routes[2].name}; got[0] != "s/p" || got[1] != "route-1" || got[2] != "route-2" || p.routes[0].timeout != DefaultRouteTimeout {
		t.Fatalf("route names %v, timeout %s", got, p.routes[0].timeout)
	}
	_ = p.Shutdown(context.Background())
}

// A connection that speaks neither protocol is closed.
func TestUnknownProtocolClosed(t *testing.T) {
	egress := startProxy(t, Config{Ingress: IngressConfig{Listen: Off}})
	conn, err := net.Dial("tcp", egress.EgressAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = conn.Write([]byte("\x16\x03\x01 TLS hello"))
	if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read: %v, want EOF", err)
	}
}
