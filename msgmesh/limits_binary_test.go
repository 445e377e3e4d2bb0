package msgmesh_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/internal/procstat"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/internal/slowclient"
	"github.com/msgmesh/msgmesh/msgmesh"
)

// TestBinaryLimits runs the msgmesh binary with small limits, some from
// flags and some from the config file's capacity section, and checks each
// against real sockets: the connection cap, the HELLO timeout, the
// registration cap, and the HTTP API's timeouts against a slowloris
// client and an idle keep-alive connection.
func TestBinaryLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "msgmesh.yaml")
	if err := os.WriteFile(conf, []byte(`capacity:
  hello_timeout: 500ms
  max_registrations: 2
  http:
    read_header_timeout: 500ms
    read_timeout: 1s
    idle_timeout: 1s
`), 0o600); err != nil {
		t.Fatal(err)
	}
	meshAddr, httpAddr := freePort(t), freePort(t)
	p := sidecartest.StartProc(t, bin, "--data-dir", filepath.Join(dir, "data"), "--listen", meshAddr, "--http", httpAddr,
		"--config", conf, "--max-conns", "3", "--log-level", "warn")
	sidecartest.WaitHealthy(t, p, httpAddr)

	t.Run("registrations", func(t *testing.T) {
		for _, app := range []string{"orders", "billing"} {
			if status, body := sidecartest.Register(t, httpAddr, app, []string{"p1:" + topic}, []string{"g-" + app + ":" + topic}); status != http.StatusCreated {
				t.Fatalf("register %s: %d %s", app, status, body)
			}
		}
		status, body := sidecartest.Register(t, httpAddr, "third", []string{"p1:" + topic}, nil)
		if status != http.StatusConflict || !strings.Contains(body, "LIMIT_EXCEEDED") || !strings.Contains(body, "max_registrations") {
			t.Fatalf("third registration: %d %s; want 409 LIMIT_EXCEEDED naming max_registrations", status, body)
		}
	})

	t.Run("connections", func(t *testing.T) {
		app := client.WithApp("orders")
		sub, pub := sidecartest.Dial(t, meshAddr, app), sidecartest.Dial(t, meshAddr, app)
		got := subscribeTally(t, sub, "g-orders")
		// One slot left: a connection that never says HELLO loses it after
		// hello_timeout, told why.
		fs := readUntilClosed(t, dialRaw(t, meshAddr).c, 10*time.Second)
		if len(fs) != 1 {
			t.Fatalf("silent connection: %d frames before the close, want one ERROR", len(fs))
		}
		wantError(t, fs[0], mesh.CodeTimeout)

		third := dialWhenFree(t, meshAddr, app) // the slot the silent one left
		ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(10*time.Second))
		_, err := client.Dial(ctx, meshAddr, app, client.WithLogger(sidecartest.Logger()))
		cancel()
		if client.CodeOf(err) != mesh.CodeUnavailable || !strings.Contains(err.Error(), "max_conns") {
			t.Fatalf("fourth connection: %v; want ERROR UNAVAILABLE naming max_conns", err)
		}
		sidecartest.PublishN(t, pub, topic, "m", 100, 16)
		sidecartest.PublishN(t, third, topic, "t", 100, 16)
		sidecartest.WaitFor(t, 30*time.Second, "every message to arrive", func() bool { return got.Distinct() == 200 })
	})

	// Timeouts of about a second against a slowloris client (headers,
	// then a body, one byte every 200ms) and an idle keep-alive connection.
	t.Run("http", func(t *testing.T) {
		slowclient.Check(t, slowclient.Probes(httpAddr, "/v1/publish/"+topic, "/healthz", 200*time.Millisecond, sidecartest.Scaled(20*time.Second)))
	})
}

// dialWhenFree connects an SDK client, retrying while the sidecar refuses
// it (a slot of its connection cap is being freed); it closes in
// t.Cleanup.
func dialWhenFree(t *testing.T, addr string, opts ...client.Option) *client.Client {
	t.Helper()
	var c *client.Client
	var last error
	deadline := time.Now().Add(sidecartest.Scaled(60 * time.Second))
	for c == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no connection within %s: %v", sidecartest.Scaled(60*time.Second), last)
		}
		ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(5*time.Second))
		c, last = client.Dial(ctx, addr, append([]client.Option{client.WithLogger(sidecartest.Logger())}, opts...)...)
		cancel()
		if c == nil {
			time.Sleep(20 * time.Millisecond) // polling, not synchronising
		}
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// procStats reads a process's resident memory and open file descriptors
// (procstat; the test skips where there is no /proc).
func procStats(t testing.TB, pid int) (rssKiB, fds int) {
	t.Helper()
	st, err := procstat.Read(pid)
	if errors.Is(err, procstat.ErrUnsupported) {
		t.Skip("no /proc on this system")
	}
	if err != nil {
		t.Fatal(err)
	}
	return st.RSSKiB, st.FDs
}

// latencies records publish latencies.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) { l.mu.Lock(); l.d = append(l.d, d); l.mu.Unlock() }

// quantile returns the q-quantile (0..1) of what was recorded.
func (l *latencies) quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func (l *latencies) count() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.d) }

// TestFloodIdleConnections opens 10,000 idle TCP connections against the
// real msgmesh binary, with its default limits, while an app connected
// before the flood publishes and consumes. The app must keep working and
// receive every message; the sidecar's descriptors must stay bounded by
// its connection cap. It logs the figures: descriptors and resident memory
// before, at the peak and after, and the app's publish latency (p50, p99,
// max) before and during the flood. No assertion is made on time.
func TestFloodIdleConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary; opens 10,000 connections")
	}
	const flood = 10000
	if limit, ok := core.FileLimit(); ok && limit < flood+2000 {
		t.Skipf("the open-file limit is %d; the flood needs %d (ulimit -n)", limit, flood+2000)
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	meshAddr, httpAddr := freePort(t), freePort(t)
	p := sidecartest.StartProc(t, bin, "--data-dir", t.TempDir(), "--listen", meshAddr, "--http", httpAddr, "--log-level", "warn")
	sidecartest.WaitHealthy(t, p, httpAddr)
	pid := p.Cmd.Process.Pid
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	app := client.WithApp("orders")
	sub, pub := sidecartest.Dial(t, meshAddr, app), sidecartest.Dial(t, meshAddr, app)
	got := subscribeTally(t, sub, "g1")

	var sent atomic.Int64
	publish := func(lat *latencies) {
		i := sent.Add(1) - 1
		ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
		defer cancel()
		start := time.Now()
		if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: []byte(fmt.Sprintf("m-%d", i))}); err != nil {
			t.Errorf("publish %d: %v", i, err)
			return
		}
		lat.add(time.Since(start))
	}
	var quiet, flooded latencies
	for range 500 {
		publish(&quiet)
	}
	rss0, fds0 := procStats(t, pid)

	// The flood: 10,000 connections that never send a byte, dialled by 32
	// workers and held open until the end.
	var (
		held      = make([]net.Conn, 0, flood)
		heldMu    sync.Mutex
		dialFails atomic.Int64
		dialed    atomic.Int64
		wg        sync.WaitGroup
	)
	t.Cleanup(func() {
		for _, c := range held {
			_ = c.Close()
		}
	})
	floodStart := time.Now()
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < flood; i += 32 {
				c, err := net.DialTimeout("tcp", meshAddr, sidecartest.Scaled(10*time.Second))
				dialed.Add(1)
				if err != nil {
					dialFails.Add(1)
					continue
				}
				heldMu.Lock()
				held = append(held, c)
				heldMu.Unlock()
			}
		})
	}
	floodDone := make(chan struct{})
	go func() { wg.Wait(); close(floodDone) }()

	// Publish while the flood is dialled and while the connections it got
	// in are held (up to the hello timeout), sampling the sidecar.
	peakRSS, peakFDs := rss0, fds0
	sample := func() {
		r, f := procStats(t, pid)
		peakRSS, peakFDs = max(peakRSS, r), max(peakFDs, f)
	}
	var dialTook time.Duration
	var holdUntil time.Time
	for !t.Failed() {
		publish(&flooded)
		if flooded.count()%20 == 0 {
			sample()
		}
		if holdUntil.IsZero() {
			select {
			case <-floodDone:
				dialTook = time.Since(floodStart)
				holdUntil = time.Now().Add(msgmesh.DefaultHelloTimeout)
			default:
			}
		} else if time.Now().After(holdUntil) && flooded.count() >= 500 {
			break
		}
	}
	sample()
	if t.Failed() {
		t.FailNow()
	}
	sidecartest.WaitFor(t, 60*time.Second, "every message to be consumed", func() bool { return got.Distinct() == int(sent.Load()) })

	// The flood's connections go; a new app connects again.
	heldMu.Lock()
	for _, c := range held {
		_ = c.Close()
	}
	heldMu.Unlock()
	_ = dialWhenFree(t, meshAddr, app).Close()
	rss1, fds1 := procStats(t, pid)

	t.Logf("flood: %d connections dialled in %s (%d failed to connect); the app published %d messages during it, all consumed",
		dialed.Load(), dialTook.Round(time.Millisecond), dialFails.Load(), flooded.count())
	t.Logf("sidecar fds: %d before, %d at the peak, %d after", fds0, peakFDs, fds1)
	t.Logf("sidecar RSS: %.1f MiB before, %.1f MiB at the peak, %.1f MiB after", float64(rss0)/1024, float64(peakRSS)/1024, float64(rss1)/1024)
	t.Logf("publish latency without flood: p50 %s, p99 %s; during the flood: p50 %s, p99 %s, max %s (p99 ratio %.1fx)",
		quiet.quantile(0.5), quiet.quantile(0.99), flooded.quantile(0.5), flooded.quantile(0.99), flooded.quantile(1),
		float64(flooded.quantile(0.99))/float64(max(quiet.quantile(0.99), 1)))

	// The descriptors the flood can take are bounded by the connection cap
	// and the connections being refused, not by the flood.
	if bound := fds0 + msgmesh.DefaultMaxConns + core.DefaultMaxRefusing + 64; peakFDs > bound {
		t.Fatalf("the sidecar held %d descriptors during the flood; its limits bound it to %d", peakFDs, bound)
	}
}
