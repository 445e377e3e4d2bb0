package msgmesh_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/internal/syncbuf"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// subscribeTally subscribes c to (group, topic) and counts what arrives.
func subscribeTally(t *testing.T, c *client.Client, group string) *sidecartest.Tally {
	t.Helper()
	got := sidecartest.NewTally()
	if _, err := c.Subscribe(context.Background(), group, topic, func(_ context.Context, d *client.Delivery) error {
		got.Add("sub", string(d.Body))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// readUntilClosed reads frames from c until the sidecar closes it and
// returns them; it fails the test if c is still open after bound.
func readUntilClosed(t *testing.T, c net.Conn, bound time.Duration) []mesh.Frame {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(sidecartest.Scaled(bound)))
	rd := mesh.NewReader(c, 0)
	var fs []mesh.Frame
	for {
		f, err := rd.ReadFrame()
		if err == nil {
			f.Payload = append([]byte(nil), f.Payload...)
			fs = append(fs, f)
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %s (%d frames read)", sidecartest.Scaled(bound), len(fs))
		}
		return fs
	}
}

// TestHelloTimeout: a connection that says nothing is told why and closed
// after Config.HelloTimeout, not after the idle timeout; one that said
// HELLO at the same moment stays.
func TestHelloTimeout(t *testing.T) {
	e := newEnv(t, func(c *msgmesh.Config) { c.HelloTimeout = 300 * time.Millisecond; c.IdleTimeout = time.Hour })
	e.register("orders", []string{"p1:" + topic}, nil)
	silent := dialRaw(t, e.addr)
	talker := dialRaw(t, e.addr)
	if f := talker.request(mesh.KindHello, &mesh.Hello{App: "orders"}); f.Kind != mesh.KindOK {
		t.Fatalf("HELLO answered %s", f.Kind)
	}

	fs := readUntilClosed(t, silent.c, 10*time.Second)
	if len(fs) != 1 || fs[0].ID != 0 {
		t.Fatalf("silent connection got %d frames before the close, want one connection-level ERROR", len(fs))
	}
	if e := wantError(t, fs[0], mesh.CodeTimeout); !strings.Contains(e.Message, "HELLO") {
		t.Fatalf("ERROR message %q does not say HELLO was missing", e.Message)
	}
	if f := talker.request(mesh.KindHeartbeat, nil); f.Kind != mesh.KindHeartbeat {
		t.Fatalf("the connection that said HELLO: HEARTBEAT answered %s", f.Kind)
	}
}

// TestIdleTimeout: a connection that said HELLO and then nothing is
// closed once Config.IdleTimeout has passed since its last frame (the read
// loop rounds the deadline up by at most a 64th of it), not before; frames
// keep it open meanwhile.
func TestIdleTimeout(t *testing.T) {
	const idle = 600 * time.Millisecond
	e := newEnv(t, func(c *msgmesh.Config) { c.IdleTimeout = idle })
	e.register("orders", []string{"p1:" + topic}, nil)
	c := dialRaw(t, e.addr)
	if f := c.request(mesh.KindHello, &mesh.Hello{App: "orders"}); f.Kind != mesh.KindOK {
		t.Fatalf("HELLO answered %s", f.Kind)
	}
	// Frames for longer than the idle timeout keep the connection open.
	for start := time.Now(); time.Since(start) < 2*idle; {
		if f := c.request(mesh.KindHeartbeat, nil); f.Kind != mesh.KindHeartbeat {
			t.Fatalf("HEARTBEAT answered %s", f.Kind)
		}
	}
	last := time.Now()
	readUntilClosed(t, c.c, 10*time.Second)
	if quiet := time.Since(last); quiet < idle {
		t.Fatalf("closed %s after the last frame, before the idle timeout (%s)", quiet, idle)
	}
}

// TestConnLimit: past Config.MaxConns a new app is refused with ERROR
// UNAVAILABLE naming the limit, the connections already served keep
// publishing and consuming, and a slot freed is taken by the next app.
func TestConnLimit(t *testing.T) {
	logs := &syncbuf.Buffer{}
	e := newEnv(t, func(c *msgmesh.Config) {
		c.MaxConns = 2
		c.HelloTimeout = 500 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	app := client.WithApp("orders")
	sub, pub := e.dial(app), e.dial(app)
	got := subscribeTally(t, sub, "g1")

	// The SDK reports the refusal as a typed, retryable error.
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(10*time.Second))
	_, err := client.Dial(ctx, e.addr, app, client.WithLogger(sidecartest.Logger()))
	cancel()
	if client.CodeOf(err) != mesh.CodeUnavailable || !strings.Contains(err.Error(), "max_conns") || !mesh.CodeUnavailable.Retryable() {
		t.Fatalf("third connection: %v; want ERROR UNAVAILABLE naming max_conns", err)
	}
	// A connection past the limit that sends nothing hears it too, as a
	// connection-level ERROR, and is closed.
	fs := readUntilClosed(t, dialRaw(t, e.addr).c, 10*time.Second)
	if len(fs) != 1 || fs[0].ID != 0 {
		t.Fatalf("silent refused connection got %d frames, want one connection-level ERROR", len(fs))
	}
	wantError(t, fs[0], mesh.CodeUnavailable)

	sidecartest.PublishN(t, pub, topic, "m", 50, 16)
	sidecartest.WaitFor(t, 30*time.Second, "every message to arrive", func() bool { return got.Distinct() == 50 })

	_ = pub.Close()
	_ = dialWhenFree(t, e.addr, app) // a new app takes the freed slot
	if l := logs.String(); strings.Count(l, "connection limit reached; refusing") != 1 {
		t.Fatalf("want one warning when refusing starts, logs:\n%s", l)
	}
}

// TestRegistrationLimits: registrations and upstream consumers past their
// limits are refused with 409 LIMIT_EXCEEDED naming the knob; changes that
// do not add past a limit pass; a warning comes as the counts near it.
func TestRegistrationLimits(t *testing.T) {
	logs := &syncbuf.Buffer{}
	e := newEnv(t, func(c *msgmesh.Config) {
		c.MaxRegistrations = 3
		c.MaxUpstreams = 4
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	consume := func(groups ...string) []string {
		var bs []string
		for _, g := range groups {
			bs = append(bs, g+":"+topic)
		}
		return bs
	}
	e.register("a", nil, consume("a1", "a2"))
	e.register("b", nil, consume("b1", "b2"))
	refused := func(app string, consume []string, knob string) {
		t.Helper()
		status, body := sidecartest.Register(t, e.http, app, []string{"p:" + topic}, consume)
		if status != http.StatusConflict || !strings.Contains(body, `"LIMIT_EXCEEDED"`) || !strings.Contains(body, knob) {
			t.Fatalf("register %s: HTTP %d %s; want 409 LIMIT_EXCEEDED naming %s", app, status, body, knob)
		}
	}
	refused("c", consume("c1"), "max_upstreams")
	e.register("c", []string{"p:" + topic}, nil) // needs no upstream consumer
	refused("d", nil, "max_registrations")
	e.register("a", nil, consume("a1"))       // replacing: no new registration, fewer upstreams
	e.register("c", nil, consume("b1", "c1")) // b1 is shared: 4 upstreams
	refused("c", consume("b1", "c1", "c2"), "max_upstreams")
	if n := len(upstreamsAt(t, e.http)); n != 4 {
		t.Fatalf("%d upstream consumers running, want 4", n)
	}

	// The Go API returns the typed error.
	_, _, err := e.sc.Register(context.Background(), registry.Registration{App: "d", Produce: []registry.Binding{{Group: "p", Topic: topic}}}, "")
	var le *msgmesh.LimitError
	if !errors.As(err, &le) || !errors.Is(err, msgmesh.ErrLimit) || le.Max != 3 || le.Want != 4 {
		t.Fatalf("Register past the limit: %v; want a *LimitError 4 > 3", err)
	}
	if status, body := sidecartest.HTTPDo(t, http.MethodDelete, "http://"+e.http+"/v1/registrations/b", "", nil); status != http.StatusNoContent {
		t.Fatalf("delete b: %d %s", status, body)
	}
	e.register("d", []string{"p:" + topic}, nil)

	l := logs.String()
	for _, want := range []string{"registrations near the limit", "upstream consumers near the limit"} {
		if !strings.Contains(l, want) {
			t.Fatalf("no %q warning; logs:\n%s", want, l)
		}
	}
}

// TestLimitsConfig: bad capacity settings are refused by New.
func TestLimitsConfig(t *testing.T) {
	b, err := brokers.Open(context.Background(), sidecartest.NATSCluster(t), sidecartest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	for _, tc := range []struct {
		name  string
		tweak func(*msgmesh.Config)
		want  string
	}{
		{"negative conns", func(c *msgmesh.Config) { c.MaxConns = -1 }, "negative"},
		{"negative hello", func(c *msgmesh.Config) { c.HelloTimeout = -time.Second }, "HelloTimeout"},
		{"negative http", func(c *msgmesh.Config) { c.HTTP.IdleTimeout = -time.Second }, "negative"},
		{"write timeout", func(c *msgmesh.Config) { c.HTTP.WriteTimeout = time.Second }, "publish timeout"},
	} {
		cfg := msgmesh.Config{DataDir: t.TempDir(), Broker: b}
		tc.tweak(&cfg)
		if _, err := msgmesh.New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
}
