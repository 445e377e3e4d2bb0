//go:build e2e

package e2e

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// meshctl runs the operators' CLI (built by make images) against the
// control plane, with the operator token in its environment (not on its
// command line, where every local user could read it).
func meshctl(t testing.TB, args ...string) string {
	t.Helper()
	bin := filepath.Join(sys.root, "e2e", "bin", "meshctl")
	args = append(args, "--ctrlplane", sys.ctrlURL)
	out, err := runEnv(time.Minute, []string{"MSGMESH_CTRLPLANE_TOKEN=" + operatorToken}, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestS2Weights: an operator sets the orders pods' weights to 100/100/30
// with meshctl; orders3 then keeps 30% (±3 points) of what it takes from
// the broker and forwards the rest to the two weight-100 siblings, which
// is what the demo apps consume. Then weight 0 through the HTTP API drains
// orders3: its app gets nothing while it keeps reading from the broker.
// Every message is consumed exactly once throughout.
func TestS2Weights(t *testing.T) {
	orders := sys.podsOf("orders")
	p1, p3 := orders[0], orders[2]
	t.Cleanup(func() { resetWeights(t) })

	for i, w := range []int{100, 100, 30} {
		meshctl(t, "weights", "set", "--app", "orders", "--node", orders[i].fwdAddr(), "--weight", strconv.Itoa(w))
	}
	t.Logf("meshctl weights get:\n%s", meshctl(t, "weights", "get", "--app", "orders"))
	waitWeights(t, map[*pod]int{orders[0]: 100, orders[1]: 100, orders[2]: 30})

	// 100/100/30.
	before := map[*pod]stats{}
	for _, p := range orders {
		before[p] = p.mustStats(t)
	}
	const n = 1500
	st := p1.startJob(t, jobSpec{Topic: topicWeights, Prefix: "s2a", Count: n, Workers: 4, Size: 128}).wait(t, 120*time.Second)
	if st.Acked != n || st.Failures != 0 {
		t.Fatalf("publish: %d acked of %d, %d failures %v", st.Acked, n, st.Failures, st.Codes)
	}
	g := waitConsumed(t, 90*time.Second, 2*time.Second, orders, groupOrders, topicWeights, "s2a", st.AckedIDs)
	exactlyOnce(t, "100/100/30", g)
	d := map[*pod]stats{}
	for _, p := range orders {
		d[p] = p.mustStats(t).minus(before[p])
		t.Logf("%s: took %d from the broker, forwarded %d (%d fallbacks), got %d from siblings; its app consumed %d",
			p.name, d[p].FromBroker, d[p].Forwarded, d[p].Fallbacks, d[p].FromSiblings, g.ByPod[p.name])
	}
	d3 := d[p3]
	if d3.FromBroker < 100 {
		t.Fatalf("orders3 took only %d of %d messages from the broker: too few to judge its share", d3.FromBroker, n)
	}
	kept := d3.FromBroker - d3.Forwarded
	share := 100 * float64(kept) / float64(d3.FromBroker)
	appShare := 100 * float64(g.ByPod[p3.name]) / float64(d3.FromBroker)
	t.Logf("orders3 kept %d of %d (%.1f%%); its app consumed %d (%.1f%% of what the sidecar took)", kept, d3.FromBroker, share, g.ByPod[p3.name], appShare)
	if share < 27 || share > 33 {
		t.Errorf("orders3 (weight 30) kept %.1f%% of what it took from the broker, want 30 ± 3", share)
	}
	if appShare < 27 || appShare > 33 {
		t.Errorf("orders3's app consumed %.1f%% of what its sidecar took from the broker, want 30 ± 3", appShare)
	}
	if got := d[orders[0]].FromSiblings + d[orders[1]].FromSiblings; got != d3.Forwarded {
		t.Errorf("orders3 forwarded %d but orders1 and orders2 got %d from siblings", d3.Forwarded, got)
	}
	for _, p := range orders[:2] {
		if d[p].Forwarded != 0 {
			t.Errorf("%s (weight 100) forwarded %d deliveries, want none", p.name, d[p].Forwarded)
		}
	}

	// Weight 0 on orders3, through the HTTP API.
	sys.setWeight(t, p3, 0)
	waitWeights(t, map[*pod]int{p3: 0})
	for _, p := range orders {
		before[p] = p.mustStats(t)
	}
	const m = 600
	st = p1.startJob(t, jobSpec{Topic: topicWeights, Prefix: "s2b", Count: m, Workers: 4, Size: 128}).wait(t, 120*time.Second)
	if st.Acked != m || st.Failures != 0 {
		t.Fatalf("publish: %d acked of %d, %d failures %v", st.Acked, m, st.Failures, st.Codes)
	}
	g = waitConsumed(t, 90*time.Second, 2*time.Second, orders, groupOrders, topicWeights, "s2b", st.AckedIDs)
	exactlyOnce(t, "100/100/0", g)
	d3 = p3.mustStats(t).minus(before[p3])
	t.Logf("weight 0: orders3 took %d from the broker and forwarded %d (%d fallbacks); its app consumed %d", d3.FromBroker, d3.Forwarded, d3.Fallbacks, g.ByPod[p3.name])
	if g.ByPod[p3.name] != 0 {
		t.Errorf("orders3 (weight 0) app consumed %d messages, want none", g.ByPod[p3.name])
	}
	if d3.FromBroker != d3.Forwarded {
		t.Errorf("orders3 (weight 0) took %d from the broker but forwarded %d", d3.FromBroker, d3.Forwarded)
	}
	if d3.FromBroker == 0 {
		t.Logf("note: orders3 took nothing from the broker at weight 0 (its siblings pulled everything)")
	}
}

// resetWeights puts every orders pod back to weight 100.
func resetWeights(t testing.TB) {
	want := map[*pod]int{}
	for _, p := range sys.podsOf("orders") {
		sys.setWeight(t, p, 100)
		want[p] = 100
	}
	waitWeights(t, want)
}
