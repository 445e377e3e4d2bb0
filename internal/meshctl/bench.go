package meshctl

import (
	"context"
	"flag"

	"github.com/msgmesh/msgmesh/internal/bench"
)

func setupBench(fs *flag.FlagSet) func(context.Context, *env) error {
	var cfg bench.Config
	fs.IntVar(&cfg.Count, "count", 20000, "messages per throughput phase")
	fs.IntVar(&cfg.Size, "size", 1024, "body size in bytes")
	fs.IntVar(&cfg.Window, "window", 256, "publishes in flight")
	fs.IntVar(&cfg.Latencies, "latencies", 2000, "synchronous publishes timed for p50/p99")
	return func(ctx context.Context, e *env) error {
		if cfg.Count < 1 || cfg.Size < 1 || cfg.Window < 1 || cfg.Latencies < 1 {
			return usagef("--count, --size, --window and --latencies must be at least 1")
		}
		rs, err := bench.Run(ctx, cfg)
		if err != nil {
			return err
		}
		bench.PrintTable(e.stdout, cfg, rs)
		return nil
	}
}
