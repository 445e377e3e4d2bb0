package msgmesh_test

import (
	"context"
	"testing"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/observe"
)

// The benchmarks below run the whole path in one process (SDK, sidecar,
// embedded JetStream server), with metrics on as in the msgmesh binary;
// allocs/op is per message for all three, so a change in the sidecar's
// per-message allocations shows as a change of it.

func benchEnv(b *testing.B) *env {
	tel, err := observe.New(context.Background(), observe.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	e := newEnv(b, func(c *msgmesh.Config) { c.Telemetry = tel })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	return e
}

// BenchmarkSidecarPublish: synchronous 1 KiB publishes through the
// sidecar's pipeline to the broker, 32 at once.
func BenchmarkSidecarPublish(b *testing.B) {
	e := benchEnv(b)
	c := e.dial()
	body := make([]byte, 1024)
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		m := &client.Message{Topic: topic, Body: body}
		for pb.Next() {
			if _, err := c.Publish(ctx, m); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSidecarDeliver: 1 KiB messages stored beforehand, delivered
// through the sidecar's pipeline (fetch, deliver, settle) and acked; with
// the process's CPU time per message (cpu-ns/op, brokertest.ReportCPU).
func BenchmarkSidecarDeliver(b *testing.B) {
	e := benchEnv(b)
	body := make([]byte, 1024)
	sidecartest.PublishEach(b, e.dial(), b.N, 256, func(int) *client.Message { return &client.Message{Topic: topic, Body: body} })
	got := make(chan struct{}, 1024)
	c := e.dial()
	b.SetBytes(1024)
	b.ReportAllocs()
	defer brokertest.ReportCPU(b)()
	b.ResetTimer()
	if _, err := c.Subscribe(context.Background(), "g1", topic, func(context.Context, *client.Delivery) error {
		got <- struct{}{}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	for range b.N {
		<-got
	}
}
