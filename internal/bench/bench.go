// Package bench measures the sidecar against the direct path in one run:
// an app using nats.go straight against nats-server, and an app using the
// msgmesh SDK through a sidecar to the same nats-server. Both paths run
// against one embedded JetStream server on loopback TCP, in the same
// process and the same run, so the figures that matter are the ratios:
// absolute numbers drift with the machine.
//
// For each path it measures publish throughput (async publishes with a
// window in flight, each acknowledged by JetStream), consume throughput
// (a backlog read and acked by one consumer), and publish latency (one
// synchronous publish at a time, p50 and p99).
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// Config sets the size of a run. Zero values are usable defaults.
type Config struct {
	Count     int // messages per throughput phase; zero: 20000
	Size      int // body bytes; zero: 1024
	Window    int // publishes in flight; zero: 256
	Latencies int // synchronous publishes timed for p50/p99; zero: 2000
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
}

// Result is one path's figures.
type Result struct {
	Path       string
	PublishMPS float64 // acknowledged publishes per second
	ConsumeMPS float64 // consumed and acked messages per second
	P50, P99   time.Duration
}

// path is what a measured path must do; one implementation talks nats.go
// directly, the other the msgmesh SDK.
type path interface {
	publishAsync(ctx context.Context, body []byte, done func(error))
	publish(ctx context.Context, body []byte) error
	// consume reads n messages, acking each, and returns when all are in.
	consume(ctx context.Context, n int) error
}

// Run sets up the broker and sidecar, measures both paths and tears down.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	cfg.defaults()
	dir, err := os.MkdirTemp("", "msgmesh-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	emb, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{StoreDir: dir + "/nats", Listen: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	defer emb.Shutdown()

	direct, closeDirect, err := newDirect(ctx, emb.ClientURL(), "bench.direct")
	if err != nil {
		return nil, err
	}
	defer closeDirect()
	mesh, closeMesh, err := newSidecar(ctx, emb.ClientURL(), dir+"/sidecar", "bench.sidecar")
	if err != nil {
		return nil, err
	}
	defer closeMesh()

	var out []Result
	for _, p := range []struct {
		name string
		p    path
	}{{"direct nats.go → nats-server", direct}, {"app → sidecar → nats-server", mesh}} {
		r, err := measure(ctx, cfg, p.p)
		if err != nil {
			return nil, fmt.Errorf("bench %s: %w", p.name, err)
		}
		r.Path = p.name
		out = append(out, r)
	}
	return out, nil
}

func measure(ctx context.Context, cfg Config, p path) (Result, error) {
	body := make([]byte, cfg.Size)
	for i := range body {
		body[i] = byte('a' + i%26)
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
	if err := p.consume(ctx, cfg.Count); err != nil {
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

// PrintTable writes the results and the sidecar/direct ratios.
func PrintTable(w io.Writer, cfg Config, rs []Result) {
	cfg.defaults()
	fmt.Fprintf(w, "%d messages of %d B, %d publishes in flight, %d timed synchronous publishes\n\n", cfg.Count, cfg.Size, cfg.Window, cfg.Latencies)
	fmt.Fprintf(w, "| %-30s | %12s | %12s | %10s | %10s |\n", "path", "publish msg/s", "consume msg/s", "pub p50", "pub p99")
	fmt.Fprintf(w, "|%s|%s|%s|%s|%s|\n", dashes(32), dashes(15), dashes(15), dashes(12), dashes(12))
	for _, r := range rs {
		fmt.Fprintf(w, "| %-30s | %13.0f | %13.0f | %10s | %10s |\n", r.Path, r.PublishMPS, r.ConsumeMPS, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond))
	}
	if len(rs) == 2 {
		d, s := rs[0], rs[1]
		fmt.Fprintf(w, "| %-30s | %13.2f | %13.2f | %10.2f | %10.2f |\n", "ratio sidecar / direct",
			s.PublishMPS/d.PublishMPS, s.ConsumeMPS/d.ConsumeMPS, float64(s.P50)/float64(d.P50), float64(s.P99)/float64(d.P99))
	}
}

func dashes(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '-'
	}
	return string(b)
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
	c     *client.Client
	topic string
}

func newSidecar(ctx context.Context, url, dataDir, topic string) (*sidecarPath, func(), error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := natsbroker.New(ctx, natsbroker.Config{URL: url, Logger: quiet})
	if err != nil {
		return nil, nil, err
	}
	sc, err := msgmesh.New(msgmesh.Config{DataDir: dataDir, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Broker: b, Logger: quiet})
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	if err := sc.Start(ctx); err != nil {
		b.Close()
		return nil, nil, err
	}
	closeAll := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sc.Shutdown(sctx)
		_ = b.Close()
	}
	if _, err := sc.Register(ctx, registry.Registration{App: "bench",
		Produce: []registry.Binding{{Group: "p1", Topic: topic}},
		Consume: []registry.Binding{{Group: "g1", Topic: topic}}}); err != nil {
		closeAll()
		return nil, nil, err
	}
	c, err := client.Dial(ctx, sc.Addr().String(), client.WithApp("bench"), client.WithLogger(quiet))
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return &sidecarPath{c: c, topic: topic}, func() { _ = c.Close(); closeAll() }, nil
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
	sub, err := s.c.Subscribe(ctx, "g1", s.topic, func(context.Context, *client.Delivery) error {
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
