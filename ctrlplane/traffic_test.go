package ctrlplane_test

import (
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
)

// near reports whether a and b agree to within a millionth.
func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// TestTrafficReports: lease renewals carry traffic reports; the traffic
// endpoint turns them into per-instance rates (counter differences over
// the control plane's time between reports, the clock moved by the test),
// the kept share, a series over the window, and the topology the reports
// name. A sidecar restart (new boot id) does not give negative or huge
// rates; a report soon after the previous one replaces it; reports do not
// change the config version; reports older than the window are forgotten.
// Only operators may read the traffic; a bad report is refused.
func TestTrafficReports(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	c := startBolt(t, leaseOpts(clk))
	ctx := t.Context()
	op := client(t, c.url, testToken)
	cred := mustCreate(t, op, "orders", "10.0.0.9:7602") // a static instance that never reports
	sc := client(t, c.url, cred)
	const addr = "10.0.0.1:7602"
	billLag := int64(42) // NATS says it; the other group's broker does not
	apps := []api.AppBindings{
		{App: "billing", Consumes: []api.GroupBinding{{Group: "bill", Topic: "orders.created", Cluster: "east", Lag: &billLag}}},
		{App: "orders", Produces: []api.TopicCluster{{Topic: "orders.created", Cluster: "east"}, {Topic: "orders.audit", Cluster: "west"}},
			Consumes: []api.GroupBinding{{Group: "ship", Topic: "orders.created", Cluster: "east"}}},
	}
	report := func(boot string, c api.TrafficCounters, inFlight int) {
		t.Helper()
		req := api.LeaseRequest{Addr: addr, Traffic: &api.TrafficReport{Boot: boot, Counters: c, InFlight: inFlight, Apps: apps}}
		if _, err := sc.RenewLease(ctx, "orders", "", req); err != nil {
			t.Fatal(err)
		}
	}
	traffic := func() (api.InstanceTraffic, api.AppTraffic) {
		t.Helper()
		tr, err := op.Traffic(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range tr.Instances {
			if in.ID == addr {
				return in, tr
			}
		}
		t.Fatalf("no instance %s in %+v", addr, tr)
		return api.InstanceTraffic{}, tr
	}

	report("boot-1", api.TrafficCounters{}, 0)
	before, err := sc.Config(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if in, _ := traffic(); in.LastMinute != nil || len(in.Series) != 0 || in.State != api.StateOnline {
		t.Fatalf("after one report: %+v", in)
	}
	// Two intervals of 5 s: 100 from the broker each, 25 of them forwarded.
	for i := uint64(1); i <= 2; i++ {
		clk.Add(5 * time.Second)
		report("boot-1", api.TrafficCounters{FromBroker: 100 * i, Forwarded: 25 * i, Delivered: 75 * i, Acked: 70 * i, Nacked: 5 * i}, 3)
	}
	in, tr := traffic()
	lm := in.LastMinute
	if lm == nil || !near(lm.Seconds, 10) || !near(lm.FromBroker, 20) || !near(lm.Kept, 15) || !near(lm.Forwarded, 5) ||
		!near(lm.Delivered, 15) || !near(lm.Acked, 14) || !near(lm.Nacked, 1) || !near(lm.KeptShare, 0.75) {
		t.Fatalf("last minute: %+v", lm)
	}
	if len(in.Series) != 2 || !near(in.Series[1].Rates.FromBroker, 20) || !in.Series[1].At.Equal(clk.Now()) || in.Series[1].InFlight != 3 {
		t.Fatalf("series: %+v", in.Series)
	}
	if in.Totals.FromBroker != 200 || in.Totals.Kept() != 150 || in.InFlight != 3 || in.Boot != "boot-1" || !in.LastReport.Equal(clk.Now()) {
		t.Fatalf("totals: %+v", in)
	}
	if st := tr.Instances[1]; tr.Window != "10m0s" || len(tr.Instances) != 2 || st.ID != "10.0.0.9:7602" || st.State != api.StateStatic || !st.LastReport.IsZero() {
		t.Fatalf("the static instance: %+v", tr.Instances)
	}
	// The topology: each topic with its cluster, producers and consumers.
	if len(tr.Topology) != 2 {
		t.Fatalf("topology: %+v", tr.Topology)
	}
	audit, created := tr.Topology[0], tr.Topology[1]
	if audit.Topic != "orders.audit" || audit.Cluster != "west" || len(audit.Producers) != 1 || len(audit.Consumers) != 0 {
		t.Fatalf("orders.audit: %+v", audit)
	}
	if created.Topic != "orders.created" || created.Cluster != "east" || len(created.Producers) != 1 || created.Producers[0] != "orders" ||
		len(created.Consumers) != 2 || created.Consumers[0].App != "billing" || created.Consumers[0].Group != "bill" ||
		created.Consumers[0].Lag == nil || *created.Consumers[0].Lag != 42 ||
		created.Consumers[1] != (api.ConsumerView{App: "orders", Group: "ship"}) || len(created.Instances) != 1 || created.Instances[0] != addr {
		t.Fatalf("orders.created: %+v", created)
	}

	// The sidecar restarts: its new boot counts from zero. The interval
	// across the restart counts what the new boot reported.
	clk.Add(5 * time.Second)
	report("boot-2", api.TrafficCounters{FromBroker: 10, Delivered: 10}, 0)
	in, _ = traffic()
	if n := len(in.Series); n != 3 || !near(in.Series[2].Rates.FromBroker, 2) || !near(in.Series[2].Rates.KeptShare, 1) {
		t.Fatalf("the interval across a restart: %+v", in.Series)
	}
	// Reports a second apart: the first is a new sample, the next
	// replaces it (it is less than half a step after the one before).
	clk.Add(time.Second)
	report("boot-2", api.TrafficCounters{FromBroker: 22, Delivered: 22}, 0)
	in, _ = traffic()
	if n := len(in.Series); n != 4 || !near(in.Series[3].Rates.FromBroker, 12) {
		t.Fatalf("after a report 1 s later: %+v", in.Series)
	}
	clk.Add(time.Second)
	report("boot-2", api.TrafficCounters{FromBroker: 26, Delivered: 26}, 0)
	in, _ = traffic()
	if n := len(in.Series); n != 4 || !near(in.Series[3].Rates.FromBroker, 8) || in.Totals.FromBroker != 26 {
		t.Fatalf("after another report 1 s later: %+v", in.Series)
	}
	// An idle minute: the last minute's rates are zero, no broker
	// delivery means no kept share.
	for range 12 {
		clk.Add(5 * time.Second)
		report("boot-2", api.TrafficCounters{FromBroker: 26, Delivered: 26}, 0)
	}
	in, _ = traffic()
	if lm := in.LastMinute; lm == nil || lm.FromBroker != 0 || lm.KeptShare != -1 || !near(lm.Seconds, 60) {
		t.Fatalf("an idle minute: %+v", lm)
	}
	after, err := sc.Config(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if after.Version != before.Version {
		t.Fatalf("traffic reports changed the config version from %d to %d", before.Version, after.Version)
	}

	// Only operators read traffic; a report without a boot id is refused.
	if ans := do(t, http.MethodGet, c.url+"/v1/apps/orders/traffic", cred, ""); ans.status != http.StatusUnauthorized && ans.status != http.StatusForbidden {
		t.Fatalf("the app credential reading traffic: %d %s", ans.status, ans.body)
	}
	if ans := do(t, http.MethodPut, c.url+"/v1/apps/orders/lease", cred, `{"addr":"10.0.0.1:7602","traffic":{"boot":""}}`); ans.status != http.StatusBadRequest {
		t.Fatalf("a report without a boot id: %d %s", ans.status, ans.body)
	}

	// The sidecar goes away: past the window its samples are forgotten.
	clk.Add(trafficWindow + time.Minute)
	waitUntil(t, 30*time.Second, "the old samples to be forgotten", func() bool {
		in, _ := traffic()
		return in.LastReport.IsZero() && in.State == api.StateOffline
	})
}

const trafficWindow = 10 * time.Minute

// TestTrafficRingBound: a sidecar that renews every 3 s for 15 minutes
// leaves at most the ring's bound of samples (128: 127 intervals) at the
// control plane, none older than the window, at least half a step (2.5 s)
// apart.
func TestTrafficRingBound(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	c := startBolt(t, leaseOpts(clk))
	cred := mustCreate(t, client(t, c.url, testToken), "orders")
	sc := client(t, c.url, cred)
	for i := range 300 {
		req := api.LeaseRequest{Addr: "10.0.0.1:7602", Traffic: &api.TrafficReport{Boot: "b", Counters: api.TrafficCounters{FromBroker: uint64(i)}}}
		if _, err := sc.RenewLease(t.Context(), "orders", "", req); err != nil {
			t.Fatal(err)
		}
		clk.Add(3 * time.Second)
	}
	tr, err := client(t, c.url, testToken).Traffic(t.Context(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	s := tr.Instances[0].Series
	if len(s) == 0 || len(s) > 127 {
		t.Fatalf("%d points, want 1..127", len(s))
	}
	for _, p := range s {
		if clk.Now().Sub(p.At) > trafficWindow+3*time.Second || p.Rates.Seconds < 2.5 || !near(p.Rates.FromBroker, 1.0/3) {
			t.Fatalf("point %+v (now %s)", p, clk.Now())
		}
	}
	t.Logf("%d points over %s", len(s), s[len(s)-1].At.Sub(s[0].At))
}
