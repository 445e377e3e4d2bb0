package msgmesh_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
	"github.com/msgmesh/msgmesh/topology"
)

// testLogger keeps test output quiet unless MSGMESH_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("MSGMESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// scaled stretches a wait bound under the race detector, which slows
// everything down several times.
func scaled(d time.Duration) time.Duration {
	if raceEnabled {
		return 4 * d
	}
	return d
}

// waitFor polls cond until it holds, and fails t if the (race-scaled)
// timeout passes first.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitUntil(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", scaled(timeout), what)
	}
}

// waitUntil polls cond until it holds or the (race-scaled) timeout
// passes, and reports whether it held.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(scaled(timeout))
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// env is one sidecar on a real embedded JetStream server, with its mesh
// and HTTP listeners on loopback ports.
type env struct {
	t    testing.TB
	sc   *msgmesh.Sidecar
	addr string
	http string
}

// newEnv starts a NATS server and a sidecar on it; both stop in t.Cleanup.
func newEnv(t testing.TB, tweak ...func(*msgmesh.Config)) *env {
	t.Helper()
	return newEnvOn(t, natsCluster(t), tweak...)
}

// natsCluster starts an embedded JetStream server for the test and
// describes it as a cluster.
func natsCluster(t testing.TB) topology.Cluster {
	emb := natstest.Start(t)
	return topology.Cluster{Name: "nats", Kind: topology.KindNATS, Endpoints: []string{emb.ClientURL()}}
}

// newEnvOn starts a sidecar on the cluster c describes, opened the way the
// msgmesh binary opens it; everything stops in t.Cleanup.
func newEnvOn(t testing.TB, c topology.Cluster, tweak ...func(*msgmesh.Config)) *env {
	t.Helper()
	b, err := brokers.Open(context.Background(), c, testLogger())
	if err != nil {
		t.Fatalf("open %s cluster: %v", c.Kind, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return newEnvWith(t, b, tweak...)
}

// newEnvWith starts a sidecar on b; it stops in t.Cleanup.
func newEnvWith(t testing.TB, b broker.Broker, tweak ...func(*msgmesh.Config)) *env {
	t.Helper()
	cfg := msgmesh.Config{
		DataDir:    t.TempDir(),
		Listen:     "127.0.0.1:0",
		HTTPListen: "127.0.0.1:0",
		Broker:     b,
		Logger:     testLogger(),
	}
	for _, f := range tweak {
		f(&cfg)
	}
	sc, err := msgmesh.New(cfg)
	if err != nil {
		t.Fatalf("msgmesh.New: %v", err)
	}
	if err := sc.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sc.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return &env{t: t, sc: sc, addr: sc.Addr().String(), http: sc.HTTPAddr().String()}
}

// register POSTs a registration and fails the test unless it is stored.
func (e *env) register(app string, produce, consume []string) {
	e.t.Helper()
	status, body := registerAt(e.t, e.http, app, produce, consume)
	if status != http.StatusCreated {
		e.t.Fatalf("register %s: HTTP %d: %s", app, status, body)
	}
}

func registerAt(t testing.TB, httpAddr, app string, produce, consume []string) (int, string) {
	t.Helper()
	return registerAuth(t, httpAddr, app, "", produce, consume)
}

// registerAuth is registerAt presenting secret (Authorization: Bearer)
// when it is not empty.
func registerAuth(t testing.TB, httpAddr, app, secret string, produce, consume []string) (int, string) {
	t.Helper()
	reg := registry.Registration{App: app}
	for _, s := range produce {
		b, err := registry.ParseBinding(s)
		if err != nil {
			t.Fatal(err)
		}
		reg.Produce = append(reg.Produce, b)
	}
	for _, s := range consume {
		b, err := registry.ParseConsumeBinding(s) // "g:t" or "g:t,max_attempts=3,..."
		if err != nil {
			t.Fatal(err)
		}
		reg.Consume = append(reg.Consume, b)
	}
	body, _ := json.Marshal(reg)
	return httpDo(t, http.MethodPost, "http://"+httpAddr+"/v1/registrations", "application/json", body, bearerHeader(secret)...)
}

// bearerHeader is the Authorization header of an app secret, for httpDo;
// none for "".
func bearerHeader(secret string) []string {
	if secret == "" {
		return nil
	}
	return []string{"Authorization", "Bearer " + secret}
}

// httpDo sends one request with the given headers (name, value pairs) and
// returns the status and body.
func httpDo(t testing.TB, method, url, ctype string, body []byte, headers ...string) (int, string) {
	t.Helper()
	h := http.Header{}
	if ctype != "" {
		h.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Set(headers[i], headers[i+1])
	}
	return httpDoHeader(t, method, url, h, body)
}

// httpDoHeader sends a request with the headers h; a "Host" in h replaces
// the Host header the URL implies.
func httpDoHeader(t testing.TB, method, url string, h http.Header, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if host := h.Get("Host"); host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type upstream struct {
	Group   string `json:"group"`
	Topic   string `json:"topic"`
	Running bool   `json:"running"`
	Error   string `json:"error"`
}

// upstreams lists the sidecar's upstream consumers through the HTTP API.
func upstreamsAt(t testing.TB, httpAddr string) map[string]bool {
	t.Helper()
	status, body := httpDo(t, http.MethodGet, "http://"+httpAddr+"/v1/upstreams", "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /v1/upstreams: %d %s", status, body)
	}
	var us []upstream
	if err := json.Unmarshal([]byte(body), &us); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, u := range us {
		out[u.Group+":"+u.Topic] = u.Running
	}
	return out
}

// testApp is the app most tests register and connect as; dial and hello
// use it unless told otherwise.
const testApp = "orders"

// dial connects an SDK client to the sidecar, as testApp unless opts say
// WithApp; it closes in t.Cleanup.
func (e *env) dial(opts ...client.Option) *client.Client {
	e.t.Helper()
	return dialAt(e.t, e.addr, opts...)
}

func dialAt(t testing.TB, addr string, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts = append([]client.Option{client.WithApp(testApp), client.WithLogger(testLogger()), client.WithReconnectBackoff(10*time.Millisecond, 200*time.Millisecond)}, opts...)
	c, err := client.Dial(ctx, addr, opts...)
	if err != nil {
		t.Fatalf("client.Dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// publishN publishes n messages with bodies "<prefix>-<i>" through c,
// keeping up to window in flight, and fails the test on any error.
func publishN(t testing.TB, c *client.Client, topic, prefix string, n, window int) {
	t.Helper()
	publishEach(t, c, n, window, func(i int) *client.Message {
		return &client.Message{Topic: topic, Body: []byte(fmt.Sprintf("%s-%d", prefix, i))}
	})
}

// publishEach publishes msg(i) for i < n through c, keeping up to window
// in flight, and fails the test on any error.
func publishEach(t testing.TB, c *client.Client, n, window int, msg func(i int) *client.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scaled(60*time.Second))
	defer cancel()
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		c.PublishAsync(ctx, msg(i), func(_ client.PublishAck, err error) {
			defer wg.Done()
			<-sem
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("publish: %v", firstErr)
	}
}

// tally counts deliveries per body and per consumer.
type tally struct {
	mu     sync.Mutex
	bodies map[string]int
	by     map[string]int
	total  int
}

func newTally() *tally { return &tally{bodies: map[string]int{}, by: map[string]int{}} }

func (t *tally) add(who, body string) {
	t.mu.Lock()
	t.bodies[body]++
	t.by[who]++
	t.total++
	t.mu.Unlock()
}

func (t *tally) distinct() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.bodies)
}

func (t *tally) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// exactlyOnce fails unless every "<prefix>-<i>" for i < n was seen once.
func (t *tally) exactlyOnce(tb testing.TB, prefix string, n int) {
	tb.Helper()
	t.mu.Lock()
	defer t.mu.Unlock()
	var missing, dup int
	for i := 0; i < n; i++ {
		switch c := t.bodies[fmt.Sprintf("%s-%d", prefix, i)]; {
		case c == 0:
			missing++
		case c > 1:
			dup++
		}
	}
	if missing != 0 || dup != 0 || len(t.bodies) != n {
		tb.Fatalf("want each of %d messages once: %d missing, %d duplicated, %d distinct bodies", n, missing, dup, len(t.bodies))
	}
}

// rawConn speaks the mesh protocol by hand, for tests of what the SDK
// would never send.
type rawConn struct {
	t   testing.TB
	c   net.Conn
	rd  *mesh.Reader
	ids uint64
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c, rd: mesh.NewReader(c, 0)}
}

func (r *rawConn) send(kind mesh.Kind, flags mesh.Flags, id uint64, p mesh.Encoder) {
	r.t.Helper()
	b, err := mesh.AppendFrame(nil, 0, kind, flags, id, p)
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(b)
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// request sends a request and returns the frame answering it, skipping
// any DELIVER requests that arrive first.
func (r *rawConn) request(kind mesh.Kind, p mesh.Encoder) mesh.Frame {
	r.t.Helper()
	r.ids++
	r.send(kind, 0, r.ids, p)
	for {
		f := r.read()
		if f.IsResponse() && f.ID == r.ids {
			return f
		}
	}
}

func (r *rawConn) read() mesh.Frame {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(scaled(10 * time.Second)))
	f, err := r.rd.ReadFrame()
	if err != nil {
		r.t.Fatalf("read frame: %v", err)
	}
	return f
}

// wantError fails unless f is an ERROR with the given code.
func wantError(t testing.TB, f mesh.Frame, code mesh.Code) mesh.Error {
	t.Helper()
	if f.Kind != mesh.KindError {
		t.Fatalf("got %s, want ERROR %s", f.Kind, code)
	}
	var e mesh.Error
	if err := e.Decode(f.Payload); err != nil {
		t.Fatal(err)
	}
	if e.Code != code {
		t.Fatalf("got ERROR %s (%q), want %s", e.Code, e.Message, code)
	}
	if strings.TrimSpace(e.Message) == "" {
		t.Fatalf("ERROR %s without a message", e.Code)
	}
	return e
}

// hello says HELLO as testApp and DECLAREs subs, failing on any error
// answer.
func (r *rawConn) hello(subs ...mesh.Subscription) {
	r.t.Helper()
	r.helloAs(testApp, "", subs...)
}

// helloAs is hello as app, with its secret if not empty.
func (r *rawConn) helloAs(app, secret string, subs ...mesh.Subscription) {
	r.t.Helper()
	if f := r.request(mesh.KindHello, &mesh.Hello{App: app, Secret: secret}); f.Kind != mesh.KindOK {
		var e mesh.Error
		_ = e.Decode(f.Payload)
		r.t.Fatalf("HELLO as %s answered %s %v", app, f.Kind, e)
	}
	if len(subs) > 0 {
		if f := r.request(mesh.KindDeclare, &mesh.Declare{Subs: subs}); f.Kind != mesh.KindOK {
			var e mesh.Error
			_ = e.Decode(f.Payload)
			r.t.Fatalf("DECLARE answered %s %v", f.Kind, e)
		}
	}
}

func decodeRegs(t testing.TB, body string) []registry.Registration {
	t.Helper()
	var regs []registry.Registration
	if err := json.Unmarshal([]byte(body), &regs); err != nil {
		t.Fatalf("decode registrations %q: %v", body, err)
	}
	return regs
}
