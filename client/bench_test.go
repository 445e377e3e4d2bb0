package client_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// The benchmarks run against the test peer, so they measure the SDK and
// the loopback connection, not a sidecar or a broker. ns/op includes the
// peer's work; the SDK's own syscalls are counted by a wrapping dialer and
// reported as reads/op and writes/op.

// syscalls counts the Read and Write calls the SDK makes on its
// connections (each one syscall on a TCP connection, unless it would
// block).
type syscalls struct{ reads, writes atomic.Int64 }

type countingConn struct {
	net.Conn
	n *syscalls
}

func (c countingConn) Read(p []byte) (int, error) {
	c.n.reads.Add(1)
	return c.Conn.Read(p)
}

func (c countingConn) Write(p []byte) (int, error) {
	c.n.writes.Add(1)
	return c.Conn.Write(p)
}

// dialCounting returns a Dial option whose connections count into n.
func dialCounting(n *syscalls) client.Option {
	return client.WithDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return countingConn{nc, n}, nil
	})
}

// start zeroes n (after Dial's handshake) and resets b's timer.
func (n *syscalls) start(b *testing.B) {
	n.reads.Store(0)
	n.writes.Store(0)
	b.ResetTimer()
}

// report adds the counts per op to b's results.
func (n *syscalls) report(b *testing.B) {
	b.StopTimer()
	b.ReportMetric(float64(n.reads.Load())/float64(b.N), "reads/op")
	b.ReportMetric(float64(n.writes.Load())/float64(b.N), "writes/op")
}

func BenchmarkPublish(b *testing.B) {
	p := newPeer(b)
	p.autoPublish, p.noRecord = true, true
	var n syscalls
	c, err := client.Dial(context.Background(), p.addr(), client.WithApp("bench"), client.WithLogger(quiet), dialCounting(&n))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	body := make([]byte, 256)
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	n.start(b)
	b.RunParallel(func(pb *testing.PB) {
		m := &client.Message{Topic: "bench", Body: body}
		for pb.Next() {
			if _, err := c.Publish(ctx, m); err != nil {
				b.Error(err)
				return
			}
		}
	})
	n.report(b)
}

func BenchmarkPublishAsync(b *testing.B) {
	p := newPeer(b)
	p.autoPublish, p.noRecord = true, true
	var n syscalls
	c, err := client.Dial(context.Background(), p.addr(), client.WithApp("bench"), client.WithLogger(quiet), dialCounting(&n))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m := &client.Message{Topic: "bench", Body: make([]byte, 256)}
	ctx := context.Background()
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	done := func(_ client.PublishAck, err error) {
		if err != nil {
			b.Error(err)
		}
		<-sem
		wg.Done()
	}
	b.SetBytes(int64(len(m.Body)))
	b.ReportAllocs()
	n.start(b)
	for range b.N {
		sem <- struct{}{}
		wg.Add(1)
		c.PublishAsync(ctx, m, done)
	}
	wg.Wait()
	n.report(b)
}

// BenchmarkDeliver pushes deliveries with the sidecar's in-flight bound and
// measures how fast one subscription (concurrency 1) takes and acks them.
func BenchmarkDeliver(b *testing.B) {
	const window = 1024
	p := newPeer(b)
	p.noRecord = true
	slots := make(chan struct{}, window)
	acked := make(chan struct{}, 1)
	var n, want int
	p.onAnswer = func(f mesh.Frame) {
		if f.Kind == mesh.KindAck {
			<-slots
			if n++; n == want {
				acked <- struct{}{}
			}
		}
	}
	var sc syscalls
	c, err := client.Dial(context.Background(), p.addr(), client.WithApp("bench"), client.WithLogger(quiet), client.WithMaxInflight(window), dialCounting(&sc))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	pc := p.accept(b)
	if _, err := c.Subscribe(context.Background(), "g", "t", func(context.Context, *client.Delivery) error { return nil }); err != nil {
		b.Fatal(err)
	}
	want = b.N
	body := make([]byte, 256)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	sc.start(b)
	go func() {
		var buf []byte
		for i := range b.N {
			slots <- struct{}{}
			id := uint64(i + 1)
			m := mesh.Message{DeliveryID: id, Group: "g", Topic: "t", Body: body, MessageID: "m"}
			buf, _ = mesh.AppendFrame(buf[:0], 0, mesh.KindDeliver, 0, id, &m)
			pc.wmu.Lock()
			_, _ = pc.nc.Write(buf)
			pc.wmu.Unlock()
		}
	}()
	<-acked
	sc.report(b)
}

// BenchmarkPublishTraced is BenchmarkPublish with tracing on: the real
// OpenTelemetry SDK, a batching span processor and an exporter that
// discards. The difference to BenchmarkPublish is the SDK's cost of
// tracing a publish.
func BenchmarkPublishTraced(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	defer tp.Shutdown(context.Background())
	p := newPeer(b)
	p.autoPublish, p.noRecord = true, true
	c, err := client.Dial(context.Background(), p.addr(), client.WithApp("bench"), client.WithLogger(quiet), client.WithTracerProvider(tp))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	body := make([]byte, 256)
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		m := &client.Message{Topic: "bench", Body: body}
		for pb.Next() {
			if _, err := c.Publish(ctx, m); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
