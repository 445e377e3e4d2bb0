// Package bench measures the sidecar against the direct path in one run:
// an app using the broker's own Go client straight against the broker, and
// an app using the msgmesh SDK through a sidecar to the same broker. Both
// paths run against one broker on loopback TCP in the same run, so the
// figures that matter are the ratios: absolute numbers drift with the
// machine. The broker runs in the bench's process or, with BrokerProcess,
// as a process of its own (brokerproc.go), as it does in a deployment.
//
// Brokers: a JetStream server (direct path nats.go), a kfake Kafka
// cluster (direct path segmentio/kafka-go) and the RocketMQ test broker
// (direct path rocketmq-client-go); as processes, the repo's natsd, kafkad
// and rmq-testbroker commands, which run the same servers. The sidecar's
// broker adapter comes from brokers.Open on the same cluster.
//
// For each path it measures publish throughput (async publishes with a
// window in flight, each acknowledged by the broker), consume throughput
// (a backlog read and acked by one consumer), and publish latency (one
// synchronous publish at a time, p50 and p99). The HTTP push row consumes
// through a push subscription instead: the sidecar POSTs every message as
// a CloudEvent to a loopback net/http receiver (push.go). The gRPC row does
// all three through the sidecar's gRPC API (grpc.go) instead of the SDK.
// With variants it also measures the sidecar with schema validation,
// tracing and metrics on.
//
// The plain sidecar row can run the real msgmesh binary as a child
// process (process.go) instead: then the sidecar's CPU time per message
// and its peak RSS are read from /proc, its own and not the driver's. The
// direct and plain sidecar rows also measure 32 synchronous publishers,
// and the HTTP publish row 32 HTTP connections publishing to that sidecar.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/procstat"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
	"github.com/msgmesh/msgmesh/topology"
)

// Brokers are the --broker values besides "all", in run order.
var Brokers = []string{"nats", "kafka", "rocketmq"}

// Config sets the size of a run. Zero values are usable defaults.
type Config struct {
	Count     int    // messages per throughput phase; zero: 20000
	Size      int    // body bytes; zero: 1024
	Window    int    // publishes in flight; zero: 256
	Latencies int    // synchronous publishes timed for p50/p99; zero: 2000
	Broker    string // nats, kafka, rocketmq or all; zero: nats
	Variants  bool   // also sidecar rows with schema validation, tracing, metrics
	// NATSSync are the sync settings of the embedded NATS server to
	// measure, each a group of rows: 0 fsyncs before every ack (the
	// embedded default), a positive interval fsyncs that often
	// (natsbroker.EmbeddedConfig.SyncInterval). Zero: just the default.
	NATSSync []time.Duration
	// Sidecar is where the plain sidecar row's sidecar runs:
	// SidecarProcess (the msgmesh binary, Binary, as a child process: its
	// CPU and RSS are read from /proc) or SidecarInProcess. Zero:
	// in-process. The push, gRPC and variant rows are always in-process.
	Sidecar string
	// Binary is the msgmesh binary of SidecarProcess. Zero: Run builds
	// cmd/msgmesh (BuildSidecar).
	Binary string
	// ProfileDir, with SidecarProcess, is where each broker's sidecar row
	// leaves a CPU profile (ProfileSeconds long, from the start of the
	// row) and an allocation profile (at its end) of the child process,
	// taken over its /debug/pprof/ (the binary's --pprof). Zero: none.
	ProfileDir     string
	ProfileSeconds int // zero: 30
	// BrokerAt is where each broker runs: BrokerProcess (the repo's
	// broker command as a child process, built like Binary) or
	// BrokerInProcess (in the bench's own process). Zero: in-process.
	BrokerAt string
	// AppNet is how the SDK rows' app reaches its sidecar: AppNetTCP
	// (loopback TCP) or AppNetUnix (the mesh listener on a unix socket in
	// the sidecar's data directory, --listen unix:/path). The gRPC row
	// and the HTTP publish row stay on TCP. Zero: TCP.
	AppNet string
}

// App connection networks (Config.AppNet).
const (
	AppNetTCP  = "tcp"
	AppNetUnix = "unix"
)

func (c *Config) defaults() {
	if c.Count <= 0 {
		c.Count = 20000
	}
	if c.Size <= 0 {
		c.Size = 1024
	}
	if c.Window <= 0 {
		c.Window = 256
	}
	if c.Latencies <= 0 {
		c.Latencies = 2000
	}
	if c.Broker == "" {
		c.Broker = "nats"
	}
	if c.Sidecar == "" {
		c.Sidecar = SidecarInProcess
	}
	if c.ProfileSeconds <= 0 {
		c.ProfileSeconds = 30
	}
	if c.BrokerAt == "" {
		c.BrokerAt = BrokerInProcess
	}
	if c.AppNet == "" {
		c.AppNet = AppNetTCP
	}
}

// syncPublishers is how many goroutines publish synchronously (each
// waiting for its broker ack before the next) in the sync×32 phase, and
// how many HTTP connections the HTTP publish row uses.
const syncPublishers = 32

// brokerList is the brokers a run covers, or an error for an unknown name.
func (c Config) brokerList() ([]string, error) {
	if c.Broker == "all" {
		return Brokers, nil
	}
	if slices.Contains(Brokers, c.Broker) {
		return []string{c.Broker}, nil
	}
	return nil, fmt.Errorf("bench: unknown broker %q (want %s or all)", c.Broker, fmt.Sprint(Brokers))
}

// Row kinds.
const (
	KindDirect  = "direct"
	KindSidecar = "sidecar"
	KindVariant = "variant"
	// KindGRPC is the sidecar reached through its gRPC API (grpc.go).
	KindGRPC = "grpc"
	// KindHTTPPublish is the HTTP publish row: syncPublishers connections
	// POSTing /v1/publish to the plain sidecar row's sidecar, each
	// answered after the broker's ack; its figure is Sync32MPS.
	KindHTTPPublish = "http-publish"
	// KindHTTPBatch is the same with each request a CloudEvents batch of
	// httpBatchEvents events; Sync32MPS counts messages, not requests.
	KindHTTPBatch = "http-batch"
)

// Result is one path's figures.
type Result struct {
	Broker     string
	Kind       string // KindDirect, KindSidecar or KindVariant
	Path       string
	Err        error   // set when the path could not be measured
	PublishMPS float64 // acknowledged publishes per second
	ConsumeMPS float64 // consumed and acked messages per second
	P50, P99   time.Duration
	// Sync32MPS is acknowledged publishes per second with syncPublishers
	// synchronous publishers (zero: not measured on this row).
	Sync32MPS float64
	// What the sidecar process spent per message in the publish, consume
	// and sync×32 phases (CPU time, syscalls and context switches from
	// /proc over the phase, divided by its messages); zero when the
	// sidecar is not a process of its own.
	PublishCost, ConsumeCost, Sync32Cost PerMsg
	// AppCPU is the bench's own process's CPU per message in the publish
	// and consume phases: the app side (the direct client, or the SDK),
	// and with BrokerInProcess the broker too. BrokerCPU is the broker
	// process's (BrokerProcess only). With the sidecar's, they say where
	// a path's CPU goes on the cores all of them share.
	AppCPU, BrokerCPU PhaseCPU
	// PeakRSSKiB is the sidecar process's largest resident set (VmHWM)
	// at the end of the row; zero when not a process of its own.
	PeakRSSKiB int
	// AnonKiB and FileKiB split its resident set at the end of the row:
	// anonymous memory (heap, stacks, buffers) and file-backed pages (of
	// the executable, shared with other processes running it).
	AnonKiB, FileKiB int
}

// PhaseCPU is CPU per message in the publish and consume phases.
type PhaseCPU struct{ Publish, Consume time.Duration }

// path is what a measured path must do; one implementation per broker
// client talks to the broker directly, another the msgmesh SDK.
type path interface {
	publishAsync(ctx context.Context, body []byte, done func(error))
	publish(ctx context.Context, body []byte) error
	// consume reads n messages, acking each, and returns when all are in.
	consume(ctx context.Context, n int) error
}

// sidecarProcess is a path whose sidecar is a process of its own: its
// CPU time and memory can be read.
type sidecarProcess interface{ sidecarPID() int }

// bodier is a path that needs its own bodies (schema validation).
type bodier interface{ body(size int) []byte }

// setup is one broker started for a run.
type setup struct {
	cluster topology.Cluster
	// direct opens the direct path on topic.
	direct func(ctx context.Context, topic string) (path, func(), error)
	close  func()
	pid    int // the broker's process (BrokerProcess); zero in process
}

// Topic names: legal on every broker (RocketMQ allows no dots).
const (
	topicDirect  = "bench-direct"
	topicSidecar = "bench-sidecar"
	topicSchema  = "bench-schema"
	topicTracing = "bench-tracing"
	topicMetrics = "bench-metrics"
	topicPush    = "bench-push"
	topicGRPC    = "bench-grpc"
)

var allTopics = []string{topicDirect, topicSidecar, topicSchema, topicTracing, topicMetrics, topicPush, topicGRPC}

// Run starts each broker in turn, measures its paths and tears it down. A
// path that cannot be set up or measured is a row with Err set; Run itself
// fails only on a bad Config or a broker that does not start.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	cfg.defaults()
	list, err := cfg.brokerList()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "msgmesh-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	switch cfg.Sidecar {
	case SidecarInProcess:
	case SidecarProcess:
		if cfg.Binary == "" {
			if cfg.Binary, err = BuildSidecar(ctx, dir); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("bench: sidecar mode %q: want %s or %s", cfg.Sidecar, SidecarProcess, SidecarInProcess)
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return nil, err
		}
	}
	brokerBins := map[string]string{}
	switch cfg.BrokerAt {
	case BrokerInProcess:
	case BrokerProcess:
		for _, name := range list {
			if brokerBins[name], err = buildCommand(ctx, dir, brokerCommands[name]); err != nil {
				return nil, fmt.Errorf("bench: %w (or run the broker in process: --broker-at inprocess)", err)
			}
		}
	default:
		return nil, fmt.Errorf("bench: broker placement %q: want %s or %s", cfg.BrokerAt, BrokerProcess, BrokerInProcess)
	}
	if cfg.AppNet != AppNetTCP && cfg.AppNet != AppNetUnix {
		return nil, fmt.Errorf("bench: app network %q: want %s or %s", cfg.AppNet, AppNetTCP, AppNetUnix)
	}
	var out []Result
	for _, name := range list {
		runs := []time.Duration{0}
		if name == "nats" && len(cfg.NATSSync) > 0 {
			runs = cfg.NATSSync
		}
		for i, sync := range runs {
			label := name
			if name == "nats" && len(cfg.NATSSync) > 0 {
				label = "nats, sync " + SyncName(sync)
			}
			rs, err := runBroker(ctx, cfg, name, label, sync, fmt.Sprintf("%s/%s-%d", dir, name, i), brokerBins[name])
			if err != nil {
				return out, fmt.Errorf("bench %s: %w", label, err)
			}
			out = append(out, rs...)
		}
	}
	return out, nil
}

// SyncName names a NATSSync value: "always" or "every 1s".
func SyncName(d time.Duration) string {
	if d == 0 {
		return "always"
	}
	return "every " + d.String()
}

// runBroker measures broker name's paths; label names the rows' group
// (Result.Broker), sync is the NATS server's sync setting, bin the broker
// command with BrokerProcess.
func runBroker(ctx context.Context, cfg Config, name, label string, sync time.Duration, dir, bin string) ([]Result, error) {
	var (
		st  *setup
		err error
	)
	switch {
	case bin != "":
		st, err = startBrokerProcess(ctx, name, bin, dir+"/broker", sync)
	case name == "nats":
		st, err = startNATS(dir, sync)
	case name == "kafka":
		st, err = startKafka()
	case name == "rocketmq":
		st, err = startRocketMQ()
	}
	if err != nil {
		return nil, err
	}
	defer st.close()

	type entry struct {
		kind, name string
		open       func() (path, func(), error)
	}
	// so sets the app's network on the SDK rows' sidecars.
	so := func(o sidecarOpts) sidecarOpts {
		o.unix = cfg.AppNet == AppNetUnix && !o.grpc
		return o
	}
	plainName := "app → sidecar → " + serverName[name]
	if cfg.AppNet == AppNetUnix {
		plainName = "app → unix → sidecar → " + serverName[name]
	}
	entries := []entry{
		{KindDirect, directName[name], func() (path, func(), error) { return st.direct(ctx, topicDirect) }},
		{KindSidecar, plainName, func() (path, func(), error) {
			if cfg.Sidecar == SidecarProcess {
				return newProcSidecarPath(ctx, cfg, st.cluster, dir+"/sidecar", topicSidecar, label)
			}
			return newSidecar(ctx, st.cluster, dir+"/sidecar", topicSidecar, so(sidecarOpts{}))
		}},
		{KindVariant, pushRowName, func() (path, func(), error) {
			return newSidecar(ctx, st.cluster, dir+"/push", topicPush, so(sidecarOpts{push: true}))
		}},
		{KindGRPC, "app → gRPC → sidecar → " + serverName[name], func() (path, func(), error) {
			return newSidecar(ctx, st.cluster, dir+"/grpc", topicGRPC, so(sidecarOpts{grpc: true}))
		}},
	}
	if cfg.Variants {
		entries = append(entries,
			entry{KindVariant, "sidecar + schema (Avro, enforce)", func() (path, func(), error) {
				return newSidecar(ctx, st.cluster, dir+"/schema", topicSchema, so(sidecarOpts{schema: true}))
			}},
			entry{KindVariant, "sidecar + tracing", func() (path, func(), error) {
				return newSidecar(ctx, st.cluster, dir+"/tracing", topicTracing, so(sidecarOpts{tracing: true}))
			}},
			entry{KindVariant, "sidecar + metrics", func() (path, func(), error) {
				return newSidecar(ctx, st.cluster, dir+"/metrics", topicMetrics, so(sidecarOpts{metrics: true}))
			}},
		)
	}
	var out []Result
	for _, e := range entries {
		r := Result{Broker: label, Kind: e.kind, Path: e.name}
		p, closeP, err := e.open()
		var httpRows []Result
		if err != nil {
			r.Err = fmt.Errorf("setup: %w", err)
		} else {
			sync32 := e.kind == KindDirect || e.kind == KindSidecar
			r, err = measure(ctx, cfg, p, sync32, st.pid)
			r.Broker, r.Kind, r.Path = label, e.kind, e.name
			r.Err = err
			// The sidecar's memory is read after each of its phases:
			// the SDK row's peak is the SDK phases', each HTTP row's the
			// peak up to the end of its own phase (VmHWM only grows).
			readMemory := func(r *Result) {
				if sp, ok := p.(sidecarProcess); ok && sp.sidecarPID() != 0 && r.Err == nil {
					var st procstat.Stat
					st, r.Err = memoryOf(sp.sidecarPID())
					r.PeakRSSKiB, r.AnonKiB, r.FileKiB = st.PeakRSSKiB, st.AnonKiB, st.FileKiB
				}
			}
			readMemory(&r)
			if e.kind == KindSidecar && r.Err == nil {
				for _, batch := range []int{0, httpBatchEvents} {
					h := measureHTTPPublish(ctx, cfg, p, batch)
					h.Broker = label
					readMemory(&h)
					httpRows = append(httpRows, h)
				}
			}
			closeP()
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		out = append(out, r)
		out = append(out, httpRows...)
	}
	return out, nil
}

// pushRowName is the HTTP push row: its consume column is the sidecar
// POSTing to a loopback receiver (push.go).
const pushRowName = "HTTP push delivery (CloudEvents)"

var variantName = map[string]string{
	pushRowName:                        "push",
	"sidecar + schema (Avro, enforce)": "schema",
	"sidecar + tracing":                "tracing",
	"sidecar + metrics":                "metrics",
}

var directName = map[string]string{
	"nats":     "direct nats.go → nats-server",
	"kafka":    "direct kafka-go → kfake",
	"rocketmq": "direct rocketmq-client-go → rmqtest",
}

var serverName = map[string]string{
	"nats":     "nats-server",
	"kafka":    "kfake",
	"rocketmq": "rmqtest",
}

// measure runs the phases on p; sync32 adds the phase of syncPublishers
// synchronous publishers (after the latency phase, so that the backlog
// the consume phase reads is the async publishes').
func measure(ctx context.Context, cfg Config, p path, sync32 bool, brokerPID int) (Result, error) {
	body := make([]byte, cfg.Size)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	if b, ok := p.(bodier); ok {
		body = b.body(cfg.Size)
	}
	var r Result
	pid := 0
	if sp, ok := p.(sidecarProcess); ok {
		pid = sp.sidecarPID()
	}
	cost := phaseCost{pid: pid}
	app, brk := phaseCost{pid: os.Getpid()}, phaseCost{pid: brokerPID}
	startAll := func() error { return errors.Join(cost.start(), app.start(), brk.start()) }
	// endAll ends a phase of n messages: the sidecar's costs, and the
	// app's and the broker's CPU.
	endAll := func(n int) (sc PerMsg, appCPU, brokerCPU time.Duration, err error) {
		sc, err1 := cost.end(n)
		a, err2 := app.end(n)
		b, err3 := brk.end(n)
		return sc, a.CPU, b.CPU, errors.Join(err1, err2, err3)
	}
	if err := startAll(); err != nil {
		return r, err
	}

	// Publish throughput: the backlog the consume phase reads.
	start := time.Now()
	sem := make(chan struct{}, cfg.Window)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := 0; i < cfg.Count; i++ {
		sem <- struct{}{}
		wg.Add(1)
		p.publishAsync(ctx, body, func(err error) {
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
			}
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
	if firstErr != nil {
		return r, fmt.Errorf("publish: %w", firstErr)
	}
	r.PublishMPS = float64(cfg.Count) / time.Since(start).Seconds()
	var err error
	if r.PublishCost, r.AppCPU.Publish, r.BrokerCPU.Publish, err = endAll(cfg.Count); err != nil {
		return r, err
	}

	// Consume throughput over that backlog.
	if err := startAll(); err != nil {
		return r, err
	}
	start = time.Now()
	cctx, cancel := context.WithTimeout(ctx, consumeTimeout(cfg))
	err = p.consume(cctx, cfg.Count)
	cancel()
	if err != nil {
		return r, fmt.Errorf("consume: %w", err)
	}
	r.ConsumeMPS = float64(cfg.Count) / time.Since(start).Seconds()
	if r.ConsumeCost, r.AppCPU.Consume, r.BrokerCPU.Consume, err = endAll(cfg.Count); err != nil {
		return r, err
	}

	// Latency of one synchronous publish at a time.
	lat := make([]time.Duration, cfg.Latencies)
	for i := range lat {
		t0 := time.Now()
		if err := p.publish(ctx, body); err != nil {
			return r, fmt.Errorf("publish: %w", err)
		}
		lat[i] = time.Since(t0)
	}
	slices.Sort(lat)
	r.P50 = lat[len(lat)/2]
	r.P99 = lat[len(lat)*99/100]

	if !sync32 {
		return r, nil
	}
	if err := cost.start(); err != nil {
		return r, err
	}
	mps, err := publishers(ctx, cfg.Count, func(ctx context.Context) error { return p.publish(ctx, body) })
	if err != nil {
		return r, fmt.Errorf("sync×%d publish: %w", syncPublishers, err)
	}
	r.Sync32MPS = mps
	r.Sync32Cost, err = cost.end(cfg.Count)
	return r, err
}

// publishers runs n calls of publish from syncPublishers goroutines, each
// call returning after its broker ack, and returns the calls per second.
func publishers(ctx context.Context, n int, publish func(context.Context) error) (float64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next    = make(chan struct{}, n)
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range n {
		next <- struct{}{}
	}
	close(next)
	start := time.Now()
	for range syncPublishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if err := publish(ctx); err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// consumeTimeout bounds a consume phase, so a path that stalls becomes a
// failed row instead of a hung run: a minute plus a generous 1 ms a message.
func consumeTimeout(cfg Config) time.Duration {
	return time.Minute + time.Duration(cfg.Count)*time.Millisecond
}

// Failed reports the rows that could not be measured.
func Failed(rs []Result) []Result {
	var f []Result
	for _, r := range rs {
		if r.Err != nil {
			f = append(f, r)
		}
	}
	return f
}

// PrintTable writes the results and, per broker, the ratios (sidecar /
// direct, and for each variant variant / sidecar and variant / direct),
// the p50 the sidecar adds, then the targets of docs/benchmarks.md
// against what this run measured.
func PrintTable(w io.Writer, cfg Config, rs []Result) {
	cfg.defaults()
	fmt.Fprintf(w, "%d messages of %d B, %d publishes in flight, %d timed synchronous publishes, %d synchronous publishers (sync×%d); sidecar row: %s; broker: %s; app → sidecar: %s\n\n",
		cfg.Count, cfg.Size, cfg.Window, cfg.Latencies, syncPublishers, syncPublishers, cfg.Sidecar, cfg.BrokerAt, cfg.AppNet)
	fmt.Fprintf(w, "| %-36s | %13s | %13s | %10s | %10s | %13s | %9s | %9s | %9s | %7s |\n", "path", "publish msg/s", "consume msg/s", "pub p50", "pub p99",
		fmt.Sprintf("sync×%d msg/s", syncPublishers), "CPU µs/msg publish", "CPU µs/msg consume", fmt.Sprintf("CPU µs/msg sync×%d", syncPublishers), "RSS MiB")
	fmt.Fprintf(w, "|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", dashes(38), dashes(15), dashes(15), dashes(12), dashes(12), dashes(15), dashes(11), dashes(11), dashes(11), dashes(9))
	several := len(rs) > 0 && rs[0].Broker != rs[len(rs)-1].Broker
	for i := 0; i < len(rs); {
		j := i
		for j < len(rs) && rs[j].Broker == rs[i].Broker {
			j++
		}
		if several {
			fmt.Fprintf(w, "| %-36s |\n", "**"+rs[i].Broker+"**")
		}
		printBroker(w, rs[i:j])
		i = j
	}
	printSyncCost(w, rs)
	printCosts(w, rs)
	printCPUShares(w, rs)
	printTargets(w, rs)
	printMemory(w, rs)
}

// printCPUShares is each process's CPU per message on the direct and the
// plain sidecar path, and their totals (with BrokerInProcess the broker's
// CPU is in the app column and its own stays blank). All of them share the machine's
// cores, so when a phase is CPU-bound its throughput ratio can be no
// better than the ratio of the totals: the sidecar does a broker client's
// work and relays every message besides. Groups without a sidecar
// process are left out.
func printCPUShares(w io.Writer, rs []Result) {
	type phase struct {
		name                                   string
		dApp, dBroker, sApp, sSidecar, sBroker time.Duration
	}
	header := false
	for i := 0; i < len(rs); {
		j := i
		for j < len(rs) && rs[j].Broker == rs[i].Broker {
			j++
		}
		ro := rolesOf(rs[i:j])
		i = j
		d, s := ro.direct, ro.plain
		if d == nil || s == nil || s.PublishCost == (PerMsg{}) {
			continue
		}
		if !header {
			fmt.Fprintf(w, "\n| %-44s | %10s | %10s | %10s | %10s |\n", "CPU µs per message, by process", "app", "sidecar", "broker", "total")
			fmt.Fprintf(w, "|%s|%s|%s|%s|%s|\n", dashes(46), dashes(12), dashes(12), dashes(12), dashes(12))
			header = true
		}
		var ratios [2]float64
		for k, ph := range []phase{
			{"publish", d.AppCPU.Publish, d.BrokerCPU.Publish, s.AppCPU.Publish, s.PublishCost.CPU, s.BrokerCPU.Publish},
			{"consume", d.AppCPU.Consume, d.BrokerCPU.Consume, s.AppCPU.Consume, s.ConsumeCost.CPU, s.BrokerCPU.Consume},
		} {
			dt, st := ph.dApp+ph.dBroker, ph.sApp+ph.sSidecar+ph.sBroker
			c := func(d time.Duration) string { return cell(10, µs(d), "%.1f") }
			fmt.Fprintf(w, "| %-44s | %s | %10s | %s | %s |\n", s.Broker+": direct, "+ph.name, c(ph.dApp), "", c(ph.dBroker), c(dt))
			fmt.Fprintf(w, "| %-44s | %s | %s | %s | %s |\n", s.Broker+": sidecar, "+ph.name, c(ph.sApp), c(ph.sSidecar), c(ph.sBroker), c(st))
			ratios[k] = div(float64(dt), float64(st))
		}
		fmt.Fprintf(w, "| %-44s | %10s | %10s | %10s | %4.2f, %4.2f |\n", s.Broker+": total direct / sidecar", "", "", "", ratios[0], ratios[1])
	}
}

// printMemory splits each sidecar process's resident memory at the end of
// its row: the anonymous part is what that process alone costs; the
// file-backed part is mostly the executable's pages, which follow the
// binary's size and are shared by every process running the same file
// (docs/benchmarks.md, "Memory").
func printMemory(w io.Writer, rs []Result) {
	header := false
	for i := range rs {
		r := &rs[i]
		if r.Err != nil || r.Kind != KindSidecar || r.AnonKiB+r.FileKiB == 0 {
			continue
		}
		if !header {
			fmt.Fprintf(w, "\n| %-20s | %13s | %20s | %20s |\n", "sidecar memory", "peak RSS MiB", "end: anonymous MiB", "end: file-backed MiB")
			fmt.Fprintf(w, "|%s|%s|%s|%s|\n", dashes(22), dashes(15), dashes(22), dashes(22))
			header = true
		}
		mib := func(kib int) float64 { return float64(kib) / 1024 }
		fmt.Fprintf(w, "| %-20s | %13.1f | %20.1f | %20.1f |\n", r.Broker, mib(r.PeakRSSKiB), mib(r.AnonKiB), mib(r.FileKiB))
	}
}

// printCosts is what the sidecar process spent per message in each
// phase: CPU, syscalls and context switches. Few syscalls per message
// mean messages share them (batching); CPU well above what the syscalls
// explain is work in user space. Rows without a process of their own
// are left out.
func printCosts(w io.Writer, rs []Result) {
	type line struct {
		name string
		c    PerMsg
	}
	var lines []line
	for i := range rs {
		r := &rs[i]
		if r.Err != nil {
			continue
		}
		switch {
		case r.Kind == KindSidecar && r.PublishCost != (PerMsg{}):
			lines = append(lines,
				line{r.Broker + ": SDK publish", r.PublishCost},
				line{r.Broker + ": SDK consume", r.ConsumeCost},
				line{fmt.Sprintf("%s: SDK sync×%d", r.Broker, syncPublishers), r.Sync32Cost})
		case r.Kind == KindHTTPPublish && r.Sync32Cost != (PerMsg{}):
			lines = append(lines, line{r.Broker + ": HTTP publish", r.Sync32Cost})
		case r.Kind == KindHTTPBatch && r.Sync32Cost != (PerMsg{}):
			lines = append(lines, line{fmt.Sprintf("%s: HTTP batch publish ×%d", r.Broker, httpBatchEvents), r.Sync32Cost})
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\n| %-36s | %10s | %10s | %10s | %10s |\n", "sidecar process, per message", "CPU µs", "reads", "writes", "switches")
	fmt.Fprintf(w, "|%s|%s|%s|%s|%s|\n", dashes(38), dashes(12), dashes(12), dashes(12), dashes(12))
	for _, l := range lines {
		fmt.Fprintf(w, "| %-36s | %s | %10.2f | %10.2f | %10.2f |\n", l.name, cell(10, µs(l.c.CPU), "%.1f"), l.c.Reads, l.c.Writes, l.c.Switches)
	}
}

// printSyncCost compares, for the direct and the sidecar path, the first
// NATS sync setting measured (always, by default) with each other one:
// what fsyncing before every ack costs.
func printSyncCost(w io.Writer, rs []Result) {
	type key struct{ group, kind string }
	byKey := map[key]*Result{}
	var groups []string
	for i := range rs {
		r := &rs[i]
		if r.Err != nil || !strings.HasPrefix(r.Broker, "nats, sync ") || (r.Kind != KindDirect && r.Kind != KindSidecar) {
			continue
		}
		if !slices.Contains(groups, r.Broker) {
			groups = append(groups, r.Broker)
		}
		byKey[key{r.Broker, r.Kind}] = r
	}
	if len(groups) < 2 {
		return
	}
	fmt.Fprintf(w, "| %-36s |\n", "**cost of the sync setting**")
	first := strings.TrimPrefix(groups[0], "nats, sync ")
	for _, g := range groups[1:] {
		other := strings.TrimPrefix(g, "nats, sync ")
		for _, kind := range []string{KindDirect, KindSidecar} {
			a, b := byKey[key{groups[0], kind}], byKey[key{g, kind}]
			if a == nil || b == nil {
				continue
			}
			printRatio(w, fmt.Sprintf("%s: %s / %s", kind, first, other), a, b)
		}
	}
}

// div is a/b, or NaN when either was not measured (zero): printed blank.
func div(a, b float64) float64 {
	if a == 0 || b == 0 {
		return math.NaN()
	}
	return a / b
}

func cell(width int, v float64, format string) string {
	if math.IsNaN(v) {
		return strings.Repeat(" ", width)
	}
	return fmt.Sprintf("%*s", width, fmt.Sprintf(format, v))
}

func printRatio(w io.Writer, label string, a, b *Result) {
	if a == nil || b == nil {
		return
	}
	fmt.Fprintf(w, "| %-36s | %s | %s | %s | %s | %s |\n", label,
		cell(13, div(a.PublishMPS, b.PublishMPS), "%.2f"), cell(13, div(a.ConsumeMPS, b.ConsumeMPS), "%.2f"),
		cell(10, div(float64(a.P50), float64(b.P50)), "%.2f"), cell(10, div(float64(a.P99), float64(b.P99)), "%.2f"),
		cell(13, div(a.Sync32MPS, b.Sync32MPS), "%.2f"))
}

// µs is d in microseconds, NaN (blank) for zero: not measured.
func µs(d time.Duration) float64 {
	if d == 0 {
		return math.NaN()
	}
	return float64(d) / float64(time.Microsecond)
}

func printRow(w io.Writer, r *Result) {
	dur := func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return d.Round(time.Microsecond).String()
	}
	rss := math.NaN()
	if r.PeakRSSKiB > 0 {
		rss = float64(r.PeakRSSKiB) / 1024
	}
	fmt.Fprintf(w, "| %-36s | %s | %s | %10s | %10s | %s | %s | %s | %s | %s |\n", r.Path,
		cell(13, div(r.PublishMPS, 1), "%.0f"), cell(13, div(r.ConsumeMPS, 1), "%.0f"), dur(r.P50), dur(r.P99),
		cell(13, div(r.Sync32MPS, 1), "%.0f"), cell(9, µs(r.PublishCost.CPU), "%.1f"), cell(9, µs(r.ConsumeCost.CPU), "%.1f"),
		cell(9, µs(r.Sync32Cost.CPU), "%.1f"), cell(7, rss, "%.1f"))
}

// roles picks a broker group's rows by kind.
type roles struct{ direct, plain, viaGRPC, httpPub, httpBatch *Result }

func rolesOf(rs []Result) roles {
	var ro roles
	for i := range rs {
		r := &rs[i]
		if r.Err != nil {
			continue
		}
		switch r.Kind {
		case KindDirect:
			ro.direct = r
		case KindSidecar:
			ro.plain = r
		case KindGRPC:
			ro.viaGRPC = r
		case KindHTTPPublish:
			ro.httpPub = r
		case KindHTTPBatch:
			ro.httpBatch = r
		}
	}
	return ro
}

func printBroker(w io.Writer, rs []Result) {
	for i := range rs {
		r := &rs[i]
		if r.Err != nil {
			fmt.Fprintf(w, "| %-36s | not measured: %v\n", r.Path, r.Err)
			continue
		}
		printRow(w, r)
	}
	ro := rolesOf(rs)
	printRatio(w, "ratio sidecar / direct", ro.plain, ro.direct)
	printRatio(w, fmt.Sprintf("ratio HTTP publish / direct sync×%d", syncPublishers), ro.httpPub, ro.direct)
	printRatio(w, fmt.Sprintf("ratio HTTP batch / direct sync×%d", syncPublishers), ro.httpBatch, ro.direct)
	if ro.plain != nil && ro.direct != nil {
		fmt.Fprintf(w, "| %-36s | %13s | %13s | %10s | %10s |\n", "added p50 (sidecar − direct)", "", "",
			(ro.plain.P50 - ro.direct.P50).Round(time.Microsecond), (ro.plain.P99 - ro.direct.P99).Round(time.Microsecond))
	}
	printRatio(w, "ratio gRPC / direct", ro.viaGRPC, ro.direct)
	printRatio(w, "ratio gRPC / sidecar (SDK)", ro.viaGRPC, ro.plain)
	for i := range rs {
		r := &rs[i]
		if r.Kind != KindVariant || r.Err != nil {
			continue
		}
		v := variantName[r.Path]
		printRatio(w, "ratio "+v+" / sidecar", r, ro.plain)
		printRatio(w, "ratio "+v+" / direct", r, ro.direct)
	}
}

// printTargets holds each broker group's figures against the targets of
// issue 14 (docs/benchmarks.md, "Targets"); a figure this run did not
// measure (CPU and RSS need --sidecar process) is left out.
func printTargets(w io.Writer, rs []Result) {
	fmt.Fprintf(w, "\n| %-20s | %-44s | %10s | %-8s |\n", "broker", "target", "measured", "met")
	fmt.Fprintf(w, "|%s|%s|%s|%s|\n", dashes(22), dashes(46), dashes(12), dashes(10))
	line := func(group, target string, v float64, format string, ok bool) {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return
		}
		met := "no"
		if ok {
			met = "yes"
		}
		fmt.Fprintf(w, "| %-20s | %-44s | %10s | %-8s |\n", group, target, fmt.Sprintf(format, v), met)
	}
	for i := 0; i < len(rs); {
		j := i
		for j < len(rs) && rs[j].Broker == rs[i].Broker {
			j++
		}
		g := rs[i].Broker
		ro := rolesOf(rs[i:j])
		i = j
		if ro.direct == nil || ro.plain == nil {
			continue
		}
		least := 0.8
		if strings.HasPrefix(g, "nats") {
			least = 0.85
		}
		d, s := ro.direct, ro.plain
		for _, t := range []struct {
			name string
			v    float64
		}{{"publish, sidecar / direct", div(s.PublishMPS, d.PublishMPS)}, {"consume, sidecar / direct", div(s.ConsumeMPS, d.ConsumeMPS)}} {
			line(g, fmt.Sprintf("%s ≥ %.2f", t.name, least), t.v, "%.2f", t.v >= least)
		}
		if h := ro.httpPub; h != nil {
			v := div(h.Sync32MPS, d.Sync32MPS)
			line(g, fmt.Sprintf("HTTP publish / direct sync×%d ≥ 0.80", syncPublishers), v, "%.2f", v >= 0.8)
			line(g, "sidecar CPU µs/msg, HTTP publish ≤ 15", µs(h.Sync32Cost.CPU), "%.1f", µs(h.Sync32Cost.CPU) <= 15)
		}
		line(g, "sidecar CPU µs/msg, SDK publish ≤ 10", µs(s.PublishCost.CPU), "%.1f", µs(s.PublishCost.CPU) <= 10)
		line(g, "sidecar CPU µs/msg, SDK consume ≤ 10", µs(s.ConsumeCost.CPU), "%.1f", µs(s.ConsumeCost.CPU) <= 10)
		added := s.P50 - d.P50
		line(g, "added p50 at one connection ≤ 30 µs", float64(added)/float64(time.Microsecond), "%.0f µs", added <= 30*time.Microsecond)
		// The peak over the SDK phases and one HTTP message a request
		// (the benchmark the target was set for); the HTTP batch
		// phase's 2,048 messages in flight are in its own row's RSS.
		peak, phases := s.PeakRSSKiB, "SDK"
		if h := ro.httpPub; h != nil && h.PeakRSSKiB > 0 {
			peak, phases = h.PeakRSSKiB, "SDK+HTTP"
		}
		if peak > 0 {
			mib := float64(peak) / 1024
			line(g, "sidecar peak RSS, "+phases+" phases ≤ 25 MiB", mib, "%.1f MiB", mib <= 25)
		}
	}
}

func dashes(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '-'
	}
	return string(b)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startNATS(dir string, sync time.Duration) (*setup, error) {
	emb, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{StoreDir: dir + "/nats", Listen: "127.0.0.1:0", SyncInterval: sync})
	if err != nil {
		return nil, err
	}
	url := emb.ClientURL()
	return &setup{
		cluster: natsCluster(url, sync),
		direct: func(ctx context.Context, topic string) (path, func(), error) {
			d, closeD, err := newDirect(ctx, url, topic)
			if err != nil {
				return nil, nil, err
			}
			return d, closeD, nil
		},
		close: emb.Shutdown,
	}, nil
}

// natsCluster is the bench's NATS cluster at url, whose server syncs as
// sync says. With a server that syncs every write, the sidecar sends the
// publishes waiting for a topic as atomic batches (max_batch), as a
// sidecar does by default with its embedded server syncing so.
func natsCluster(url string, sync time.Duration) topology.Cluster {
	c := topology.Cluster{Name: "bench", Kind: topology.KindNATS, Endpoints: []string{url}}
	if sync == 0 {
		c.Options = map[string]string{"max_batch": strconv.Itoa(natsbroker.DefaultMaxBatch)}
	}
	return c
}

// direct is the baseline: nats.go JetStream straight to the server.
type direct struct {
	js    jetstream.JetStream
	topic string
	cons  jetstream.Consumer
}

func newDirect(ctx context.Context, url, topic string) (*direct, func(), error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH_DIRECT", Subjects: []string{topic}, Storage: jetstream.FileStorage}); err != nil {
		nc.Close()
		return nil, nil, err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "BENCH_DIRECT", jetstream.ConsumerConfig{Durable: "g1", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20000})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return &direct{js: js, topic: topic, cons: cons}, nc.Close, nil
}

func (d *direct) publishAsync(ctx context.Context, body []byte, done func(error)) {
	f, err := d.js.PublishAsync(d.topic, body)
	if err != nil {
		done(err)
		return
	}
	go func() {
		select {
		case <-f.Ok():
			done(nil)
		case err := <-f.Err():
			done(err)
		case <-ctx.Done():
			done(ctx.Err())
		}
	}()
}

func (d *direct) publish(ctx context.Context, body []byte) error {
	_, err := d.js.Publish(ctx, d.topic, body)
	return err
}

func (d *direct) consume(ctx context.Context, n int) error {
	it, err := d.cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return err
	}
	defer it.Stop()
	for i := 0; i < n; i++ {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return err
		}
		if err := m.Ack(); err != nil {
			return err
		}
	}
	return nil
}

// sidecarPath is the same work through an in-process sidecar and the SDK,
// over loopback TCP like the direct path.
type sidecarPath struct {
	c        *client.Client
	topic    string
	group    string
	schemaID int    // non-zero: bodies are Confluent-framed Avro
	httpAddr string // the sidecar's HTTP API (the HTTP publish row)
	pid      int    // the sidecar's process when it runs as one, else 0
}

// benchApp is the app the bench registers and publishes as.
const benchApp = "bench"

func (s *sidecarPath) sidecarPID() int { return s.pid }

// registration is what the bench registers for topic: produce, and
// consume as group.
func registration(topic, group string) registry.Registration {
	return registry.Registration{App: benchApp,
		Produce: []registry.Binding{{Group: "p-" + topic, Topic: topic}},
		Consume: []registry.Binding{{Group: group, Topic: topic}}}
}

// sidecarOpts picks a variant of the sidecar path.
type sidecarOpts struct {
	schema  bool // Avro schema registered for the topic, policy enforce
	tracing bool // telemetry with a real SDK tracer provider
	metrics bool // telemetry with tracing off (metrics only)
	push    bool // consume through an HTTP push subscription (push.go)
	grpc    bool // the app uses the gRPC API, not the SDK
	unix    bool // the SDK connects over a unix socket (Config.AppNet)
}

func newSidecar(ctx context.Context, cluster topology.Cluster, dataDir, topic string, o sidecarOpts) (path, func(), error) {
	quiet := quietLogger()
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	tel, closeTel, err := newTelemetry(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	cleanups = append(cleanups, closeTel)
	b, err := brokers.Open(ctx, cluster, quiet)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	cleanups = append(cleanups, func() { _ = b.Close() })
	cfg := msgmesh.Config{DataDir: dataDir, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Broker: b, Logger: quiet, Telemetry: tel}
	if o.unix {
		cfg.Listen = msgmesh.UnixPrefix + filepath.Join(dataDir, "mesh.sock")
	}
	if o.grpc {
		cfg.GRPCListen = "127.0.0.1:0"
	}
	sc, err := msgmesh.New(cfg)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	if err := sc.Start(ctx); err != nil {
		cleanup()
		return nil, nil, err
	}
	cleanups = append(cleanups, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sc.Shutdown(sctx)
	})
	group := "g-" + topic
	if _, _, err := sc.Register(ctx, registration(topic, group), ""); err != nil {
		cleanup()
		return nil, nil, err
	}
	sp := &sidecarPath{topic: topic, group: group, httpAddr: sc.HTTPAddr().String()}
	if o.schema {
		if sp.schemaID, err = setSchema(ctx, sc, topic); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	if o.grpc {
		g, err := newGRPCPath(sc, benchApp, topic, group)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		return g, func() { g.close(); cleanup() }, nil
	}
	c, err := client.Dial(ctx, sc.MeshAddr(), client.WithApp(benchApp), client.WithLogger(quiet))
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	sp.c = c
	if o.schema {
		// The variant must measure validation: a body that is not the
		// schema's must be refused.
		if _, err := c.Publish(ctx, &client.Message{Topic: topic, Body: []byte("not avro")}); err == nil {
			_ = c.Close()
			cleanup()
			return nil, nil, fmt.Errorf("schema variant: an invalid body was accepted")
		}
	}
	if o.push {
		pp, closeRcv, err := startPush(sp, sc)
		if err != nil {
			_ = c.Close()
			cleanup()
			return nil, nil, err
		}
		return pp, func() { _ = c.Close(); cleanup(); closeRcv() }, nil
	}
	return sp, func() { _ = c.Close(); cleanup() }, nil
}

func (s *sidecarPath) publishAsync(ctx context.Context, body []byte, done func(error)) {
	s.c.PublishAsync(ctx, &client.Message{Topic: s.topic, Body: body}, func(_ client.PublishAck, err error) { done(err) })
}

func (s *sidecarPath) publish(ctx context.Context, body []byte) error {
	_, err := s.c.Publish(ctx, &client.Message{Topic: s.topic, Body: body})
	return err
}

func (s *sidecarPath) consume(ctx context.Context, n int) error {
	var once sync.Once
	all := make(chan struct{})
	var count int
	var mu sync.Mutex
	sub, err := s.c.Subscribe(ctx, s.group, s.topic, func(context.Context, *client.Delivery) error {
		mu.Lock()
		count++
		if count == n {
			once.Do(func() { close(all) })
		}
		mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	defer sub.Close(context.Background())
	select {
	case <-all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
