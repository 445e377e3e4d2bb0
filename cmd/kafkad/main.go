// Command kafkad serves github.com/twmb/franz-go/pkg/kfake, an in-memory
// Kafka cluster speaking the real Kafka wire protocol, on a fixed port, so
// that the docker-compose system (e2e/, docs/e2e.md) has a Kafka broker
// without pulling an image. It is the same fake the repo's Kafka tests use
// (broker/kafkabroker/kafkatest), not a Kafka server.
//
// It listens on --listen (all interfaces) and advertises --advertise in
// its metadata, so clients in other containers reach it by the compose
// service name. Data lives in memory unless --data-dir is set. SIGINT and
// SIGTERM close it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "kafkad:", err)
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("kafkad", flag.ContinueOnError)
	var (
		listen     = fs.String("listen", "0.0.0.0:9092", "host:port the broker listens on")
		advertise  = fs.String("advertise", "", "host:port clients are told to connect to (metadata); default: --listen")
		dataDir    = fs.String("data-dir", "", "persist the cluster's state here; empty: in memory only")
		partitions = fs.Int("partitions", 3, "partitions of auto-created topics")
		logLevel   = fs.String("log-level", "warn", "none, error, warn, info or debug")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	host, portStr, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return fmt.Errorf("--listen %q: need a fixed port", *listen)
	}
	adv := *advertise
	if adv == "" {
		adv = *listen
	}
	if _, _, err := net.SplitHostPort(adv); err != nil {
		return fmt.Errorf("--advertise: %w", err)
	}
	levels := map[string]kfake.LogLevel{"none": kfake.LogLevelNone, "error": kfake.LogLevelError,
		"warn": kfake.LogLevelWarn, "info": kfake.LogLevelInfo, "debug": kfake.LogLevelDebug}
	level, ok := levels[*logLevel]
	if !ok {
		return fmt.Errorf("--log-level %q: want none, error, warn, info or debug", *logLevel)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(*partitions),
		kfake.WithLogger(kfake.BasicLogger(os.Stderr, level)),
		// kfake listens on 127.0.0.1:<port> and advertises its listener's
		// address; listen on host instead and report adv, the address
		// other containers can reach.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := net.Listen(network, net.JoinHostPort(host, portStr))
			if err != nil {
				return nil, err
			}
			return advertised{Listener: ln, addr: advAddr(adv)}, nil
		}),
	}
	if *dataDir != "" {
		opts = append(opts, kfake.DataDir(*dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "kafkad: kfake serving on %s, advertised as %s\n", *listen, adv)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s := <-sig
	fmt.Fprintf(os.Stderr, "kafkad: %s: shutting down\n", s)
	c.Close()
	return nil
}

// advertised is a listener whose Addr is the advertised address, which
// kfake puts in its metadata answers.
type advertised struct {
	net.Listener
	addr advAddr
}

func (l advertised) Addr() net.Addr { return l.addr }

type advAddr string

func (a advAddr) Network() string { return "tcp" }
func (a advAddr) String() string  { return string(a) }
