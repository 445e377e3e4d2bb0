// Command natsd runs a NATS server with JetStream on a fixed port: the
// real github.com/nats-io/nats-server/v2, embedded in a small static
// binary so that the docker-compose system (e2e/, docs/e2e.md) can build
// its broker image FROM scratch without pulling the official one. It keeps
// JetStream's store under --data-dir and serves the monitoring endpoint
// (GET /healthz?js-enabled-only=true) on --http-port. SIGINT and SIGTERM
// shut it down gracefully (lame-duck off: clients see the close at once).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "natsd:", err)
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("natsd", flag.ContinueOnError)
	var (
		host     = fs.String("host", "0.0.0.0", "client listener host")
		port     = fs.Int("port", 4222, "client listener port")
		httpPort = fs.Int("http-port", 8222, "monitoring port (GET /healthz); 0: none")
		dataDir  = fs.String("data-dir", "/data", "JetStream store directory")
		name     = fs.String("name", "natsd", "server name")
		debug    = fs.Bool("debug", false, "debug logging")
		sync     = fs.String("sync", "", "how often JetStream fsyncs its store: always (before every ack) or an interval such as 1s; empty: nats-server's default (2m)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	syncAlways, syncInterval, err := parseSync(*sync)
	if err != nil {
		return err
	}
	opts := &server.Options{
		ServerName:   *name,
		Host:         *host,
		Port:         *port,
		HTTPHost:     *host,
		HTTPPort:     *httpPort,
		JetStream:    true,
		StoreDir:     *dataDir,
		NoSigs:       true, // signals are ours, below
		Logtime:      true,
		Debug:        *debug,
		SyncAlways:   syncAlways,
		SyncInterval: syncInterval,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	srv.ConfigureLogger()
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("not ready for connections after 30s (store %s)", *dataDir)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return fmt.Errorf("JetStream did not start (store %s)", *dataDir)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		srv.Noticef("natsd: %s: shutting down", s)
	case <-waitShutdown(srv):
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	return nil
}

// parseSync reads --sync: "always", an interval, or empty for the
// server's default.
func parseSync(v string) (always bool, interval time.Duration, err error) {
	switch v {
	case "":
		return false, 0, nil
	case "always":
		return true, 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return false, 0, fmt.Errorf("--sync %q: want always or a positive interval such as 1s", v)
	}
	return false, d, nil
}

// waitShutdown closes its channel when the server stops by itself.
func waitShutdown(srv *server.Server) <-chan struct{} {
	ch := make(chan struct{})
	go func() { srv.WaitForShutdown(); close(ch) }()
	return ch
}
