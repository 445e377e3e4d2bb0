// Command rmq-testbroker runs the RocketMQ remoting-protocol test broker of
// internal/rmqtest (a name server and one broker in one process) for local
// runs and docker-compose replays:
//
//	rmq-testbroker --listen 0.0.0.0:9876 --broker-listen 0.0.0.0:10911 \
//	    --advertise rmq:10911 --data-dir /data
//
// It is not a RocketMQ server; see the rmqtest package doc for what it
// does not implement. Without --data-dir everything is in memory and lost
// when it stops. It stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/msgmesh/msgmesh/internal/rmqtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "rmq-testbroker:", err)
		}
		os.Exit(1)
	}
}

// run parses args, starts the broker and serves until ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("rmq-testbroker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      rmqtest.Config
		logLevel slog.Level
		delay    time.Duration
	)
	fs.StringVar(&cfg.NameServerAddr, "listen", "127.0.0.1:9876", "name server listen address")
	fs.StringVar(&cfg.BrokerAddr, "broker-listen", "127.0.0.1:10911", "broker listen address")
	fs.StringVar(&cfg.Advertise, "advertise", "", "broker address given to clients (host:port); default: the broker listen address, 127.0.0.1 for 0.0.0.0")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for the commit log and offsets; default: in memory only")
	fs.IntVar(&cfg.QueuesPerTopic, "queues", rmqtest.DefaultQueuesPerTopic, "queues of an auto-created topic")
	fs.IntVar(&cfg.MaxMessageSize, "max-message-size", rmqtest.DefaultMaxMessageSize, "largest message body in bytes")
	fs.DurationVar(&delay, "retry-delay", 0, "if set, every delay level waits this long instead of RocketMQ's 1s..2h table (speeds up retries in tests)")
	fs.TextVar(&logLevel, "log-level", slog.LevelInfo, "log level: DEBUG, INFO, WARN or ERROR")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if delay > 0 {
		cfg.DelayLevels = make([]time.Duration, len(rmqtest.DefaultDelayLevels))
		for i := range cfg.DelayLevels {
			cfg.DelayLevels[i] = delay
		}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel}))
	b, err := rmqtest.Start(cfg)
	if err != nil {
		return err
	}
	storage := "in memory (lost on exit)"
	if cfg.DataDir != "" {
		storage = cfg.DataDir
	}
	cfg.Logger.Info("rmq-testbroker serving", "name_server", b.NameServer(), "broker", b.BrokerAddr(),
		"advertise", b.Advertise(), "storage", storage)
	<-ctx.Done()
	cfg.Logger.Info("rmq-testbroker stopping")
	return b.Close()
}
