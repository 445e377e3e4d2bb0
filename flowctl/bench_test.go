package flowctl_test

import (
	"context"
	"testing"

	"github.com/msgmesh/msgmesh/flowctl"
)

// BenchmarkAllowPublish is the cost of the publish checks (size and rate)
// for a topic without limits and for one with a rate high enough never to
// make it wait.
func BenchmarkAllowPublish(b *testing.B) {
	c, err := flowctl.New(flowctl.Config{
		MaxMessageBytes: 1 << 20,
		Topics: map[string]flowctl.TopicLimits{
			"limited":   {PublishRate: 1e9, Burst: 1 << 20},
			"orders.>":  {MaxMessageBytes: 4096},
			"billing.*": {PublishRate: 10},
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, topic := range []string{"unlimited", "limited"} {
		b.Run(topic, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.AllowPublish(ctx, topic, 256); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(topic+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := c.AllowPublish(ctx, topic, 256); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkBreaker is one Allow and Record of a closed breaker.
func BenchmarkBreaker(b *testing.B) {
	c, err := flowctl.New(flowctl.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		br := c.Breaker("main")
		if err := br.Allow(); err != nil {
			b.Fatal(err)
		}
		br.Record(nil)
	}
}
