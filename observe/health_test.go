package observe_test

import (
	"sync/atomic"
	"testing"

	"github.com/msgmesh/msgmesh/observe"
)

// The readiness gauges show what the source reports at each scrape: a
// consumer the source stops reporting drops out, and a cleared source
// shows nothing, unless another one replaced it.
func TestHealthGauges(t *testing.T) {
	tel := newTelemetry(t, observe.Config{})
	if n := countPrefix(scrape(t, tel), "msgmesh_ready"); n != 0 {
		t.Fatalf("%d msgmesh_ready lines without a source, want 0", n)
	}
	var rep atomic.Pointer[observe.HealthReport]
	rep.Store(&observe.HealthReport{
		Ready:     false,
		Clusters:  []observe.ClusterHealth{{Name: "a", Up: true}, {Name: "b", Up: false}},
		Upstreams: []observe.UpstreamHealth{{Topic: "t1", Group: "g1", Ready: true}, {Topic: "t2", Group: "g2", Ready: false}},
	})
	clear1 := tel.Metrics.SetHealthSource(func() observe.HealthReport { return *rep.Load() })
	wantLines(t, scrape(t, tel),
		`msgmesh_ready 0`,
		`msgmesh_broker_up{cluster="a"} 1`,
		`msgmesh_broker_up{cluster="b"} 0`,
		`msgmesh_upstream_ready{group="g1",topic="t1"} 1`,
		`msgmesh_upstream_ready{group="g2",topic="t2"} 0`,
	)

	rep.Store(&observe.HealthReport{Ready: true, Clusters: []observe.ClusterHealth{{Name: "a", Up: true}, {Name: "b", Up: true}},
		Upstreams: []observe.UpstreamHealth{{Topic: "t1", Group: "g1", Ready: true}}})
	got := scrape(t, tel)
	wantLines(t, got, `msgmesh_ready 1`, `msgmesh_broker_up{cluster="b"} 1`)
	if n := countPrefix(got, "msgmesh_upstream_ready{"); n != 1 {
		t.Fatalf("%d msgmesh_upstream_ready series after g2 went away, want 1", n)
	}

	clear2 := tel.Metrics.SetHealthSource(func() observe.HealthReport { return observe.HealthReport{Ready: false} })
	clear1() // replaced already: no effect
	wantLines(t, scrape(t, tel), `msgmesh_ready 0`)
	clear2()
	if n := countPrefix(scrape(t, tel), "msgmesh_ready"); n != 0 {
		t.Fatalf("%d msgmesh_ready lines after the source was cleared, want 0", n)
	}
	var nilMetrics *observe.Metrics
	nilMetrics.SetHealthSource(func() observe.HealthReport { return observe.HealthReport{} })()
}
