//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestS4DisconnectSibling: orders1 runs at weight 20, so it forwards 80%
// of what it takes from the broker to orders2 and orders3. While it does,
// orders3's pod is cut off the network (docker network disconnect of the
// container that owns the pod's network namespace, which takes its
// sidecar's forwarding listener, broker and control-plane connections with
// it) for 10 s, then connected again. Every acked message is consumed (at
// least once); the app in the cut-off pod keeps its localhost connection
// to its sidecar.
func TestS4DisconnectSibling(t *testing.T) {
	orders := sys.podsOf("orders")
	p1, p3 := orders[0], orders[2]
	t.Cleanup(func() { resetWeights(t) })
	sys.setWeight(t, p1, 20)
	waitWeights(t, map[*pod]int{p1: 20})

	s1, s3 := p1.mustStats(t), p3.mustStats(t)
	jobs := startTraffic(t, orders[:1], topicChaos, "s4", 80)
	if err := poll(30*time.Second, func() (bool, string) {
		d1, d3 := p1.mustStats(t).minus(s1), p3.mustStats(t).minus(s3)
		return d1.Forwarded >= 50 && d3.FromSiblings >= 10, fmt.Sprintf("orders1 forwarded %d, orders3 got %d from siblings", d1.Forwarded, d3.FromSiblings)
	}); err != nil {
		t.Fatalf("forwarding to orders3 does not happen: %v", err)
	}
	conns := p3.state(t).Connections
	ip, _ := inspect(p3.appCID, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
	s1 = p1.mustStats(t)

	if _, err := run(time.Minute, "docker", "network", "disconnect", networkName, p3.appCID); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	reconnected := false
	t.Cleanup(func() {
		if !reconnected {
			_, _ = run(time.Minute, "docker", "network", "connect", "--alias", p3.name, networkName, p3.appCID)
		}
	})
	t.Logf("orders3's pod disconnected from %s (it had %s)", networkName, ip)
	waitMore(t, 30*time.Second, "traffic while orders3 is cut off", 100, jobs...)
	if d := time.Until(cut.Add(10 * time.Second)); d > 0 {
		time.Sleep(d)
	}
	if _, err := run(time.Minute, "docker", "network", "connect", "--alias", p3.name, networkName, p3.appCID); err != nil {
		t.Fatal(err)
	}
	reconnected = true
	ip2, _ := inspect(p3.appCID, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
	if err := p3.refresh(); err != nil { // its published ports moved
		t.Fatal(err)
	}
	d1 := p1.mustStats(t).minus(s1)
	t.Logf("orders3 connected again after %s (address %s); meanwhile orders1 took %d from the broker, forwarded %d and fell back to local delivery %d times",
		time.Since(cut).Round(time.Millisecond), ip2, d1.FromBroker, d1.Forwarded, d1.Fallbacks)
	if err := poll(60*time.Second, func() (bool, string) { return httpOK(p3.sidecarURL + "/healthz") }); err != nil {
		t.Fatalf("orders3's sidecar after the reconnect: %v", err)
	}
	s3 = p3.mustStats(t)
	waitMore(t, 30*time.Second, "traffic after the reconnect", 100, jobs...)
	if err := poll(60*time.Second, func() (bool, string) {
		d3 := p3.mustStats(t).minus(s3)
		return d3.FromBroker > 0 && d3.FromSiblings > 0, fmt.Sprintf("since the reconnect orders3 took %d from the broker and %d from siblings", d3.FromBroker, d3.FromSiblings)
	}); err != nil {
		t.Errorf("orders3 does not take part again after the reconnect: %v", err)
	}

	sts := stopTraffic(t, jobs)
	g := waitConsumed(t, 150*time.Second, 0, orders, groupOrders, topicChaos, "s4-", idsOf(sts...))
	if len(g.Lost) > 0 {
		t.Fatalf("lost %d acked messages", len(g.Lost))
	}
	t.Logf("nothing acked was lost; %d messages were delivered more than once (at least once: a sibling cut off before it answered)", len(g.Dups))
	if got := p3.state(t).Connections; got != conns {
		t.Errorf("orders3's app connected to its sidecar %d times, was %d: the pod's localhost connection should survive the network cut", got, conns)
	}
}
