package pipeline_test

import (
	"context"
	"testing"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/flowctl"
	"github.com/msgmesh/msgmesh/observe"
	"github.com/msgmesh/msgmesh/pipeline"
)

// BenchmarkPublish: one publish through the stages the sidecar composes
// when tracing is off (metrics, flow control with no limits), the broker
// call a no-op. What the pipeline itself adds per publish: no allocation.
func BenchmarkPublish(b *testing.B) {
	tel, err := observe.New(context.Background(), observe.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	flow, err := flowctl.New(flowctl.Config{})
	if err != nil {
		b.Fatal(err)
	}
	p, err := pipeline.New(tel.MetricsStage(), tel.TracingStage(), flow.Stage())
	if err != nil {
		b.Fatal(err)
	}
	m := &broker.Message{Topic: "t", Body: make([]byte, 1024)}
	send := func(context.Context) (broker.PublishResult, error) { return broker.PublishResult{}, nil }
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Publish(ctx, m, "c", "", send); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
