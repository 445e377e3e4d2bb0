package meshctl

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/msgmesh/msgmesh/internal/bench"
	"github.com/msgmesh/msgmesh/rpcproxy/rpcbench"
)

func setupBench(fs *flag.FlagSet) func(context.Context, *env) error {
	var cfg bench.Config
	fs.IntVar(&cfg.Count, "count", 20000, "messages per throughput phase")
	fs.IntVar(&cfg.Size, "size", 1024, "body size in bytes")
	fs.IntVar(&cfg.Window, "window", 256, "publishes in flight")
	fs.IntVar(&cfg.Latencies, "latencies", 2000, "synchronous publishes timed for p50/p99")
	fs.StringVar(&cfg.Broker, "broker", "nats", "broker to measure against: nats, kafka, rocketmq or all")
	fs.BoolVar(&cfg.Variants, "variants", false, "also measure the sidecar with schema validation, tracing and metrics on (always on with --broker all)")
	fs.StringVar(&cfg.Sidecar, "sidecar", bench.SidecarProcess, "where the plain sidecar row's sidecar runs: process (the msgmesh binary as a child process, so its CPU and RSS columns are its own) or inprocess (in the bench's process; no CPU or RSS)")
	fs.StringVar(&cfg.Binary, "msgmesh-bin", "", "msgmesh binary for --sidecar process; empty: built from ./cmd/msgmesh with the go command")
	fs.StringVar(&cfg.ProfileDir, "profile-dir", "", "with --sidecar process: save a CPU profile (--profile-seconds long, from the start of the sidecar row) and an allocation profile of the sidecar per broker here (go tool pprof; docs/benchmarks.md)")
	fs.IntVar(&cfg.ProfileSeconds, "profile-seconds", 30, "length of the sidecar's CPU profile with --profile-dir, in seconds (under the sidecar's HTTP write timeout, 60 s by default)")
	fs.StringVar(&cfg.BrokerAt, "broker-at", bench.BrokerProcess, "where the broker runs: process (its command, natsd, kafkad or rmq-testbroker, as a child process, as in a deployment) or inprocess (in the bench's process, sharing one Go runtime with the direct client)")
	fs.StringVar(&cfg.AppNet, "app-net", bench.AppNetTCP, "how the app reaches the sidecar on the SDK rows: tcp (loopback) or unix (the mesh listener on a unix socket, msgmesh --listen unix:/path); the gRPC and HTTP rows stay on TCP")
	natsSync := fs.String("nats-sync", "", "sync settings of the embedded NATS server to compare, comma-separated: always (fsync before every ack, the default) or an interval such as 1s or 2m")
	return func(ctx context.Context, e *env) error {
		if *natsSync != "" {
			for _, v := range strings.Split(*natsSync, ",") {
				v = strings.TrimSpace(v)
				if v == "always" {
					cfg.NATSSync = append(cfg.NATSSync, 0)
					continue
				}
				d, err := time.ParseDuration(v)
				if err != nil || d <= 0 {
					return usagef("--nats-sync: %q is neither always nor a positive interval", v)
				}
				cfg.NATSSync = append(cfg.NATSSync, d)
			}
		}
		if cfg.Count < 1 || cfg.Size < 1 || cfg.Window < 1 || cfg.Latencies < 1 {
			return usagef("--count, --size, --window and --latencies must be at least 1")
		}
		if cfg.Broker != "all" && !slices.Contains(bench.Brokers, cfg.Broker) {
			return usagef("--broker must be nats, kafka, rocketmq or all, not %q", cfg.Broker)
		}
		if cfg.Sidecar != bench.SidecarProcess && cfg.Sidecar != bench.SidecarInProcess {
			return usagef("--sidecar must be process or inprocess, not %q", cfg.Sidecar)
		}
		if cfg.BrokerAt != bench.BrokerProcess && cfg.BrokerAt != bench.BrokerInProcess {
			return usagef("--broker-at must be process or inprocess, not %q", cfg.BrokerAt)
		}
		if cfg.AppNet != bench.AppNetTCP && cfg.AppNet != bench.AppNetUnix {
			return usagef("--app-net must be tcp or unix, not %q", cfg.AppNet)
		}
		if cfg.ProfileDir != "" && cfg.Sidecar != bench.SidecarProcess {
			return usagef("--profile-dir needs --sidecar process")
		}
		if cfg.Broker == "all" {
			cfg.Variants = true
		}
		rs, err := bench.Run(ctx, cfg)
		if err != nil {
			return err
		}
		bench.PrintTable(e.stdout, cfg, rs)
		if f := bench.Failed(rs); len(f) > 0 {
			return fmt.Errorf("bench: %d path(s) not measured, first: %s: %v", len(f), f[0].Path, f[0].Err)
		}
		return nil
	}
}

func setupBenchRPC(fs *flag.FlagSet) func(context.Context, *env) error {
	var cfg rpcbench.Config
	fs.DurationVar(&cfg.Duration, "duration", 3*time.Second, "throughput phase per path")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "calls in flight")
	fs.IntVar(&cfg.Size, "size", 1024, "request and answer body size in bytes")
	fs.StringVar(&cfg.ProfileDir, "profile-dir", "", "save a CPU profile of each path's throughput phase here, cpu-<codec>-<path>.pprof (go tool pprof; the whole process: client, sidecars and server)")
	return func(ctx context.Context, e *env) error {
		if cfg.Duration <= 0 || cfg.Concurrency < 1 || cfg.Size < 1 {
			return usagef("--duration, --concurrency and --size must be positive")
		}
		rs, err := rpcbench.Run(ctx, cfg)
		if err != nil {
			return err
		}
		rpcbench.PrintTable(e.stdout, cfg, rs)
		return nil
	}
}
