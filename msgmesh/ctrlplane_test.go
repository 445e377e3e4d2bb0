package msgmesh_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/schema"
)

// cpToken is the operator token of the control planes tests run.
const cpToken = "operator-secret-0123456789"

// controlPlaneAt runs a real control plane on addr ("127.0.0.1:0" for any)
// with its state and its schema registry in bbolt files in dir, as the
// ctrlplane binary keeps them; stop ends it. mod changes its options.
func controlPlaneAt(t *testing.T, dir, addr string, mod ...func(*ctrlplane.Options)) (url string, stop func()) {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(dir, store.BoltFile))
	if err != nil {
		t.Fatal(err)
	}
	schemas, err := schema.OpenBoltStore(filepath.Join(dir, ctrlplane.SchemaFile))
	if err != nil {
		t.Fatal(err)
	}
	opts := ctrlplane.Options{Store: st, SchemaStore: schemas, Token: cpToken, Log: sidecartest.Logger()}
	for _, m := range mod {
		m(&opts)
	}
	srv, err := ctrlplane.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
		_ = schemas.Close()
		_ = st.Close()
	}
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

// ordersAt creates the app "orders" at the control plane at cpURL and
// writes a sidecar config file for a fresh NATS cluster. It returns the
// operator's client, the app as created (with its credential) and the
// config file's path.
func ordersAt(t *testing.T, cpURL string) (*ctrlclient.Client, api.AppCreated, string) {
	t.Helper()
	op, err := ctrlclient.New(cpURL, cpToken)
	if err != nil {
		t.Fatal(err)
	}
	created, err := op.CreateApp(context.Background(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "msgmesh.yaml")
	if err := os.WriteFile(cfgPath, []byte(sidecartest.ClusterYAML(sidecartest.NATSCluster(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	return op, created, cfgPath
}

// statsAt is a sidecar's GET /v1/stats, its numbers by name (the routing
// counters, which are objects, are left out: sidecarStats has them).
func statsAt(t *testing.T, httpAddr string) map[string]int {
	t.Helper()
	var raw map[string]any
	getStats(t, httpAddr, &raw)
	m := make(map[string]int, len(raw))
	for k, v := range raw {
		if f, ok := v.(float64); ok {
			m[k] = int(f)
		}
	}
	return m
}

// getStats decodes a sidecar's GET /v1/stats into v.
func getStats(t testing.TB, httpAddr string, v any) {
	t.Helper()
	status, body := sidecartest.HTTPDo(t, http.MethodGet, "http://"+httpAddr+"/v1/stats", "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /v1/stats: %d %s", status, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatal(err)
	}
}

// TestControlPlaneDrivesSidecars: two msgmesh processes of app "orders" get
// their weights and forwarding certificates from a real control plane; an
// operator's weight change reaches both within a second, weight 0 drains a
// node, and the sidecars keep their config while the control plane is down.
func TestControlPlaneDrivesSidecars(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	cpDir := t.TempDir()
	cpURL, stopCP := controlPlaneAt(t, cpDir, "127.0.0.1:0")
	ctx := context.Background()
	op, created, cfgPath := ordersAt(t, cpURL)

	type node struct{ mesh, http, fwd string }
	var nodes []node
	apps := []*sidecartest.Tally{sidecartest.NewTally(), sidecartest.NewTally()}
	for i := range 2 {
		n := node{mesh: freePort(t), http: freePort(t), fwd: freePort(t)}
		if _, _, err := op.PutInstance(ctx, "orders", api.InstanceSpec{Addr: n.fwd}); err != nil {
			t.Fatal(err)
		}
		p := sidecartest.StartProcEnv(t, []string{"MSGMESH_APP_CREDENTIAL=" + created.Credential}, bin,
			"--data-dir", t.TempDir(), "--listen", n.mesh, "--http", n.http, "--config", cfgPath,
			"--ctrlplane", cpURL, "--app", "orders", "--forward-listen", n.fwd, "--log-level", "warn")
		sidecartest.WaitHealthy(t, p, n.http)
		if status, body := sidecartest.Register(t, n.http, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
			t.Fatalf("register: %d %s", status, body)
		}
		subscribe(t, sidecartest.Dial(t, n.mesh), "g1", "app", apps[i])
		nodes = append(nodes, n)
	}

	// An operator drains node 2; both sidecars see it within a second.
	setAt := time.Now()
	if _, err := op.SetWeight(ctx, "orders", nodes[1].fwd, 0); err != nil {
		t.Fatal(err)
	}
	sidecartest.WaitFor(t, 5*time.Second, "node 2 to see weight 0", func() bool { return statsAt(t, nodes[1].http)["weight"] == 0 })
	if d := time.Since(setAt); d > time.Second {
		t.Errorf("the weight change took %s to reach the sidecar, want under 1 s", d)
	}
	t.Logf("weight change observed after %s", time.Since(setAt).Round(time.Millisecond))

	const n = 1000
	before := apps[1].Count()
	sidecartest.PublishN(t, sidecartest.Dial(t, nodes[0].mesh), topic, "m", n, 128)
	sidecartest.WaitFor(t, 60*time.Second, "every message", func() bool { return apps[0].Count()+apps[1].Count() >= before+n })
	if got := apps[1].Count() - before; got != 0 {
		t.Fatalf("the drained node's app got %d messages, want none", got)
	}
	if s := statsAt(t, nodes[1].http); s["forwarded"] == 0 && s["from_broker"] > 0 {
		t.Fatalf("the drained node took %d from the broker and forwarded none", s["from_broker"])
	}

	// Limits set on the control plane reach the running sidecar: a topic
	// limited to one publish per second in reject mode refuses the second.
	if status, body := sidecartest.Register(t, nodes[0].http, "limits", []string{"p1:limited.topic"}, nil); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	if err := op.SetLimits(ctx, "orders", map[string]any{"topics": map[string]any{
		"limited.topic": map[string]any{"publish_rate": 1, "burst": 1, "on_limit": "reject"}}}); err != nil {
		t.Fatal(err)
	}
	limited := sidecartest.Dial(t, nodes[0].mesh, client.WithApp("limits"))
	sidecartest.WaitFor(t, 5*time.Second, "the pushed limit to refuse a publish", func() bool {
		var last error
		for range 3 {
			_, last = limited.Publish(ctx, &client.Message{Topic: "limited.topic", Body: []byte("x")})
		}
		return client.CodeOf(last) == mesh.CodeRateLimited
	})

	// The control plane goes away: the sidecars keep serving with what
	// they had; after it comes back, changes flow again.
	addr := cpURL[len("http://"):]
	stopCP()
	sidecartest.PublishN(t, sidecartest.Dial(t, nodes[0].mesh), topic, "x", 100, 32)
	sidecartest.WaitFor(t, 30*time.Second, "traffic while the control plane is down", func() bool {
		return apps[0].Count()+apps[1].Count() >= before+n+100
	})
	if statsAt(t, nodes[1].http)["weight"] != 0 {
		t.Fatal("node 2 lost its weight while the control plane was down")
	}
	controlPlaneAt(t, cpDir, addr)
	if _, err := op.SetWeight(ctx, "orders", nodes[1].fwd, 100); err != nil {
		t.Fatal(err)
	}
	sidecartest.WaitFor(t, 30*time.Second, "node 2 to see weight 100 after the control plane restarted", func() bool {
		return statsAt(t, nodes[1].http)["weight"] == 100
	})
}

// TestSelfRegistrationLeases: three msgmesh processes of app "orders" with
// --ctrlplane and nobody adding instances by hand. They appear at the
// control plane by themselves, under their forwarding addresses. Node A is
// drained (weight 0) and forwards to B and C. C is killed (SIGKILL: no
// goodbye); once its lease lapses the control plane marks it offline and A
// stops trying it: no forward attempt fails any more and no message is
// lost. An operator changes C's weight while it is down; C restarts, is
// online again, and keeps that weight.
func TestSelfRegistrationLeases(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	// A 3 s lease: short for the test, long enough that a renewal every
	// second is never late on a loaded machine.
	cpURL, _ := controlPlaneAt(t, t.TempDir(), "127.0.0.1:0", func(o *ctrlplane.Options) { o.LeaseTTL = 3 * time.Second })
	ctx := context.Background()
	op, created, cfgPath := ordersAt(t, cpURL)

	type node struct {
		mesh, http, fwd, dir string
		proc                 *sidecartest.Proc
		app                  *sidecartest.Tally
	}
	start := func(n *node, who string) {
		n.proc = sidecartest.StartProcEnv(t, []string{"MSGMESH_APP_CREDENTIAL=" + created.Credential}, bin,
			"--data-dir", n.dir, "--listen", n.mesh, "--http", n.http, "--config", cfgPath,
			"--ctrlplane", cpURL, "--app", "orders", "--forward-listen", n.fwd,
			"--instance-label", "node="+who, "--log-level", "warn")
		sidecartest.WaitHealthy(t, n.proc, n.http)
		if status, body := sidecartest.Register(t, n.http, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated && status != http.StatusOK {
			t.Fatalf("register: %d %s", status, body)
		}
		subscribe(t, sidecartest.Dial(t, n.mesh), "g1", who, n.app)
	}
	nodes := map[string]*node{}
	for _, who := range []string{"a", "b", "c"} {
		n := &node{mesh: freePort(t), http: freePort(t), fwd: freePort(t), dir: t.TempDir(), app: sidecartest.NewTally()}
		start(n, who)
		nodes[who] = n
	}
	a, c := nodes["a"], nodes["c"]
	pubA := sidecartest.Dial(t, a.mesh)
	instance := func(id string) (api.Instance, bool) {
		ins, err := op.Instances(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range ins {
			if in.ID == id {
				return in, true
			}
		}
		return api.Instance{}, false
	}
	for who, n := range nodes {
		sidecartest.WaitFor(t, 30*time.Second, "node "+who+" to register itself", func() bool {
			in, ok := instance(n.fwd)
			return ok && in.Addr == n.fwd && in.State() == api.StateOnline && in.Labels["node"] == who && in.SidecarVersion != ""
		})
	}
	received := func(prefix string, n int) int { // distinct "<prefix>-<i>" seen by any app
		seen := 0
		for i := range n {
			body := fmt.Sprintf("%s-%d", prefix, i)
			for _, x := range nodes {
				c := x.app.Times(body)
				if c > 0 {
					seen++
					break
				}
			}
		}
		return seen
	}

	// A is drained: it forwards everything it takes to B and C.
	if _, err := op.SetWeight(ctx, "orders", a.fwd, 0); err != nil {
		t.Fatal(err)
	}
	sidecartest.WaitFor(t, 30*time.Second, "A to see weight 0", func() bool { return statsAt(t, a.http)["weight"] == 0 })
	sidecartest.PublishN(t, pubA, topic, "before", 300, 64)
	sidecartest.WaitFor(t, 60*time.Second, "every message before the kill", func() bool { return received("before", 300) == 300 })
	if statsAt(t, c.http)["from_siblings"] == 0 {
		t.Fatal("A forwarded nothing to C while C was up")
	}

	// C dies without a word; its lease lapses.
	killedAt := time.Now()
	_ = c.proc.Cmd.Process.Kill()
	<-c.proc.Done
	sidecartest.WaitFor(t, 60*time.Second, "the control plane to mark C offline", func() bool {
		in, _ := instance(c.fwd)
		return in.Offline
	})
	t.Logf("C offline at the control plane %s after SIGKILL (lease 3 s)", time.Since(killedAt).Round(100*time.Millisecond))
	// A gets the push and stops trying C: a batch goes through without a
	// failed forward attempt.
	probe := 0
	sidecartest.WaitFor(t, 60*time.Second, "A to stop forwarding to C", func() bool {
		f0 := statsAt(t, a.http)["forward_fallbacks"]
		prefix := fmt.Sprintf("probe%d", probe)
		probe++
		sidecartest.PublishN(t, pubA, topic, prefix, 20, 20)
		sidecartest.WaitFor(t, 60*time.Second, "the probe batch", func() bool { return received(prefix, 20) == 20 })
		return statsAt(t, a.http)["forward_fallbacks"] == f0
	})
	before := statsAt(t, a.http)
	const n = 500
	sidecartest.PublishN(t, pubA, topic, "after", n, 64)
	sidecartest.WaitFor(t, 60*time.Second, "every message after C went offline", func() bool { return received("after", n) == n })
	after := statsAt(t, a.http)
	if d := after["forward_fallbacks"] - before["forward_fallbacks"]; d != 0 {
		t.Fatalf("A's forwards failed %d times after C was offline; it should not try C", d)
	}
	if after["forwarded"] == before["forwarded"] {
		t.Fatal("A forwarded nothing to B after C went offline")
	}
	t.Logf("after C went offline: A forwarded %d of its deliveries to B, 0 failed attempts; %d/%d messages received",
		after["forwarded"]-before["forwarded"], received("after", n), n)

	// The operator lowers C's weight while it is down; C comes back,
	// online, with that weight (its registration does not reset it).
	if _, err := op.SetWeight(ctx, "orders", c.fwd, 50); err != nil {
		t.Fatal(err)
	}
	start(c, "c") // its old app client may reconnect too: both count into c.app
	sidecartest.WaitFor(t, 30*time.Second, "C back online", func() bool {
		in, _ := instance(c.fwd)
		return in.State() == api.StateOnline
	})
	if in, _ := instance(c.fwd); in.Weight != 50 {
		t.Fatalf("C's weight after it came back: %d, want the operator's 50", in.Weight)
	}
	sidecartest.WaitFor(t, 30*time.Second, "C to apply its weight 50", func() bool { return statsAt(t, c.http)["weight"] == 50 })
	// Back at 100, C is forwarded to again.
	if _, err := op.SetWeight(ctx, "orders", c.fwd, 100); err != nil {
		t.Fatal(err)
	}
	probe = 0
	sidecartest.WaitFor(t, 60*time.Second, "A to forward to C again", func() bool {
		prefix := fmt.Sprintf("back%d", probe)
		probe++
		sidecartest.PublishN(t, pubA, topic, prefix, 20, 20)
		sidecartest.WaitFor(t, 60*time.Second, "the batch", func() bool { return received(prefix, 20) == 20 })
		return statsAt(t, c.http)["from_siblings"] > 0
	})
}
