package msgmesh_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
	"github.com/msgmesh/msgmesh/topology"
)

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
	return newEnvOn(t, sidecartest.NATSCluster(t), tweak...)
}

// newEnvOn starts a sidecar on the cluster c describes, opened the way the
// msgmesh binary opens it; everything stops in t.Cleanup.
func newEnvOn(t testing.TB, c topology.Cluster, tweak ...func(*msgmesh.Config)) *env {
	t.Helper()
	b, err := brokers.Open(context.Background(), c, sidecartest.Logger())
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
		Logger:     sidecartest.Logger(),
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
	status, body := sidecartest.Register(e.t, e.http, app, produce, consume)
	if status != http.StatusCreated {
		e.t.Fatalf("register %s: HTTP %d: %s", app, status, body)
	}
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
	status, body := sidecartest.HTTPDo(t, http.MethodGet, "http://"+httpAddr+"/v1/upstreams", "", nil)
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

// dial connects an SDK client to the sidecar, as sidecartest.App unless opts say
// WithApp; it closes in t.Cleanup.
func (e *env) dial(opts ...client.Option) *client.Client {
	e.t.Helper()
	return sidecartest.Dial(e.t, e.addr, opts...)
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
	_ = r.c.SetReadDeadline(time.Now().Add(sidecartest.Scaled(10 * time.Second)))
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

// hello says HELLO as sidecartest.App and DECLAREs subs, failing on any error
// answer.
func (r *rawConn) hello(subs ...mesh.Subscription) {
	r.t.Helper()
	r.helloAs(sidecartest.App, "", subs...)
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
