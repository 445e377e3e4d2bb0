// Package bench measures the sidecar against the direct path in one run:
// an app using the broker's own Go client straight against the broker, and
// an app using the msgmesh SDK through an in-process sidecar to the same
// broker. Both paths run against one in-process broker on loopback TCP, in
// the same process and the same run, so the figures that matter are the
// ratios: absolute numbers drift with the machine.
//
// Brokers: an embedded JetStream server (direct path nats.go), an
// in-process kfake Kafka cluster (direct path segmentio/kafka-go) and the
// in-process RocketMQ test broker (direct path rocketmq-client-go). The
// sidecar's broker adapter comes from brokers.Open on the same cluster.
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
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/client"
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
}

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
}

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
}

// path is what a measured path must do; one implementation per broker
// client talks to the broker directly, another the msgmesh SDK.
type path interface {
	publishAsync(ctx context.Context, body []byte, done func(error))
	publish(ctx context.Context, body []byte) error
	// consume reads n messages, acking each, and returns when all are in.
	consume(ctx context.Context, n int) error
}

// bodier is a path that needs its own bodies (schema validation).
type bodier interface{ body(size int) []byte }

// setup is one broker started for a run.
type setup struct {
	cluster topology.Cluster
	// direct opens the direct path on topic.
	direct func(ctx context.Context, topic string) (path, func(), error)
	close  func()
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
			rs, err := runBroker(ctx, cfg, name, label, sync, fmt.Sprintf("%s/%s-%d", dir, name, i))
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
// (Result.Broker), sync is the embedded NATS server's sync setting.
func runBroker(ctx context.Context, cfg Config, name, label string, sync time.Duration, dir string) ([]Result, error) {
	var (
		st  *setup
		err error
	)
	switch name {
	case "nats":
		st, err = startNATS(dir, sync)
	case "kafka":
		st, err = startKafka()
	case "rocketmq":
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
	entries := []entry{
		{KindDirect, directName[name], func() (path, func(), error) { return st.direct(ctx, topicDirect) }},
		{KindSidecar, "app → sidecar → " + serverName[name], func() (path, func(), error) {
			return newSidecar(ctx, st.cluster, dir+"/sidecar", topicSidecar, sidecarOpts{})
		}},
		{KindVariant, pushRowName, func() (path, func(), error) {
			return newSidecar(ctx, st.cluster, dir+"/push", topicPush, sidecarOpts{push: true})
		}},
		{KindGRPC, "app → gRPC → sidecar → " + serverName[name], func() (path, func(), error) {
			return newSidecar(ctx, st.cluster, dir+"/grpc", topicGRPC, sidecarOpts{grpc: true})
		}},
	}
	if cfg.Variants {
		entries = append(entries,
			entry{KindVariant, "sidecar + schema (Avro, enforce)", func() (path, func(), error) {
				return newSidecar(ctx, st.cluster, dir+"/schema", topicSchema, sidecarOpts{schema: true})
			}},
			entry{KindVariant, "sidecar + tracing", func() (path, func(), error) {
				return newSidecar(ctx, st.cluster, dir+"/tracing", topicTracing, sidecarOpts{tracing: true})
			}},
			entry{KindVariant, "sidecar + metrics", func() (path, func(), error) {
				return newSidecar(ctx, st.cluster, dir+"/metrics", topicMetrics, sidecarOpts{metrics: true})
			}},
		)
	}
	var out []Result
	for _, e := range entries {
		r := Result{Broker: label, Kind: e.kind, Path: e.name}
		p, closeP, err := e.open()
		if err != nil {
			r.Err = fmt.Errorf("setup: %w", err)
		} else {
			r, err = measure(ctx, cfg, p)
			closeP()
			r.Broker, r.Kind, r.Path = label, e.kind, e.name
			r.Err = err
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		out = append(out, r)
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

func measure(ctx context.Context, cfg Config, p path) (Result, error) {
	body := make([]byte, cfg.Size)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	if b, ok := p.(bodier); ok {
		body = b.body(cfg.Size)
	}
	var r Result

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

	// Consume throughput over that backlog.
	start = time.Now()
	cctx, cancel := context.WithTimeout(ctx, consumeTimeout(cfg))
	err := p.consume(cctx, cfg.Count)
	cancel()
	if err != nil {
		return r, fmt.Errorf("consume: %w", err)
	}
	r.ConsumeMPS = float64(cfg.Count) / time.Since(start).Seconds()

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
	return r, nil
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

// PrintTable writes the results and, per broker, the ratios: sidecar /
// direct, and for each variant variant / sidecar and variant / direct.
func PrintTable(w io.Writer, cfg Config, rs []Result) {
	cfg.defaults()
	fmt.Fprintf(w, "%d messages of %d B, %d publishes in flight, %d timed synchronous publishes\n\n", cfg.Count, cfg.Size, cfg.Window, cfg.Latencies)
	fmt.Fprintf(w, "| %-36s | %12s | %12s | %10s | %10s |\n", "path", "publish msg/s", "consume msg/s", "pub p50", "pub p99")
	fmt.Fprintf(w, "|%s|%s|%s|%s|%s|\n", dashes(38), dashes(15), dashes(15), dashes(12), dashes(12))
	several := len(rs) > 0 && rs[0].Broker != rs[len(rs)-1].Broker
	for i := 0; i < len(rs); {
		j := i
		for j < len(rs) && rs[j].Broker == rs[i].Broker {
			j++
		}
		if several {
			fmt.Fprintf(w, "| %-36s | %13s | %13s | %10s | %10s |\n", "**"+rs[i].Broker+"**", "", "", "", "")
		}
		printBroker(w, rs[i:j])
		i = j
	}
	printSyncCost(w, rs)
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
	fmt.Fprintf(w, "| %-36s | %13s | %13s | %10s | %10s |\n", "**cost of the sync setting**", "", "", "", "")
	first := strings.TrimPrefix(groups[0], "nats, sync ")
	for _, g := range groups[1:] {
		other := strings.TrimPrefix(g, "nats, sync ")
		for _, kind := range []string{KindDirect, KindSidecar} {
			a, b := byKey[key{groups[0], kind}], byKey[key{g, kind}]
			if a == nil || b == nil {
				continue
			}
			fmt.Fprintf(w, "| %-36s | %13.2f | %13.2f | %10.2f | %10.2f |\n", fmt.Sprintf("%s: %s / %s", kind, first, other),
				a.PublishMPS/b.PublishMPS, a.ConsumeMPS/b.ConsumeMPS, float64(a.P50)/float64(b.P50), float64(a.P99)/float64(b.P99))
		}
	}
}

func printBroker(w io.Writer, rs []Result) {
	var direct, plain, viaGRPC *Result
	for i := range rs {
		r := &rs[i]
		if r.Err != nil {
			fmt.Fprintf(w, "| %-36s | not measured: %v\n", r.Path, r.Err)
			continue
		}
		fmt.Fprintf(w, "| %-36s | %13.0f | %13.0f | %10s | %10s |\n", r.Path, r.PublishMPS, r.ConsumeMPS, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond))
		switch r.Kind {
		case KindDirect:
			direct = r
		case KindSidecar:
			plain = r
		case KindGRPC:
			viaGRPC = r
		}
	}
	ratio := func(label string, a, b *Result) {
		if a == nil || b == nil {
			return
		}
		fmt.Fprintf(w, "| %-36s | %13.2f | %13.2f | %10.2f | %10.2f |\n", label,
			a.PublishMPS/b.PublishMPS, a.ConsumeMPS/b.ConsumeMPS, float64(a.P50)/float64(b.P50), float64(a.P99)/float64(b.P99))
	}
	ratio("ratio sidecar / direct", plain, direct)
	ratio("ratio gRPC / direct", viaGRPC, direct)
	ratio("ratio gRPC / sidecar (SDK)", viaGRPC, plain)
	for i := range rs {
		r := &rs[i]
		if r.Kind != KindVariant || r.Err != nil {
			continue
		}
		v := variantName[r.Path]
		ratio("ratio "+v+" / sidecar", r, plain)
		ratio("ratio "+v+" / direct", r, direct)
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
		cluster: topology.Cluster{Name: "bench", Kind: topology.KindNATS, Endpoints: []string{url}},
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
	schemaID int // non-zero: bodies are Confluent-framed Avro
}

// sidecarOpts picks a variant of the sidecar path.
type sidecarOpts struct {
	schema  bool // Avro schema registered for the topic, policy enforce
	tracing bool // telemetry with a real SDK tracer provider
	metrics bool // telemetry with tracing off (metrics only)
	push    bool // consume through an HTTP push subscription (push.go)
	grpc    bool // the app uses the gRPC API, not the SDK
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
	if _, _, err := sc.Register(ctx, registry.Registration{App: "bench",
		Produce: []registry.Binding{{Group: "p-" + topic, Topic: topic}},
		Consume: []registry.Binding{{Group: group, Topic: topic}}}, ""); err != nil {
		cleanup()
		return nil, nil, err
	}
	sp := &sidecarPath{topic: topic, group: group}
	if o.schema {
		if sp.schemaID, err = setSchema(ctx, sc, topic); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	if o.grpc {
		g, err := newGRPCPath(sc, "bench", topic, group)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		return g, func() { g.close(); cleanup() }, nil
	}
	c, err := client.Dial(ctx, sc.Addr().String(), client.WithApp("bench"), client.WithLogger(quiet))
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
