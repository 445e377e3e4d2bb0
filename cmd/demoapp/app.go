package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/client"
)

// HeaderID is the message header carrying the demo's own message id, which
// every count is keyed by (the broker's ids differ per broker).
const HeaderID = "demo-id"

// app is the running demo app.
type app struct {
	cfg    config
	log    *slog.Logger
	tracer trace.Tracer // nil: tracing off
	tp     trace.TracerProvider

	cl         atomic.Pointer[client.Client]
	dials      atomic.Int64 // connections made to the sidecar's mesh listener
	dialErrs   atomic.Int64 // dial attempts that failed
	registered atomic.Bool
	ready      atomic.Bool // registered, connected and subscribed

	consumed tally
	jobs     jobs
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	a := &app{cfg: cfg, log: log}
	a.consumed.init()
	a.jobs.init()
	if cfg.OTLPEndpoint != "" {
		tp, shutdown, err := newTracerProvider(ctx, cfg.OTLPEndpoint, cfg.ServiceName, log)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = shutdown(sctx)
		}()
		a.tp, a.tracer = tp, tp.Tracer("github.com/msgmesh/msgmesh/cmd/demoapp")
		log.Info("exporting spans", "endpoint", cfg.OTLPEndpoint, "service", cfg.ServiceName)
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("demo app HTTP API listening", "addr", ln.Addr().String(), "app", cfg.App)

	if err := a.start(ctx); err != nil {
		return err
	}
	defer a.stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-served:
		return fmt.Errorf("HTTP API: %w", err)
	}
}

// start registers with the sidecar, connects, subscribes and starts the
// automatic publisher. Each step is retried until it works or ctx ends:
// in a pod the sidecar may start after the app.
func (a *app) start(ctx context.Context) error {
	if err := retry(ctx, a.log, "register with the sidecar", a.register); err != nil {
		return err
	}
	a.registered.Store(true)
	opts := []client.Option{
		client.WithApp(a.cfg.App),
		client.WithSecret(a.cfg.Secret),
		client.WithClientName(a.cfg.ClientName),
		client.WithMaxInflight(a.cfg.MaxInflight),
		client.WithReconnectBackoff(50*time.Millisecond, time.Second),
		client.WithHeartbeat(2 * time.Second),
		client.WithLogger(a.log),
		client.WithDialer(a.dial),
	}
	if a.tp != nil {
		opts = append(opts, client.WithTracerProvider(a.tp))
	}
	if err := retry(ctx, a.log, "connect to the sidecar", func(ctx context.Context) error {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		cl, err := client.Dial(dctx, a.cfg.MeshAddr, opts...)
		if err != nil {
			return err
		}
		a.cl.Store(cl)
		return nil
	}); err != nil {
		return err
	}
	cl := a.cl.Load()
	for _, b := range a.cfg.Consume {
		if err := retry(ctx, a.log, "subscribe "+b.Group+":"+b.Topic, func(ctx context.Context) error {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := cl.Subscribe(sctx, b.Group, b.Topic, a.handler(b), client.WithConcurrency(a.cfg.Concurrency))
			return err
		}); err != nil {
			return err
		}
	}
	a.ready.Store(true)
	a.log.Info("demo app ready", "app", a.cfg.App, "produce", a.cfg.Produce, "consume", a.cfg.Consume)
	if a.cfg.AutoPublish != "" {
		a.jobs.start(cl, a.log, jobSpec{Topic: a.cfg.AutoPublish, Prefix: a.cfg.ClientName + "-auto", Rate: a.cfg.AutoRate, Workers: 1, Size: 64})
	}
	return nil
}

// stop ends the publish jobs, then the client (which waits for handlers).
func (a *app) stop() {
	a.jobs.stopAll()
	if cl := a.cl.Load(); cl != nil {
		_ = cl.Close()
	}
}

// dial is the SDK's dialer: a plain TCP dial that counts connections, so a
// reconnect (a dropped app connection) is visible in GET /v1/state.
func (a *app) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		a.dialErrs.Add(1)
		return nil, err
	}
	n := a.dials.Add(1)
	if n > 1 {
		a.log.Warn("reconnected to the sidecar", "connections", n)
	}
	return c, nil
}

// register posts the app's metadata to the sidecar.
func (a *app) register(ctx context.Context) error {
	body, err := json.Marshal(map[string]any{"app": a.cfg.App, "produce": nonNil(a.cfg.Produce), "consume": nonNil(a.cfg.Consume)})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, a.cfg.SidecarHTTP+"/v1/registrations", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if a.cfg.Secret != "" {
		// The first registration makes it the app's secret; later ones
		// (restarts) prove it.
		req.Header.Set("Authorization", "Bearer "+a.cfg.Secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /v1/registrations: %d %s", resp.StatusCode, bytes.TrimSpace(out))
	}
	return nil
}

func nonNil(bs []binding) []binding {
	if bs == nil {
		return []binding{}
	}
	return bs
}

// handler counts a delivery under its demo id and acks it.
func (a *app) handler(b binding) client.Handler {
	key := b.Group + "|" + b.Topic
	delay, ok := a.cfg.TopicDelay[b.Topic]
	if !ok {
		delay = a.cfg.HandleDelay
	}
	return func(ctx context.Context, d *client.Delivery) error {
		id, tp := "", ""
		for _, h := range d.Headers {
			switch h.Key {
			case HeaderID:
				id = h.Value
			case "traceparent":
				tp = h.Value
			}
		}
		if id == "" {
			id = string(d.Body)
		}
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		a.consumed.add(key, id, tp, d.Redelivered > 0)
		return nil
	}
}

// retry runs f until it succeeds or ctx ends, backing off up to 1s.
func retry(ctx context.Context, log *slog.Logger, what string, f func(context.Context) error) error {
	delay := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Info("retrying", "what", what, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// tally counts deliveries by (group|topic, demo id).
type tally struct {
	mu    sync.Mutex
	by    map[string]map[string]*seen
	total map[string]int
}

type seen struct {
	N           int    `json:"n"`
	Redelivered int    `json:"redelivered,omitempty"`
	TraceParent string `json:"traceparent,omitempty"`
}

func (t *tally) init() {
	t.by = map[string]map[string]*seen{}
	t.total = map[string]int{}
}

func (t *tally) add(key, id, traceparent string, redelivered bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.by[key]
	if m == nil {
		m = map[string]*seen{}
		t.by[key] = m
	}
	s := m[id]
	if s == nil {
		s = &seen{}
		m[id] = s
	}
	s.N++
	if redelivered {
		s.Redelivered++
	}
	if traceparent != "" {
		s.TraceParent = traceparent
	}
	t.total[key]++
}

// snapshot returns the counts of key whose id starts with prefix.
func (t *tally) snapshot(key, prefix string) (map[string]seen, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]seen{}
	n := 0
	for id, s := range t.by[key] {
		if len(id) >= len(prefix) && id[:len(prefix)] == prefix {
			out[id] = *s
			n += s.N
		}
	}
	return out, n
}

func (t *tally) totals() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.total))
	for k, v := range t.total {
		out[k] = v
	}
	return out
}

var errNotReady = errors.New("the app is not connected to its sidecar yet")
