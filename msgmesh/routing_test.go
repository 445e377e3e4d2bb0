package msgmesh_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/internal/testbin"
	"github.com/msgmesh/msgmesh/msgmesh"
)

// seenLog records, per body, how often an app processed it and when first.
type seenLog struct {
	mu    sync.Mutex
	count map[string]int
	first map[string]time.Time
}

func newSeenLog() *seenLog {
	return &seenLog{count: map[string]int{}, first: map[string]time.Time{}}
}

func (l *seenLog) add(body string) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count[body] == 0 {
		l.first[body] = now
	}
	l.count[body]++
}

// distinct counts the bodies "<prefix>-<i>", i < n, seen at least once.
func (l *seenLog) distinct(prefix string, n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := 0
	for i := range n {
		if l.count[fmt.Sprintf("%s-%d", prefix, i)] > 0 {
			seen++
		}
	}
	return seen
}

// firstWith is the earliest first sighting of a body starting with
// prefix at or after since; zero if none.
func (l *seenLog) firstWith(prefix string, since time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for b, at := range l.first {
		if strings.HasPrefix(b, prefix) && !at.Before(since) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

// sidecarStats reads GET /v1/stats, routing counters included.
func sidecarStats(t testing.TB, httpAddr string) msgmesh.Stats {
	t.Helper()
	var st msgmesh.Stats
	getStats(t, httpAddr, &st)
	return st
}

// TestRoutingRules: three msgmesh processes of app "orders" on one NATS
// JetStream server, labelled version=v1, v1 and v2, with a real control
// plane (docs/routing.md):
//
//   - colour blue -> version=v2: every blue message is processed by the v2
//     instance and by no other, whichever sidecar took it from the broker;
//   - a 10% canary to version=v2: v2 processes 10% ± 1 point of the
//     uncoloured messages;
//   - a rule change while traffic runs reaches all three sidecars (within
//     a second) and messages published after it follow it;
//   - v2 is killed while blue traffic runs: the fallback (anywhere) applies
//     within a second and no message is lost.
func TestRoutingRules(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	cpURL, _ := controlPlaneAt(t, t.TempDir(), "127.0.0.1:0", func(o *ctrlplane.Options) { o.LeaseTTL = 2 * time.Second })
	ctx := context.Background()
	op, created, cfgPath := ordersAt(t, cpURL)

	type node struct {
		name, version        string
		mesh, http, fwd, dir string
		proc                 *sidecartest.Proc
		app                  *seenLog
	}
	start := func(n *node) {
		n.proc = sidecartest.StartProcEnv(t, []string{"MSGMESH_APP_CREDENTIAL=" + created.Credential}, bin,
			"--data-dir", n.dir, "--listen", n.mesh, "--http", n.http, "--config", cfgPath,
			"--ctrlplane", cpURL, "--app", "orders", "--forward-listen", n.fwd,
			"--instance-label", "version="+n.version, "--delivery-timeout", "3s", "--log-level", "warn")
		sidecartest.WaitHealthy(t, n.proc, n.http)
		if status, body := sidecartest.Register(t, n.http, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated && status != http.StatusOK {
			t.Fatalf("register: %d %s", status, body)
		}
		app := n.app
		if _, err := sidecartest.Dial(t, n.mesh).Subscribe(ctx, "g1", topic, func(_ context.Context, d *client.Delivery) error {
			app.add(string(d.Body))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	nodes := []*node{{name: "a", version: "v1"}, {name: "b", version: "v1"}, {name: "c", version: "v2"}}
	for _, n := range nodes {
		n.mesh, n.http, n.fwd, n.dir, n.app = freePort(t), freePort(t), freePort(t), t.TempDir(), newSeenLog()
		start(n)
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	for _, n := range nodes {
		sidecartest.WaitFor(t, 30*time.Second, "node "+n.name+" to register itself with its label", func() bool {
			ins, err := op.Instances(ctx, "orders")
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(ins, func(in api.Instance) bool { return in.ID == n.fwd })
			return i >= 0 && ins[i].State() == api.StateOnline && ins[i].Labels["version"] == n.version
		})
	}
	// setRules replaces the rules and waits until every running sidecar
	// has them in force; it returns how long that took after the PUT.
	setRules := func(running []*node, rules ...api.RoutingRule) time.Duration {
		t.Helper()
		var names []string
		for _, r := range rules {
			names = append(names, r.Name)
		}
		slices.Sort(names)
		at := time.Now()
		if _, err := op.SetRouting(ctx, "orders", api.Routing{Rules: rules}); err != nil {
			t.Fatal(err)
		}
		for _, n := range running {
			sidecartest.WaitFor(t, 10*time.Second, "node "+n.name+" to apply the rules", func() bool {
				return slices.Equal(sidecarStats(t, n.http).RulesInForce, names)
			})
		}
		return time.Since(at)
	}
	v2 := map[string]string{"version": "v2"}
	percent := func(p int) *int { return &p }
	blue := api.RoutingRule{Name: "blue-to-v2", Colour: "blue", Selector: v2}
	pub := sidecartest.Dial(t, a.mesh)
	publish := func(prefix, colour string, n, window int) {
		t.Helper()
		sidecartest.PublishEach(t, pub, n, window, func(i int) *client.Message {
			return &client.Message{Topic: topic, Colour: colour, Body: []byte(fmt.Sprintf("%s-%d", prefix, i))}
		})
	}
	anywhere := func(prefix string, n int) int { // distinct bodies seen by any node
		seen := map[string]bool{}
		for _, x := range nodes {
			x.app.mu.Lock()
			for i := range n {
				if body := fmt.Sprintf("%s-%d", prefix, i); x.app.count[body] > 0 {
					seen[body] = true
				}
			}
			x.app.mu.Unlock()
		}
		return len(seen)
	}

	// 1. Blue goes to v2, whichever sidecar took it from the broker.
	took := setRules(nodes, blue)
	t.Logf("rules reached all 3 sidecars %s after the PUT", took.Round(time.Millisecond))
	const nBlue = 600
	publish("blue", "blue", nBlue, 64)
	sidecartest.WaitFor(t, 60*time.Second, "every blue message at v2", func() bool { return c.app.distinct("blue", nBlue) == nBlue })
	for _, n := range []*node{a, b} {
		if got := n.app.distinct("blue", nBlue); got != 0 {
			t.Fatalf("v1 node %s processed %d blue messages, want none", n.name, got)
		}
	}
	var tookFromBroker []string
	for _, n := range nodes {
		rc := sidecarStats(t, n.http).Rules[blue.Name]
		if rc.FellBack != 0 || rc.Matched != rc.Applied {
			t.Fatalf("node %s: blue rule counters %+v, want no fallback", n.name, rc)
		}
		tookFromBroker = append(tookFromBroker, fmt.Sprintf("%s %d", n.name, rc.Matched))
	}
	t.Logf("blue: %d/%d processed by v2, 0 elsewhere; the rule matched at each sidecar (took from the broker): %s",
		c.app.distinct("blue", nBlue), nBlue, strings.Join(tookFromBroker, ", "))

	// The sidecars report the rule's counters to the control plane with
	// their lease renewals.
	sidecartest.WaitFor(t, 30*time.Second, "the control plane to have the blue rule's counters", func() bool {
		tr, err := op.Traffic(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		var matched, applied uint64
		for _, in := range tr.Instances {
			matched += in.Rules[blue.Name].Matched
			applied += in.Rules[blue.Name].Applied
		}
		return matched >= nBlue && applied == matched
	})

	// 2. A 10% canary of the uncoloured messages to v2.
	canary := api.RoutingRule{Name: "canary-v2", Percent: percent(10), Selector: v2}
	setRules(nodes, blue, canary)
	nCanary := 10_000
	if testbin.Race {
		nCanary = 3_000
	}
	publish("plain", "", nCanary, 128)
	sidecartest.WaitFor(t, 120*time.Second, "every uncoloured message", func() bool { return anywhere("plain", nCanary) == nCanary })
	atV2 := c.app.distinct("plain", nCanary)
	share := 100 * float64(atV2) / float64(nCanary)
	t.Logf("canary 10%%: v2 processed %d of %d uncoloured messages (%.2f%%), v1 nodes %d and %d",
		atV2, nCanary, share, a.app.distinct("plain", nCanary), b.app.distinct("plain", nCanary))
	if share < 9 || share > 11 {
		t.Fatalf("v2 processed %.2f%% of the uncoloured messages, want 10%% ± 1 point", share)
	}

	// 3. A rule change while traffic runs: the canary is turned off (0%).
	var live atomic.Int64
	stopLive := make(chan struct{})
	liveDone := make(chan struct{})
	go func() {
		defer close(liveDone)
		for i := 0; ; i++ {
			select {
			case <-stopLive:
				return
			default:
			}
			if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: []byte(fmt.Sprintf("live-%d", i))}); err != nil {
				t.Errorf("live publish: %v", err)
				return
			}
			live.Add(1)
		}
	}()
	sidecartest.WaitFor(t, 30*time.Second, "live traffic", func() bool { return live.Load() >= 200 })
	off := api.RoutingRule{Name: "canary-off", Percent: percent(0), Selector: v2}
	took = setRules(nodes, blue, off)
	t.Logf("rule change under traffic (%d messages published so far) reached all 3 sidecars %s after the PUT",
		live.Load(), took.Round(time.Millisecond))
	if took > sidecartest.Scaled(time.Second) {
		t.Errorf("the rule change took %s to reach every sidecar, want under %s", took, sidecartest.Scaled(time.Second))
	}
	const nAfter = 1000
	publish("after", "", nAfter, 64)
	close(stopLive)
	<-liveDone
	nLive := int(live.Load())
	sidecartest.WaitFor(t, 60*time.Second, "every message after the change", func() bool {
		return anywhere("after", nAfter) == nAfter && anywhere("live", nLive) == nLive
	})
	if got := c.app.distinct("after", nAfter); got != 0 {
		t.Fatalf("with the canary at 0%%, v2 processed %d of the messages published after the change", got)
	}

	// 4. v2 dies during blue traffic: blue falls back to anywhere, at once,
	// and nothing is lost.
	const nKill = 1500
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := range nKill {
			if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Colour: "blue", Body: []byte(fmt.Sprintf("kill-%d", i))}); err != nil {
				t.Errorf("publish kill-%d: %v", i, err)
				return
			}
		}
	}()
	sidecartest.WaitFor(t, 60*time.Second, "blue traffic at v2 before the kill", func() bool { return c.app.distinct("kill", nKill) >= 200 })
	killedAt := time.Now()
	_ = c.proc.Cmd.Process.Kill()
	<-c.proc.Done
	<-pubDone
	sidecartest.WaitFor(t, 120*time.Second, "every blue message after the kill, at some node", func() bool { return anywhere("kill", nKill) == nKill })
	var fellBackAt time.Time
	for _, n := range []*node{a, b} {
		if at := n.app.firstWith("kill-", killedAt); !at.IsZero() && (fellBackAt.IsZero() || at.Before(fellBackAt)) {
			fellBackAt = at
		}
	}
	if fellBackAt.IsZero() {
		t.Fatal("no blue message reached a v1 node after v2 died")
	}
	delay := fellBackAt.Sub(killedAt)
	var fb []string
	for _, n := range []*node{a, b} {
		fb = append(fb, fmt.Sprintf("%s %d", n.name, sidecarStats(t, n.http).Rules[blue.Name].FellBack))
	}
	t.Logf("v2 killed with %d of %d blue messages processed there: the first blue message reached a v1 node %s later; "+
		"fell back: %s; all %d processed", c.app.distinct("kill", nKill), nKill, delay.Round(time.Millisecond), strings.Join(fb, ", "), nKill)
	if delay > sidecartest.Scaled(time.Second) {
		t.Errorf("the fallback took %s after v2 died, want under %s", delay, sidecartest.Scaled(time.Second))
	}

	// 5. Fallback "hold": while v2 is down, its colour's messages go back
	// to the broker to be offered again, and v2 gets them once it is back
	// within the bound; a colour whose targets never come is delivered
	// anywhere once its bound has passed, not before.
	qa := api.RoutingRule{Name: "qa-to-v2", Colour: "qa", Selector: v2, Fallback: api.FallbackHold, HoldFor: "60s"}
	grey := api.RoutingRule{Name: "grey-to-v9", Colour: "grey", Selector: map[string]string{"version": "v9"}, Fallback: api.FallbackHold, HoldFor: "2s"}
	setRules([]*node{a, b}, blue, off, qa, grey)
	sidecartest.WaitFor(t, 30*time.Second, "the control plane to mark v2 offline", func() bool {
		ins, err := op.Instances(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ins, func(in api.Instance) bool { return in.ID == c.fwd })
		return i >= 0 && ins[i].Offline
	})
	const nQA, nGrey = 100, 50
	greyAt := time.Now()
	publish("grey", "grey", nGrey, 16)
	publish("qa", "qa", nQA, 16)
	held := func(rule string) (n uint64) {
		for _, x := range []*node{a, b} {
			n += sidecarStats(t, x.http).Rules[rule].Held
		}
		return n
	}
	sidecartest.WaitFor(t, 30*time.Second, "the qa messages to be held", func() bool { return held(qa.Name) >= nQA })
	sidecartest.WaitFor(t, 60*time.Second, "every grey message, anywhere", func() bool { return anywhere("grey", nGrey) == nGrey })
	var earliest time.Time
	for _, x := range []*node{a, b} {
		if at := x.app.firstWith("grey-", greyAt); !at.IsZero() && (earliest.IsZero() || at.Before(earliest)) {
			earliest = at
		}
	}
	if wait := earliest.Sub(greyAt); wait < 1500*time.Millisecond {
		t.Fatalf("a grey message (hold_for 2s, no target) was delivered %s after its publish: not held", wait)
	}
	if got := anywhere("qa", nQA); got != 0 {
		t.Fatalf("%d qa messages were delivered while v2 was down; they should be held", got)
	}
	backAt := time.Now()
	start(c) // the first app connection of c reconnects too: both count into c.app
	if !sidecartest.WaitUntil(60*time.Second, func() bool { return c.app.distinct("qa", nQA) == nQA }) {
		var diag []string
		for _, x := range nodes {
			st := sidecarStats(t, x.http)
			diag = append(diag, fmt.Sprintf("%s: qa %d, rule %+v, rules in force %v", x.name, x.app.distinct("qa", nQA), st.Rules[qa.Name], st.RulesInForce))
		}
		ins, _ := op.Instances(ctx, "orders")
		t.Fatalf("not every qa message reached v2 after it came back: %s; instances %+v", strings.Join(diag, "; "), ins)
	}
	for _, x := range []*node{a, b} {
		if got := x.app.distinct("qa", nQA); got != 0 {
			t.Fatalf("v1 node %s processed %d qa messages, want none", x.name, got)
		}
	}
	t.Logf("hold: the grey messages (no target, hold_for 2s) were first delivered anywhere %s after their publish; "+
		"%d holds of the %d qa messages while v2 was down, all delivered to v2 %s after it restarted",
		earliest.Sub(greyAt).Round(time.Millisecond), held(qa.Name), nQA, time.Since(backAt).Round(time.Millisecond))
}
