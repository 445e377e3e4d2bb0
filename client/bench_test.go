package client_test

import (
	"context"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// The benchmarks run against the test peer, so they measure the SDK and
// the loopback connection, not a sidecar or a broker.

func BenchmarkPublish(b *testing.B) {
	p := newPeer(b)
	p.autoPublish, p.noRecord = true, true
	c, err := client.Dial(context.Background(), p.addr(), client.WithApp("bench"), client.WithLogger(quiet))
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

func BenchmarkPublishAsync(b *testing.B) {
	p := newPeer(b)
	p.autoPublish, p.noRecord = true, true
	c, err := client.Dial(context.Background(), p.addr(), client.WithApp("bench"), client.WithLogger(quiet))
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
	b.ResetTimer()
	for range b.N {
		sem <- struct{}{}
		wg.Add(1)
		c.PublishAsync(ctx, m, done)
	}
	wg.Wait()
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
	c, err := client.Dial(context.Background(), p.addr(), client.WithApp("bench"), client.WithLogger(quiet), client.WithMaxInflight(window))
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
	b.ResetTimer()
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
