package msgmesh_test

import (
	"context"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

// TestFiltersSeePublishesAndDeliveries: the message mesh runs its
// publishes and deliveries through the same filter chain as the RPC
// proxy (rpcproxy/stream). Its Metrics filter counts both exactly, and its Limiter
// refuses publishes over a topic's concurrency limit with RATE_LIMITED.
func TestFiltersSeePublishesAndDeliveries(t *testing.T) {
	metrics := stream.NewMetrics()
	limiter := stream.NewLimiter(map[string]stream.RouteLimit{"limited.topic": {Rate: 1, Burst: 1}})
	e := newEnv(t, func(c *msgmesh.Config) { c.Filters = []stream.Filter{metrics, limiter} })
	e.register("orders", []string{"p1:" + topic, "p1:limited.topic"}, []string{"g1:" + topic})
	got := newTally()
	subscribe(t, e.dial(), "g1", "c", got)
	const n = 200
	publishN(t, e.dial(), topic, "m", n, 32)
	waitFor(t, 20*time.Second, "every message", func() bool { return got.count() >= n })

	pub := metrics.Stats(stream.ExchangePublish, "mesh", topic)
	waitFor(t, 10*time.Second, "every delivery's exchange to end", func() bool {
		return metrics.Stats(stream.ExchangeDeliver, "mesh", topic).ByClass[2].Load() == n
	})
	del := metrics.Stats(stream.ExchangeDeliver, "mesh", topic)
	if pub.Requests.Load() != n || pub.ByClass[2].Load() != n {
		t.Errorf("publish exchanges: %d requests, %d answered 2xx; want %d each", pub.Requests.Load(), pub.ByClass[2].Load(), n)
	}
	if del.Requests.Load() != n || del.InFlight.Load() != 0 {
		t.Errorf("delivery exchanges: %d requests, %d in flight; want %d, 0", del.Requests.Load(), del.InFlight.Load(), n)
	}

	c := e.dial()
	if _, err := c.Publish(context.Background(), &client.Message{Topic: "limited.topic", Body: []byte("1")}); err != nil {
		t.Fatalf("first publish within the limit: %v", err)
	}
	if _, err := c.Publish(context.Background(), &client.Message{Topic: "limited.topic", Body: []byte("2")}); client.CodeOf(err) != mesh.CodeRateLimited {
		t.Fatalf("publish over the limit: %v, want RATE_LIMITED", err)
	}
}
