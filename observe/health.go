package observe

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel/metric"
)

// HealthReport is the sidecar's readiness (its GET /readyz) as the
// readiness gauges show it.
type HealthReport struct {
	// Ready: the sidecar as a whole is ready.
	Ready bool
	// Clusters are the configured broker clusters and whether their last
	// check passed.
	Clusters []ClusterHealth
	// Upstreams are the upstream consumers the registrations ask for and
	// whether each is running and ready.
	Upstreams []UpstreamHealth
}

// ClusterHealth is one broker cluster of a HealthReport.
type ClusterHealth struct {
	Name string
	Up   bool
}

// UpstreamHealth is one upstream consumer of a HealthReport.
type UpstreamHealth struct {
	Topic, Group string
	Ready        bool
}

// health holds the readiness gauges, read at each collection from the
// source SetHealthSource set.
type health struct {
	ready    metric.Int64ObservableGauge
	brokerUp metric.Int64ObservableGauge
	upstream metric.Int64ObservableGauge
	source   atomic.Pointer[func() HealthReport]
}

// newHealth creates the readiness gauges on m and the callback that
// observes them.
func (x *Metrics) newHealth(m metric.Meter) error {
	h := &x.health
	var err error
	if h.ready, err = m.Int64ObservableGauge("msgmesh.ready",
		metric.WithDescription("1 when the sidecar is ready (GET /readyz answers 200), else 0.")); err != nil {
		return err
	}
	if h.brokerUp, err = m.Int64ObservableGauge("msgmesh.broker.up",
		metric.WithDescription("1 when the broker cluster passed its last readiness check, else 0.")); err != nil {
		return err
	}
	if h.upstream, err = m.Int64ObservableGauge("msgmesh.upstream.ready",
		metric.WithDescription("1 when the upstream consumer of (topic, group) runs and is ready, else 0 (starting, failed, erroring, broker down, paused).")); err != nil {
		return err
	}
	_, err = m.RegisterCallback(x.observeHealth, h.ready, h.brokerUp, h.upstream)
	return err
}

func (x *Metrics) observeHealth(_ context.Context, o metric.Observer) error {
	f := x.health.source.Load()
	if f == nil {
		return nil
	}
	r := (*f)()
	o.ObserveInt64(x.health.ready, b2i(r.Ready))
	for _, c := range r.Clusters {
		o.ObserveInt64(x.health.brokerUp, b2i(c.Up), x.byCluster.get(labels{c.Name}).obs...)
	}
	for _, u := range r.Upstreams {
		o.ObserveInt64(x.health.upstream, b2i(u.Ready), x.byGroup.get(labels{u.Topic, u.Group}).obs...)
	}
	return nil
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// SetHealthSource makes the readiness gauges (msgmesh_ready,
// msgmesh_broker_up{cluster}, msgmesh_upstream_ready{topic,group}) show
// what f reports, called at each collection; f must not block. Series of
// clusters and upstreams f no longer reports disappear. The returned func
// takes f off again, unless another source replaced it meanwhile. Label
// values go through the same caps as every other instrument's.
func (x *Metrics) SetHealthSource(f func() HealthReport) (clear func()) {
	if x == nil {
		return func() {}
	}
	p := &f
	x.health.source.Store(p)
	return func() { x.health.source.CompareAndSwap(p, nil) }
}
