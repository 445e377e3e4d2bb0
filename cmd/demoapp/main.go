// Command demoapp is a small app built on the msgmesh Go SDK (package
// client), configured by environment variables, for the docker-compose
// system of e2e/ (docs/e2e.md). It runs beside its sidecar, as in a pod:
//
//  1. it registers itself with the sidecar's HTTP API (POST
//     /v1/registrations on DEMO_SIDECAR_HTTP), retrying until the sidecar
//     answers;
//  2. it dials the sidecar's mesh listener (DEMO_MESH_ADDR) once; the SDK
//     reconnects by itself, and every dial is counted;
//  3. it subscribes to every DEMO_CONSUME binding and counts what it
//     consumes, by message id (the demo-id header);
//  4. it publishes when asked over its own HTTP API (DEMO_LISTEN), or all
//     the time to DEMO_AUTO_PUBLISH, and records which message ids the
//     broker acknowledged.
//
// Its HTTP API (JSON) is what the e2e driver reads; see api.go.
//
// Environment:
//
//	DEMO_APP            app name (required)
//	DEMO_SECRET         the app's secret: registered with it (Authorization:
//	                    Bearer) and sent in HELLO; needed on a sidecar with
//	                    --require-app-secrets (empty: none)
//	DEMO_PRODUCE        group:topic,... the app publishes to
//	DEMO_CONSUME        group:topic,... the app consumes (subscribed at start)
//	DEMO_MESH_ADDR      sidecar mesh listener (127.0.0.1:7600)
//	DEMO_SIDECAR_HTTP   sidecar HTTP API (http://127.0.0.1:7601)
//	DEMO_LISTEN         this app's HTTP API (0.0.0.0:8080)
//	DEMO_CLIENT_NAME    name sent in HELLO (the host name)
//	DEMO_CONCURRENCY    handler goroutines per subscription (4)
//	DEMO_HANDLE_DELAY   time each delivery takes to handle (0)
//	DEMO_TOPIC_DELAY    topic=duration,...: that time instead for a topic's
//	                    deliveries (a slow consumer, for the hot-upgrade
//	                    scenario's backlog)
//	DEMO_MAX_INFLIGHT   deliveries unanswered per connection (256)
//	DEMO_AUTO_PUBLISH   topic to publish to continuously, from the start
//	DEMO_AUTO_RATE      messages per second of DEMO_AUTO_PUBLISH (10)
//	DEMO_OTLP_ENDPOINT  export the SDK's spans over OTLP/gRPC (http://host:4317)
//	DEMO_SERVICE_NAME   service.name of the spans (DEMO_CLIENT_NAME)
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := configFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demoapp:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "demoapp:", err)
		os.Exit(1)
	}
}

// binding is one group:topic pair of DEMO_PRODUCE or DEMO_CONSUME.
type binding struct {
	Group string `json:"group"`
	Topic string `json:"topic"`
}

// config is the app's environment, parsed and checked once.
type config struct {
	App          string
	Secret       string
	Produce      []binding
	Consume      []binding
	MeshAddr     string
	SidecarHTTP  string
	Listen       string
	ClientName   string
	Concurrency  int
	HandleDelay  time.Duration
	TopicDelay   map[string]time.Duration
	MaxInflight  int
	AutoPublish  string
	AutoRate     float64
	OTLPEndpoint string
	ServiceName  string
}

func configFromEnv(getenv func(string) string) (config, error) {
	get := func(k, def string) string {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
		return def
	}
	host, _ := os.Hostname()
	c := config{
		App:          get("DEMO_APP", ""),
		Secret:       get("DEMO_SECRET", ""),
		MeshAddr:     get("DEMO_MESH_ADDR", "127.0.0.1:7600"),
		SidecarHTTP:  strings.TrimRight(get("DEMO_SIDECAR_HTTP", "http://127.0.0.1:7601"), "/"),
		Listen:       get("DEMO_LISTEN", "0.0.0.0:8080"),
		ClientName:   get("DEMO_CLIENT_NAME", host),
		AutoPublish:  get("DEMO_AUTO_PUBLISH", ""),
		OTLPEndpoint: get("DEMO_OTLP_ENDPOINT", ""),
	}
	c.ServiceName = get("DEMO_SERVICE_NAME", c.ClientName)
	if c.App == "" {
		return c, errors.New("DEMO_APP is required")
	}
	var err error
	if c.Produce, err = parseBindings("DEMO_PRODUCE", get("DEMO_PRODUCE", "")); err != nil {
		return c, err
	}
	if c.Consume, err = parseBindings("DEMO_CONSUME", get("DEMO_CONSUME", "")); err != nil {
		return c, err
	}
	if len(c.Produce)+len(c.Consume) == 0 {
		return c, errors.New("DEMO_PRODUCE and DEMO_CONSUME are both empty: nothing to register")
	}
	num := func(k, def string) (int, error) {
		n, err := strconv.Atoi(get(k, def))
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("%s: want a positive integer, got %q", k, get(k, def))
		}
		return n, nil
	}
	if c.Concurrency, err = num("DEMO_CONCURRENCY", "4"); err != nil {
		return c, err
	}
	if c.MaxInflight, err = num("DEMO_MAX_INFLIGHT", "256"); err != nil {
		return c, err
	}
	if c.HandleDelay, err = time.ParseDuration(get("DEMO_HANDLE_DELAY", "0s")); err != nil || c.HandleDelay < 0 {
		return c, fmt.Errorf("DEMO_HANDLE_DELAY: want a duration like 5ms, got %q", get("DEMO_HANDLE_DELAY", ""))
	}
	if c.TopicDelay, err = parseTopicDelays(get("DEMO_TOPIC_DELAY", "")); err != nil {
		return c, err
	}
	if c.AutoRate, err = strconv.ParseFloat(get("DEMO_AUTO_RATE", "10"), 64); err != nil || c.AutoRate <= 0 {
		return c, fmt.Errorf("DEMO_AUTO_RATE: want a positive number, got %q", get("DEMO_AUTO_RATE", ""))
	}
	if c.AutoPublish != "" && !produces(c.Produce, c.AutoPublish) {
		return c, fmt.Errorf("DEMO_AUTO_PUBLISH %q is not in DEMO_PRODUCE", c.AutoPublish)
	}
	return c, nil
}

// parseTopicDelays reads "topic=duration,topic=duration".
func parseTopicDelays(s string) (map[string]time.Duration, error) {
	m := map[string]time.Duration{}
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		topic, d, ok := strings.Cut(item, "=")
		dur, err := time.ParseDuration(d)
		if !ok || topic == "" || err != nil || dur < 0 {
			return nil, fmt.Errorf("DEMO_TOPIC_DELAY: want topic=duration,..., got %q", item)
		}
		m[topic] = dur
	}
	return m, nil
}

// parseBindings reads "group:topic,group:topic".
func parseBindings(name, s string) ([]binding, error) {
	var out []binding
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		g, t, ok := strings.Cut(part, ":")
		if !ok || g == "" || t == "" {
			return nil, fmt.Errorf("%s: %q is not group:topic", name, part)
		}
		out = append(out, binding{Group: g, Topic: t})
	}
	return out, nil
}

func produces(bs []binding, topic string) bool {
	for _, b := range bs {
		if b.Topic == topic {
			return true
		}
	}
	return false
}
