// Package sidecarapp is the msgmesh binary: flags and config file in, a
// running sidecar out. cmd/msgmesh only calls Run. It is internal because
// it is wiring, not an API: embedders use package msgmesh directly.
package sidecarapp

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/msgmesh/topology"
)

// File is the sidecar's YAML config file (--config). Every section is
// optional; docs/config.md documents each field and config/msgmesh.example.yaml
// shows them all.
type File struct {
	// Brokers are the broker clusters and topic routes. Zero: an embedded
	// NATS JetStream server in <data-dir>/nats holds every topic.
	Brokers *topology.Topology `yaml:"brokers"`
}

// LoadFile reads and validates a config file. Unknown fields are errors.
func LoadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if f.Brokers != nil {
		if err := f.Brokers.Validate(); err != nil {
			return nil, fmt.Errorf("config %s: brokers: %w", path, err)
		}
	}
	return &f, nil
}

// Run parses args, starts the sidecar and its brokers, and serves until ctx
// ends; then it shuts down gracefully.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("msgmesh", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg        msgmesh.Config
		configPath = fs.String("config", "", "YAML config file (broker clusters and routes); see docs/config.md")
		natsURL    = fs.String("nats-url", "", "external NATS server URL (nats://host:4222), a shorthand for a one-cluster config; empty and no --config: run an embedded JetStream server in <data-dir>/nats")
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
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (flags start with --)", fs.Args())
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
	log := cfg.Logger

	file := &File{}
	if *configPath != "" {
		var err error
		if file, err = LoadFile(*configPath); err != nil {
			return err
		}
	}
	topo := file.Brokers
	switch {
	case topo != nil && *natsURL != "":
		return errors.New("--nats-url and a brokers section in --config both say where topics live; use one")
	case topo == nil && *natsURL != "":
		topo = &topology.Topology{Clusters: []topology.Cluster{{Name: "nats", Kind: topology.KindNATS, Endpoints: []string{*natsURL}}}}
		if err := topo.Validate(); err != nil {
			return err
		}
	}

	cfg.Brokers = map[string]broker.Broker{}
	defer func() {
		for _, b := range cfg.Brokers {
			_ = b.Close()
		}
	}()
	if topo == nil {
		storeDir := filepath.Join(cfg.DataDir, "nats")
		emb, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{StoreDir: storeDir, Listen: *natsListen, Logger: log})
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		defer emb.Shutdown()
		nc, err := emb.Connect()
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		defer nc.Close()
		b, err := natsbroker.New(ctx, natsbroker.Config{Conn: nc, Logger: log})
		if err != nil {
			return err
		}
		cfg.Brokers["embedded"] = b
		log.Info("embedded NATS JetStream started", "store", storeDir, "client_url", emb.ClientURL())
	} else {
		for _, c := range topo.Clusters {
			b, err := brokers.Open(ctx, c, log)
			if err != nil {
				return err
			}
			cfg.Brokers[c.Name] = b
			log.Info("broker cluster connected", "cluster", c.Name, "kind", c.Kind, "endpoints", c.Endpoints)
		}
		cfg.Routes, cfg.DefaultCluster = topo.Routes, topo.Default
	}

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
