// Command msgmesh runs the message-mesh sidecar. With no broker flags it
// starts an embedded NATS JetStream server that keeps its data under
// --data-dir, so one command gives a working mesh; --nats-url points it at
// an external NATS cluster instead.
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
	"path/filepath"
	"syscall"
	"time"

	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/broker/natsbroker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "msgmesh:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("msgmesh", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg        msgmesh.Config
		natsURL    = fs.String("nats-url", "", "external NATS server URL (nats://host:4222); empty: run an embedded JetStream server in <data-dir>/nats")
		natsListen = fs.String("nats-listen", "", "host:port on which the embedded NATS server also accepts TCP clients; empty: in-process only")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		logJSON    = fs.Bool("log-json", false, "log JSON lines instead of text")
		grace      = fs.Duration("shutdown-grace", 30*time.Second, "how long shutdown waits for apps to answer deliveries they hold")
	)
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "directory for registrations and the embedded broker's data")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7600", "mesh-protocol listener")
	fs.StringVar(&cfg.HTTPListen, "http", "127.0.0.1:7601", "HTTP API listener")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", 1024, "unanswered deliveries per app connection")
	fs.DurationVar(&cfg.DeliveryTimeout, "delivery-timeout", 30*time.Second, "time an app has to answer a delivery before it is redelivered")
	fs.IntVar(&cfg.MaxMessageSize, "max-message-size", 1<<20, "largest message body accepted from apps, in bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	if *logJSON {
		cfg.Logger = slog.New(slog.NewJSONHandler(stderr, hopts))
	} else {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, hopts))
	}

	bcfg := natsbroker.Config{URL: *natsURL, Logger: cfg.Logger}
	if *natsURL == "" {
		emb, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{StoreDir: filepath.Join(cfg.DataDir, "nats"), Listen: *natsListen})
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		defer emb.Shutdown()
		nc, err := emb.Connect()
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		defer nc.Close()
		bcfg.Conn = nc
		cfg.Logger.Info("embedded NATS JetStream started", "store", filepath.Join(cfg.DataDir, "nats"), "client_url", emb.ClientURL())
	}
	b, err := natsbroker.New(ctx, bcfg)
	if err != nil {
		return err
	}
	defer b.Close()
	cfg.Broker = b

	sc, err := msgmesh.New(cfg)
	if err != nil {
		return err
	}
	if err := sc.Start(ctx); err != nil {
		_ = sc.Shutdown(context.Background())
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	return sc.Shutdown(sctx)
}
