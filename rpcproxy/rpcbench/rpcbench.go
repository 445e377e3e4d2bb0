// Package rpcbench measures the RPC proxy against the direct path in one
// run: a client calling an echo server directly, and the same client
// calling it through an egress sidecar and an ingress sidecar (client →
// egress → ingress → echo server), for both codecs (mesh RPC frames and
// HTTP/1.1), with 1 KiB requests and answers by default.
//
// Everything runs in this process on loopback TCP: the echo servers
// (rpctest: a mesh RPC server, and net/http for HTTP/1.1), both sidecars,
// and the load generator, which is the core's own client side (a
// stream.Cluster of the codec, so the client costs the same on both paths).
// For each path it measures throughput with Concurrency calls in flight
// (QPS and latency percentiles under that load), latency one call at a
// time (the added latency), and the process CPU time (getrusage) spent in
// the throughput phase, hence QPS per core used.
//
// The CPU of the two sidecars alone is estimated as the CPU per call of
// the sidecar path minus that of the direct path (same client, same
// server, same calls): SidecarQPSPerCore is how many calls per second one
// core could carry through an egress and an ingress sidecar together.
package rpcbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/msgmesh/msgmesh/codecs/http1"
	"github.com/msgmesh/msgmesh/codecs/meshrpc"
	"github.com/msgmesh/msgmesh/rpcproxy"
	"github.com/msgmesh/msgmesh/rpcproxy/rpctest"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

// Config sets the size of a run. Zero values are usable defaults.
type Config struct {
	// Duration of each path's throughput phase. Zero: 3s.
	Duration time.Duration
	// Concurrency is the calls in flight during the throughput phase.
	// Zero: 64.
	Concurrency int
	// Conns is how many connections the mesh client spreads its calls
	// over (HTTP/1.1 uses one per call in flight). Zero: 8.
	Conns int
	// Size of the request and answer bodies. Zero: 1024.
	Size int
	// Latencies is how many calls, one at a time, measure the added
	// latency. Zero: 2000.
	Latencies int
	// Logger for the sidecars. Zero: discard.
	Logger *slog.Logger
	// ProfileDir, if set, receives a CPU profile of each path's throughput
	// phase, cpu-<codec>-<path>.pprof (go tool pprof): the sidecars' share
	// is what the sidecars profile adds to the direct one.
	ProfileDir string
}

func (c *Config) defaults() {
	if c.Duration <= 0 {
		c.Duration = 3 * time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.Conns <= 0 {
		c.Conns = 8
	}
	if c.Size <= 0 {
		c.Size = 1024
	}
	if c.Latencies <= 0 {
		c.Latencies = 2000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Result is one path's figures.
type Result struct {
	Codec string // "mesh" or "http1"
	Path  string // "direct" or "sidecars"
	// Calls answered in the throughput phase, and per second.
	Calls int
	QPS   float64
	// Latency percentiles under load.
	P50, P99 time.Duration
	// Latency percentiles one call at a time.
	SerialP50, SerialP99 time.Duration
	// CPU is the process CPU time (user and system) of the throughput
	// phase; Cores is CPU divided by its wall time.
	CPU   time.Duration
	Cores float64
	// QPSPerCore is QPS divided by Cores: calls per CPU-second, for the
	// whole process (client, sidecars and server).
	QPSPerCore float64
	// SidecarQPSPerCore (sidecar rows only) estimates calls per
	// CPU-second of the two sidecars alone (see the package doc).
	SidecarQPSPerCore float64
	// AllocsPerCall is heap allocations per call in the throughput phase,
	// whole process; SidecarAllocsPerCall (sidecar rows only) is the part
	// of the two sidecars, by the same difference as SidecarQPSPerCore.
	AllocsPerCall        float64
	SidecarAllocsPerCall float64
}

// Run starts the servers and sidecars, measures the four paths and tears
// everything down.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	cfg.defaults()
	meshApp, err := rpctest.StartMesh("", nil)
	if err != nil {
		return nil, err
	}
	defer meshApp.Close()
	httpApp, err := rpctest.StartHTTP("", nil)
	if err != nil {
		return nil, err
	}
	defer httpApp.Close()

	ingress, err := rpcproxy.New(rpcproxy.Config{
		Egress: rpcproxy.EgressConfig{Listen: rpcproxy.Off},
		Ingress: rpcproxy.IngressConfig{Listen: "127.0.0.1:0",
			App: map[string]string{meshrpc.Name: meshApp.Addr(), http1.Name: httpApp.Addr()}},
	}, cfg.Logger)
	if err != nil {
		return nil, err
	}
	if err := ingress.Start(ctx); err != nil {
		return nil, err
	}
	defer shutdown(ingress)
	for deadline := time.Now().Add(10 * time.Second); !ingress.Healthy(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("rpcbench: the ingress sidecar finds the echo servers unhealthy")
		}
	}
	egress, err := rpcproxy.New(rpcproxy.Config{
		Egress:   rpcproxy.EgressConfig{Listen: "127.0.0.1:0"},
		Ingress:  rpcproxy.IngressConfig{Listen: rpcproxy.Off},
		Clusters: []rpcproxy.ClusterConfig{{Name: "echo", Hosts: []rpcproxy.HostConfig{{Address: ingress.IngressAddr().String()}}}},
		Routes:   []rpcproxy.RouteConfig{{Service: "echo", Cluster: "echo"}},
	}, cfg.Logger)
	if err != nil {
		return nil, err
	}
	if err := egress.Start(ctx); err != nil {
		return nil, err
	}
	defer shutdown(egress)

	body := make([]byte, cfg.Size)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	paths := []struct {
		codec stream.Codec
		path  string
		addr  string
		build func(m *stream.Message) error
	}{
		{meshrpc.Codec{}, "direct", meshApp.Addr(), meshReq(body)},
		{meshrpc.Codec{}, "sidecars", egress.EgressAddr().String(), meshReq(body)},
		{http1.Codec{}, "direct", httpApp.Addr(), httpReq(body)},
		{http1.Codec{}, "sidecars", egress.EgressAddr().String(), httpReq(body)},
	}
	var out []Result
	for _, p := range paths {
		cl, err := stream.NewCluster(stream.ClusterConfig{
			Name: "bench-client", Codec: p.codec, Hosts: []stream.HostConfig{{Addr: p.addr}},
			ConnsPerHost: cfg.Conns, RoundRobinConns: true, MaxIdlePerHost: cfg.Concurrency, Logger: cfg.Logger,
		})
		if err != nil {
			return nil, err
		}
		prof := ""
		if cfg.ProfileDir != "" {
			prof = filepath.Join(cfg.ProfileDir, "cpu-"+p.codec.Name()+"-"+p.path+".pprof")
		}
		r, err := measure(ctx, cfg, cl, p.build, prof)
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("rpcbench: %s %s: %w", p.codec.Name(), p.path, err)
		}
		r.Codec, r.Path = p.codec.Name(), p.path
		out = append(out, r)
	}
	for i := 1; i < len(out); i += 2 {
		d, s := out[i-1], &out[i]
		if extra := s.CPU.Seconds()/float64(s.Calls) - d.CPU.Seconds()/float64(d.Calls); extra > 0 {
			s.SidecarQPSPerCore = 1 / extra
		}
		s.SidecarAllocsPerCall = s.AllocsPerCall - d.AllocsPerCall
	}
	return out, nil
}

func shutdown(p *rpcproxy.Proxy) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.Shutdown(ctx)
}

func meshReq(body []byte) func(*stream.Message) error {
	return func(m *stream.Message) error { return meshrpc.NewRequest(m, "echo", "Echo", nil, body) }
}

func httpReq(body []byte) func(*stream.Message) error {
	return func(m *stream.Message) error { return http1.NewRequest(m, "POST", "echo", "/echo", nil, body) }
}

// call makes one call and checks it succeeded.
func call(ctx context.Context, cl *stream.Cluster, build func(*stream.Message) error, want int) error {
	m := stream.NewMessage()
	defer m.Release()
	if err := build(m); err != nil {
		return err
	}
	resp, err := cl.RoundTrip(ctx, m, 10*time.Second, nil)
	if err != nil {
		return err
	}
	defer resp.Release()
	if resp.Status != 200 || resp.Size < want {
		return fmt.Errorf("answer with status %d, %d bytes", resp.Status, resp.Size)
	}
	return nil
}

// measure runs one path's phases; profile, if not empty, is the file the
// throughput phase's CPU profile goes to.
func measure(ctx context.Context, cfg Config, cl *stream.Cluster, build func(*stream.Message) error, profile string) (Result, error) {
	var r Result
	// Warm up: connections, pools, goroutine stacks.
	for i := 0; i < 200; i++ {
		if err := call(ctx, cl, build, cfg.Size); err != nil {
			return r, err
		}
	}
	runtime.GC()
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return r, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return r, err
		}
	}

	var mem0, mem1 runtime.MemStats
	runtime.ReadMemStats(&mem0)
	cpu0 := cpuTime()
	start := time.Now()
	stop := start.Add(cfg.Duration)
	lats := make([][]time.Duration, cfg.Concurrency)
	errs := make([]error, cfg.Concurrency)
	var wg sync.WaitGroup
	for g := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, 1<<14)
			for {
				t0 := time.Now()
				if !t0.Before(stop) {
					break
				}
				if err := call(ctx, cl, build, cfg.Size); err != nil {
					errs[g] = err
					break
				}
				l = append(l, time.Since(t0))
			}
			lats[g] = l
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	r.CPU = cpuTime() - cpu0
	if profile != "" {
		pprof.StopCPUProfile()
	}
	runtime.ReadMemStats(&mem1)
	for _, err := range errs {
		if err != nil {
			return r, err
		}
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	r.Calls = len(all)
	if r.Calls > 0 {
		// The latency slices grow by doubling: a few allocations in all.
		r.AllocsPerCall = float64(mem1.Mallocs-mem0.Mallocs) / float64(r.Calls)
	}
	r.QPS = float64(r.Calls) / wall.Seconds()
	r.P50, r.P99 = pct(all, 50), pct(all, 99)
	r.Cores = r.CPU.Seconds() / wall.Seconds()
	if r.Cores > 0 {
		r.QPSPerCore = r.QPS / r.Cores
	}

	serial := make([]time.Duration, cfg.Latencies)
	for i := range serial {
		t0 := time.Now()
		if err := call(ctx, cl, build, cfg.Size); err != nil {
			return r, err
		}
		serial[i] = time.Since(t0)
	}
	slices.Sort(serial)
	r.SerialP50, r.SerialP99 = pct(serial, 50), pct(serial, 99)
	return r, nil
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// cpuTime returns the CPU time (user and system) the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// PrintTable writes the results as a markdown table, then the ratios of
// each sidecar path to its direct path.
func PrintTable(w io.Writer, cfg Config, rs []Result) {
	cfg.defaults()
	fmt.Fprintf(w, "RPC echo, %d B request and answer, %d calls in flight (%d mesh connections), %s per path, %d serial calls for latency; GOMAXPROCS %d on %d CPUs\n\n",
		cfg.Size, cfg.Concurrency, cfg.Conns, cfg.Duration, cfg.Latencies, runtime.GOMAXPROCS(0), runtime.NumCPU())
	fmt.Fprintf(w, "| %-5s | %-8s | %9s | %9s | %9s | %10s | %10s | %6s | %9s | %16s | %11s | %14s |\n",
		"codec", "path", "QPS", "p50", "p99", "serial p50", "serial p99", "cores", "QPS/core", "sidecar QPS/core", "allocs/call", "sidecar allocs")
	fmt.Fprintf(w, "|-------|----------|-----------|-----------|-----------|------------|------------|--------|-----------|------------------|-------------|----------------|\n")
	for _, r := range rs {
		side, sideAllocs := "-", "-"
		if r.SidecarQPSPerCore > 0 {
			side = fmt.Sprintf("%.0f", r.SidecarQPSPerCore)
		}
		if r.Path == "sidecars" {
			sideAllocs = fmt.Sprintf("%.1f", r.SidecarAllocsPerCall)
		}
		fmt.Fprintf(w, "| %-5s | %-8s | %9.0f | %9s | %9s | %10s | %10s | %6.2f | %9.0f | %16s | %11.1f | %14s |\n",
			r.Codec, r.Path, r.QPS, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond),
			r.SerialP50.Round(time.Microsecond), r.SerialP99.Round(time.Microsecond), r.Cores, r.QPSPerCore, side, r.AllocsPerCall, sideAllocs)
	}
	fmt.Fprintln(w)
	for i := 1; i < len(rs); i += 2 {
		d, s := rs[i-1], rs[i]
		fmt.Fprintf(w, "%s: sidecars/direct QPS %.2f, QPS per core %.2f; added serial latency p50 %s, p99 %s\n",
			s.Codec, s.QPS/d.QPS, s.QPSPerCore/d.QPSPerCore,
			(s.SerialP50 - d.SerialP50).Round(time.Microsecond), (s.SerialP99 - d.SerialP99).Round(time.Microsecond))
	}
}
