package ctrlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
)

const testToken = "test-operator-token-0123456789"

// testLog writes the server's logs to the test log.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// cp is a control plane serving on a real 127.0.0.1 port.
type cp struct {
	srv   *ctrlplane.Server
	url   string
	addr  string
	store store.Store
	done  chan error // Serve's result
}

// startCP serves st on addr ("" for a random port). The server is shut
// down when the test ends; st is not closed.
func startCP(t testing.TB, st store.Store, addr string, mod ...func(*ctrlplane.Options)) *cp {
	t.Helper()
	opts := ctrlplane.Options{Store: st, Token: testToken, Log: testLog(t)}
	for _, m := range mod {
		m(&opts)
	}
	srv, err := ctrlplane.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	c := &cp{srv: srv, url: "http://" + ln.Addr().String(), addr: ln.Addr().String(), store: st, done: make(chan error, 1)}
	go func() { c.done <- srv.Serve(ln) }()
	t.Cleanup(c.stop)
	return c
}

// stop shuts the server down and waits for Serve to return.
func (c *cp) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.srv.Shutdown(ctx)
	<-c.done
	c.done <- nil // a second stop returns at once
}

// openBolt opens a bbolt store in dir, closed when the test ends.
func openBolt(t testing.TB, dir string) store.Store {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(dir, store.BoltFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// startBolt is a control plane on a fresh bbolt store.
func startBolt(t testing.TB, mod ...func(*ctrlplane.Options)) *cp {
	t.Helper()
	return startCP(t, openBolt(t, t.TempDir()), "", mod...)
}

func client(t testing.TB, url, token string, opts ...ctrlclient.Option) *ctrlclient.Client {
	t.Helper()
	c, err := ctrlclient.New(url, token, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// answer is a raw HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// errorBody decodes the API error body, failing the test if it is not one.
func (a answer) errorBody(t testing.TB) api.ErrorBody {
	t.Helper()
	var eb api.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || eb.Code == "" || eb.Message == "" {
		t.Fatalf("status %d: body %q is not {\"error\":CODE,\"message\":TEXT} (%v)", a.status, a.body, err)
	}
	return eb
}

// do sends one raw request; token "" sends no Authorization header.
func do(t testing.TB, method, url, token, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

// mustCreate creates an app with instances (weight 100) and returns its
// credential.
func mustCreate(t testing.TB, c *ctrlclient.Client, app string, addrs ...string) string {
	t.Helper()
	created, err := c.CreateApp(t.Context(), app)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if _, _, err := c.PutInstance(t.Context(), app, api.InstanceSpec{Addr: a}); err != nil {
			t.Fatal(err)
		}
	}
	return created.Credential
}

// configs records every config a Watcher hands over, with when.
type configs struct {
	mu   sync.Mutex
	seen []seenConfig
	ch   chan struct{} // poked on each config
}

type seenConfig struct {
	cfg api.AppConfig
	at  time.Time
}

func newConfigs() *configs { return &configs{ch: make(chan struct{}, 1)} }

func (c *configs) onChange(cfg api.AppConfig) {
	now := time.Now()
	c.mu.Lock()
	c.seen = append(c.seen, seenConfig{cfg, now})
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

// waitFor waits until a config satisfying ok arrives (or arrived) and
// returns it with its arrival time.
func (c *configs) waitFor(t testing.TB, d time.Duration, what string, ok func(api.AppConfig) bool) seenConfig {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		for _, s := range c.seen {
			if ok(s.cfg) {
				c.mu.Unlock()
				return s
			}
		}
		c.mu.Unlock()
		select {
		case <-c.ch:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for a config with %s", d, what)
		}
	}
}

func weightIs(id string, w int) func(api.AppConfig) bool {
	return func(cfg api.AppConfig) bool {
		in, ok := cfg.Instance(id)
		return ok && in.Weight == w
	}
}

// watch starts a Watcher stopped when the test ends.
func watch(t testing.TB, c *ctrlclient.Client, app string, rec *configs, opts ...ctrlclient.WatchOption) *ctrlclient.Watcher {
	t.Helper()
	opts = append([]ctrlclient.WatchOption{ctrlclient.WithBackoff(20*time.Millisecond, 200*time.Millisecond), ctrlclient.WithLogger(testLog(t))}, opts...)
	w, err := c.Watch(t.Context(), app, rec.onChange, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

// waitUntil polls cond every millisecond until it holds or d passes.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}
