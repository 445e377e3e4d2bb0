package ctrlplane_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/topology"
)

func TestAuth(t *testing.T) {
	c := startBolt(t)
	op := client(t, c.url, testToken)
	credOrders := mustCreate(t, op, "orders", "10.0.0.1:7610")
	credBilling := mustCreate(t, op, "billing", "10.0.0.9:7610")
	if !strings.HasPrefix(credOrders, "mmc1.orders.") || credOrders == credBilling {
		t.Fatalf("credentials %q, %q", credOrders, credBilling)
	}
	// A credential that looks like orders' but is not.
	forged := "mmc1.orders." + strings.Repeat("A", 43)

	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"no token", "GET", "/v1/apps", "", "", 401, api.CodeUnauthorized},
		{"wrong token", "GET", "/v1/apps", "not-the-operator-token", "", 401, api.CodeUnauthorized},
		{"wrong token write", "PUT", "/v1/apps/orders/instances/10.0.0.1:7610/weight", "not-the-operator-token", `{"weight":5}`, 401, api.CodeUnauthorized},
		{"no token write", "POST", "/v1/apps", "", `{"name":"x"}`, 401, api.CodeUnauthorized},
		{"operator", "GET", "/v1/apps", testToken, "", 200, ""},
		{"app credential lists apps", "GET", "/v1/apps", credOrders, "", 403, api.CodeForbidden},
		{"app credential sets a weight", "PUT", "/v1/apps/orders/instances/10.0.0.1:7610/weight", credOrders, `{"weight":5}`, 403, api.CodeForbidden},
		{"app credential rotates itself", "POST", "/v1/apps/orders/credential", credOrders, "", 403, api.CodeForbidden},
		{"own config", "GET", "/v1/apps/orders/config", credOrders, "", 200, ""},
		{"another app's config", "GET", "/v1/apps/billing/config", credOrders, "", 403, api.CodeForbidden},
		{"another app's config, long poll", "GET", "/v1/apps/billing/config?after=0", credOrders, "", 403, api.CodeForbidden},
		{"a missing app's config", "GET", "/v1/apps/ghost/config", credOrders, "", 403, api.CodeForbidden},
		{"config without token", "GET", "/v1/apps/orders/config", "", "", 401, api.CodeUnauthorized},
		{"forged credential", "GET", "/v1/apps/orders/config", forged, "", 401, api.CodeUnauthorized},
		{"credential of a missing app", "GET", "/v1/apps/ghost/config", "mmc1.ghost." + strings.Repeat("B", 43), "", 401, api.CodeUnauthorized},
		{"operator reads a config", "GET", "/v1/apps/billing/config", testToken, "", 200, ""},
		{"operator, missing app", "GET", "/v1/apps/ghost/config", testToken, "", 404, api.CodeNotFound},
		{"health needs nothing", "GET", "/healthz", "", "", 200, ""},
		{"web page needs nothing", "GET", "/ui/", "", "", 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, tc.method, c.url+tc.path, tc.token, tc.body)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.status, tc.status, a.body)
			}
			if tc.code == "" {
				return
			}
			if eb := a.errorBody(t); eb.Code != tc.code {
				t.Fatalf("code %q, want %q (%s)", eb.Code, tc.code, eb.Message)
			}
			if tc.status == 401 && !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without WWW-Authenticate: Bearer")
			}
		})
	}

	// The config an app's credential reads carries that credential.
	cfg, err := client(t, c.url, credOrders).Config(t.Context(), "orders")
	if err != nil || cfg.Credential != credOrders || cfg.App != "orders" || len(cfg.Instances) != 1 {
		t.Fatalf("orders config = %+v, %v", cfg, err)
	}
	// Typed client errors.
	if _, err := client(t, c.url, credOrders).Config(t.Context(), "billing"); !errors.Is(err, ctrlclient.ErrForbidden) {
		t.Fatalf("client error %v, want ErrForbidden", err)
	}
	if _, err := client(t, c.url, "nope").ListApps(t.Context()); !errors.Is(err, ctrlclient.ErrUnauthorized) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("client error %v, want ErrUnauthorized", err)
	}
}

// clock is a settable time source for Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestCredentialRotation(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	c := startBolt(t, func(o *ctrlplane.Options) { o.Now = clk.Now })
	op := client(t, c.url, testToken)
	old := mustCreate(t, op, "orders", "10.0.0.1:7610")

	rot, err := op.RotateCredential(t.Context(), "orders", api.RotateCredentialRequest{Grace: "1m"})
	if err != nil {
		t.Fatal(err)
	}
	if rot.Credential == old || !rot.PreviousExpires.Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("rotation = %+v", rot)
	}
	// During the grace period both work, and the config names both.
	cfg, err := client(t, c.url, old).Config(t.Context(), "orders")
	if err != nil {
		t.Fatalf("old credential during the grace period: %v", err)
	}
	if cfg.Credential != rot.Credential || cfg.PreviousCredential != old || !cfg.AcceptsCredential(old, clk.Now()) || !cfg.AcceptsCredential(rot.Credential, clk.Now()) {
		t.Fatalf("config during grace = %+v", cfg)
	}
	clk.Add(time.Minute + time.Second)
	if _, err := client(t, c.url, old).Config(t.Context(), "orders"); !errors.Is(err, ctrlclient.ErrUnauthorized) {
		t.Fatalf("old credential after the grace period: %v, want ErrUnauthorized", err)
	}
	cfg, err = client(t, c.url, rot.Credential).Config(t.Context(), "orders")
	if err != nil || cfg.PreviousCredential != "" {
		t.Fatalf("new credential after grace: %+v, %v", cfg, err)
	}

	// Grace 0 revokes at once, also for a long poll already waiting: it
	// must not be answered with the config, which holds the new credential.
	cur := rot.Credential
	polled := make(chan error, 1)
	go func() {
		_, _, err := client(t, c.url, cur).PollConfig(t.Context(), "orders", cfg.Version, 20*time.Second)
		polled <- err
	}()
	waitUntil(t, 10*time.Second, "the long poll to be waiting", func() bool { return c.srv.LongPolls() == 1 })
	rot2, err := op.RotateCredential(t.Context(), "orders", api.RotateCredentialRequest{Grace: "0s"})
	if err != nil || !rot2.PreviousExpires.IsZero() {
		t.Fatalf("rotation with grace 0 = %+v, %v", rot2, err)
	}
	select {
	case err := <-polled:
		if !errors.Is(err, ctrlclient.ErrUnauthorized) {
			t.Fatalf("long poll with a revoked credential: %v, want ErrUnauthorized", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll did not end after its credential was revoked")
	}
	if _, err := client(t, c.url, cur).Config(t.Context(), "orders"); !errors.Is(err, ctrlclient.ErrUnauthorized) {
		t.Fatalf("revoked credential: %v", err)
	}

	for _, bad := range []string{`{"grace":"soon"}`, `{"grace":"-1s"}`, `{"grace":"9999h"}`, `{"grace":5}`} {
		a := do(t, "POST", c.url+"/v1/apps/orders/credential", testToken, bad)
		if a.status != 400 || a.errorBody(t).Code != api.CodeInvalid {
			t.Errorf("rotate %s: %d %s", bad, a.status, a.body)
		}
	}
}

func TestWeightValidation(t *testing.T) {
	c := startBolt(t)
	op := client(t, c.url, testToken)
	mustCreate(t, op, "orders", "10.0.0.1:7610")
	path := "/v1/apps/orders/instances/10.0.0.1:7610/weight"
	for _, tc := range []struct {
		name, path, body string
		status           int
		msg              string // in the error message
	}{
		{"30", path, `{"weight":30}`, 200, ""},
		{"0 drains", path, `{"weight":0}`, 200, ""},
		{"100", path, `{"weight":100}`, 200, ""},
		{"-1", path, `{"weight":-1}`, 400, "-1 is outside 0..100"},
		{"101", path, `{"weight":101}`, 400, "101 is outside 0..100"},
		{"huge", path, `{"weight":1e30}`, 400, "weight"},
		{"fraction", path, `{"weight":30.5}`, 400, "weight"},
		{"string", path, `{"weight":"30"}`, 400, "weight: expected int, got a JSON string"},
		{"missing", path, `{}`, 400, "weight: required"},
		{"null", path, `{"weight":null}`, 400, "weight: required"},
		{"unknown field", path, `{"weight":30,"wieght":3}`, 400, "wieght: unknown field"},
		{"empty body", path, ``, 400, "empty body"},
		{"array", path, `[30]`, 400, "JSON object"},
		{"syntax", path, `{"weight":`, 400, "malformed JSON"},
		{"trailing", path, `{"weight":30} {}`, 400, "after the JSON object"},
		{"unknown instance", "/v1/apps/orders/instances/10.0.0.2:7610/weight", `{"weight":30}`, 404, `no instance "10.0.0.2:7610"`},
		{"unknown app", "/v1/apps/ghost/instances/10.0.0.1:7610/weight", `{"weight":30}`, 404, `no app "ghost"`},
		{"bad app name", "/v1/apps/-bad/instances/10.0.0.1:7610/weight", `{"weight":30}`, 400, "app name"},
		{"bad instance ID", "/v1/apps/orders/instances/a%20b/weight", `{"weight":30}`, 400, "instance ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, "PUT", c.url+tc.path, testToken, tc.body)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.status, tc.status, a.body)
			}
			if tc.status == 200 {
				var in api.Instance
				if err := json.Unmarshal(a.body, &in); err != nil || in.ID != "10.0.0.1:7610" {
					t.Fatalf("answer %s (%v)", a.body, err)
				}
				return
			}
			eb := a.errorBody(t)
			wantCode := map[int]string{400: api.CodeInvalid, 404: api.CodeNotFound}[tc.status]
			if eb.Code != wantCode || !strings.Contains(eb.Message, tc.msg) {
				t.Fatalf("error %+v, want code %s and a message with %q", eb, wantCode, tc.msg)
			}
		})
	}
	// The client's typed error.
	if _, err := op.SetWeight(t.Context(), "orders", "10.0.0.1:7610", 101); !errors.Is(err, ctrlclient.ErrInvalid) || !strings.Contains(err.Error(), "outside 0..100") {
		t.Fatalf("SetWeight(101): %v", err)
	}
	in, err := op.SetWeight(t.Context(), "orders", "10.0.0.1:7610", 42)
	if err != nil || in.Weight != 42 {
		t.Fatalf("SetWeight(42) = %+v, %v", in, err)
	}
}

func TestAppsAndInstances(t *testing.T) {
	c := startBolt(t)
	op := client(t, c.url, testToken)
	ctx := t.Context()

	created, err := op.CreateApp(ctx, "orders")
	if err != nil || created.Name != "orders" || created.Credential == "" || created.Version == 0 || created.Instances == nil {
		t.Fatalf("CreateApp = %+v, %v", created, err)
	}
	if _, err := op.CreateApp(ctx, "orders"); !errors.Is(err, ctrlclient.ErrConflict) {
		t.Fatalf("second CreateApp: %v, want ErrConflict", err)
	}
	for _, bad := range []string{"", "-x", "a/b", strings.Repeat("a", 129), "sp ace"} {
		if _, err := op.CreateApp(ctx, bad); !errors.Is(err, ctrlclient.ErrInvalid) {
			t.Errorf("CreateApp(%q): %v, want ErrInvalid", bad, err)
		}
	}
	// The credential is shown once: GET does not carry it.
	a := do(t, "GET", c.url+"/v1/apps/orders", testToken, "")
	if a.status != 200 || strings.Contains(string(a.body), created.Credential) || strings.Contains(string(a.body), "credential\"") {
		t.Fatalf("GET app leaks the credential: %s", a.body)
	}

	w30 := 30
	in, isNew, err := op.PutInstance(ctx, "orders", api.InstanceSpec{Addr: "10.0.0.2:7610", Labels: map[string]string{"version": "v2"}})
	if err != nil || !isNew || in.ID != "10.0.0.2:7610" || in.Weight != api.DefaultWeight || in.Labels["version"] != "v2" {
		t.Fatalf("PutInstance = %+v, %v, %v", in, isNew, err)
	}
	in, isNew, err = op.PutInstance(ctx, "orders", api.InstanceSpec{ID: "canary", Addr: "10.0.0.3:7610", Weight: &w30})
	if err != nil || !isNew || in.ID != "canary" || in.Weight != 30 {
		t.Fatalf("PutInstance canary = %+v, %v, %v", in, isNew, err)
	}
	if _, err := op.SetWeight(ctx, "orders", "10.0.0.2:7610", 70); err != nil {
		t.Fatal(err)
	}
	// Replacing keeps the weight unless one is given.
	in, isNew, err = op.PutInstance(ctx, "orders", api.InstanceSpec{Addr: "10.0.0.2:7610", Labels: map[string]string{"version": "v3"}})
	if err != nil || isNew || in.Weight != 70 || in.Labels["version"] != "v3" {
		t.Fatalf("replace = %+v, %v, %v", in, isNew, err)
	}
	list, err := op.Instances(ctx, "orders")
	if err != nil || len(list) != 2 || list[0].ID != "10.0.0.2:7610" || list[1].ID != "canary" {
		t.Fatalf("Instances = %+v, %v", list, err)
	}
	for _, tc := range []struct {
		name string
		spec api.InstanceSpec
		msg  string
	}{
		{"no addr", api.InstanceSpec{}, "addr"},
		{"no port", api.InstanceSpec{Addr: "10.0.0.1"}, "not host:port"},
		{"port 0", api.InstanceSpec{Addr: "10.0.0.1:0"}, "1..65535"},
		{"port name", api.InstanceSpec{Addr: "10.0.0.1:http"}, "1..65535"},
		{"no host", api.InstanceSpec{Addr: ":7610"}, "no host"},
		{"bad id", api.InstanceSpec{ID: "a/b", Addr: "10.0.0.1:7610"}, "instance ID"},
		{"weight", api.InstanceSpec{Addr: "10.0.0.1:7610", Weight: new(int(101))}, "outside 0..100"},
		{"label key", api.InstanceSpec{Addr: "10.0.0.1:7610", Labels: map[string]string{"bad key": "x"}}, "label key"},
		{"label value", api.InstanceSpec{Addr: "10.0.0.1:7610", Labels: map[string]string{"k": "a\nb"}}, "control character"},
	} {
		if _, _, err := op.PutInstance(ctx, "orders", tc.spec); !errors.Is(err, ctrlclient.ErrInvalid) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want ErrInvalid mentioning %q", tc.name, err, tc.msg)
		}
	}
	if _, _, err := op.PutInstance(ctx, "ghost", api.InstanceSpec{Addr: "10.0.0.1:7610"}); !errors.Is(err, ctrlclient.ErrNotFound) {
		t.Fatalf("instance of a missing app: %v", err)
	}
	// IPv6 addresses are IDs too.
	if in, _, err := op.PutInstance(ctx, "orders", api.InstanceSpec{Addr: "[fd00::1]:7610"}); err != nil || in.ID != "[fd00::1]:7610" {
		t.Fatalf("IPv6 instance = %+v, %v", in, err)
	}
	if err := op.RemoveInstance(ctx, "orders", "[fd00::1]:7610"); err != nil {
		t.Fatal(err)
	}
	if err := op.RemoveInstance(ctx, "orders", "canary"); err != nil {
		t.Fatal(err)
	}
	if err := op.RemoveInstance(ctx, "orders", "canary"); !errors.Is(err, ctrlclient.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}

	if _, err := op.CreateApp(ctx, "billing"); err != nil {
		t.Fatal(err)
	}
	apps, err := op.ListApps(ctx)
	if err != nil || len(apps) != 2 || apps[0].Name != "billing" || apps[1].Name != "orders" || len(apps[1].Instances) != 1 {
		t.Fatalf("ListApps = %+v, %v", apps, err)
	}
	if err := op.DeleteApp(ctx, "billing"); err != nil {
		t.Fatal(err)
	}
	if _, err := op.GetApp(ctx, "billing"); !errors.Is(err, ctrlclient.ErrNotFound) {
		t.Fatalf("GetApp after delete: %v", err)
	}
	if err := op.DeleteApp(ctx, "billing"); !errors.Is(err, ctrlclient.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// TestConcurrentWeights: writers racing on one app's record through
// compare-and-swap lose no update.
func TestConcurrentWeights(t *testing.T) {
	c := startBolt(t)
	op := client(t, c.url, testToken)
	const n = 20
	var addrs []string
	for i := range n {
		addrs = append(addrs, "10.0.1."+strconv.Itoa(i)+":7610")
	}
	mustCreate(t, op, "orders", addrs...)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, a := range addrs {
		wg.Go(func() {
			if _, err := op.SetWeight(t.Context(), "orders", a, i); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	cfg, err := op.Config(t.Context(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range addrs {
		if in, ok := cfg.Instance(a); !ok || in.Weight != i {
			t.Fatalf("instance %s = %+v; a concurrent update was lost", a, in)
		}
	}
}

func TestTopology(t *testing.T) {
	c := startBolt(t)
	op := client(t, c.url, testToken)
	ctx := t.Context()
	mustCreate(t, op, "orders", "10.0.0.1:7610")
	mustCreate(t, op, "billing")

	if _, err := op.Topology(ctx); !errors.Is(err, ctrlclient.ErrNotFound) {
		t.Fatalf("Topology before any: %v", err)
	}
	cfg, err := op.Config(ctx, "orders")
	if err != nil || cfg.Brokers != nil {
		t.Fatalf("config without a topology: brokers %+v, %v", cfg.Brokers, err)
	}
	global := &topology.Topology{
		Clusters: []topology.Cluster{{Name: "main", Kind: topology.KindNATS, Endpoints: []string{"nats://10.0.0.5:4222"}}},
	}
	stored, err := op.SetTopology(ctx, global)
	if err != nil || stored.Default != "main" {
		t.Fatalf("SetTopology = %+v, %v (the default cluster is filled in)", stored, err)
	}
	own := &topology.Topology{
		Clusters: []topology.Cluster{
			{Name: "main", Kind: topology.KindNATS, Endpoints: []string{"nats://10.0.0.5:4222"}},
			{Name: "events", Kind: topology.KindKafka, Endpoints: []string{"10.0.0.6:9092"}},
		},
		Routes:  []topology.Route{{Topic: "payments.>", Cluster: "events"}},
		Default: "main",
	}
	if _, err := op.SetAppTopology(ctx, "billing", own); err != nil {
		t.Fatal(err)
	}
	if cfg, _ := op.Config(ctx, "orders"); cfg.Brokers == nil || len(cfg.Brokers.Clusters) != 1 {
		t.Fatalf("orders gets the global topology: %+v", cfg.Brokers)
	}
	if cfg, _ := op.Config(ctx, "billing"); cfg.Brokers == nil || len(cfg.Brokers.Routes) != 1 || cfg.Brokers.Resolve("payments.eu") != "events" {
		t.Fatalf("billing gets its own topology: %+v", cfg.Brokers)
	}
	if got, err := op.AppTopology(ctx, "billing"); err != nil || len(got.Clusters) != 2 {
		t.Fatalf("AppTopology = %+v, %v", got, err)
	}
	if _, err := op.AppTopology(ctx, "orders"); !errors.Is(err, ctrlclient.ErrNotFound) {
		t.Fatalf("AppTopology of an app without one: %v", err)
	}

	for _, tc := range []struct{ name, body, msg string }{
		{"no clusters", `{"clusters":[]}`, "no clusters"},
		{"bad kind", `{"clusters":[{"name":"a","kind":"redis","endpoints":["x:1"]}]}`, "kind"},
		{"no default", `{"clusters":[{"name":"a","kind":"nats","endpoints":["x:1"]},{"name":"b","kind":"nats","endpoints":["y:1"]}]}`, "default_cluster"},
		{"bad route", `{"clusters":[{"name":"a","kind":"nats","endpoints":["x:1"]}],"routes":[{"topic":"a.>.b","cluster":"a"}]}`, "routes[0]"},
		{"unknown field", `{"clusters":[{"name":"a","kind":"nats","endpoints":["x:1"]}],"cluster":1}`, "unknown field"},
	} {
		for _, path := range []string{"/v1/topology", "/v1/apps/orders/topology"} {
			a := do(t, "PUT", c.url+path, testToken, tc.body)
			if eb := a.errorBody(t); a.status != 400 || eb.Code != api.CodeInvalid || !strings.Contains(eb.Message, tc.msg) {
				t.Errorf("%s on %s: %d %+v, want 400 INVALID mentioning %q", tc.name, path, a.status, eb, tc.msg)
			}
		}
	}

	before, _ := op.Config(ctx, "billing")
	if err := op.DeleteAppTopology(ctx, "billing"); err != nil {
		t.Fatal(err)
	}
	after, _ := op.Config(ctx, "billing")
	if after.Version <= before.Version || after.Brokers == nil || len(after.Brokers.Clusters) != 1 {
		t.Fatalf("after dropping its own topology billing has %+v at %d (was %d)", after.Brokers, after.Version, before.Version)
	}
	if err := op.DeleteTopology(ctx); err != nil {
		t.Fatal(err)
	}
	cleared, _ := op.Config(ctx, "orders")
	if cleared.Brokers != nil || cleared.Version <= after.Version {
		t.Fatalf("after clearing the global topology: %+v at %d", cleared.Brokers, cleared.Version)
	}
}

// TestVersionsGrow: every kind of change, the removal of an instance and
// of the global topology included, gives a larger version.
func TestVersionsGrow(t *testing.T) {
	c := startBolt(t)
	op := client(t, c.url, testToken)
	ctx := t.Context()
	mustCreate(t, op, "orders", "10.0.0.1:7610", "10.0.0.2:7610")
	topo := &topology.Topology{Clusters: []topology.Cluster{{Name: "m", Kind: topology.KindNATS, Endpoints: []string{"nats://x:4222"}}}}
	steps := []struct {
		name string
		do   func() error
	}{
		{"weight", func() error { _, err := op.SetWeight(ctx, "orders", "10.0.0.1:7610", 10); return err }},
		{"global topology", func() error { _, err := op.SetTopology(ctx, topo); return err }},
		{"remove instance", func() error { return op.RemoveInstance(ctx, "orders", "10.0.0.2:7610") }},
		{"clear global topology", func() error { return op.DeleteTopology(ctx) }},
		{"rotate", func() error {
			_, err := op.RotateCredential(ctx, "orders", api.RotateCredentialRequest{})
			return err
		}},
		{"another app", func() error { _, err := op.CreateApp(ctx, "other"); return err }},
		{"app topology", func() error { _, err := op.SetAppTopology(ctx, "orders", topo); return err }},
	}
	prev, err := op.Config(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		cfg, err := op.Config(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case s.name == "another app" && cfg.Version != prev.Version:
			t.Fatalf("%s changed orders' version %d → %d", s.name, prev.Version, cfg.Version)
		case s.name != "another app" && cfg.Version <= prev.Version:
			t.Fatalf("%s: version %d → %d does not grow", s.name, prev.Version, cfg.Version)
		}
		prev = cfg
	}
}

func TestErrorShape(t *testing.T) {
	c := startBolt(t)
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", "/v1/nothing", "", 404, api.CodeNotFound},
		{"PATCH", "/v1/apps", "", 405, api.CodeNotAllowed},
		{"GET", "/v1/apps/orders/instances/x/weight", "", 405, api.CodeNotAllowed},
		{"POST", "/v1/apps", strings.Repeat(" ", api.MaxBodySize+1), 413, api.CodeTooLarge},
		{"POST", "/v1/apps", `{"name":"x","extra":true}`, 400, api.CodeInvalid},
		{"GET", "/v1/apps/orders/config?after=abc", "", 400, api.CodeInvalid},
		{"GET", "/v1/apps/orders/config?after=1&wait=forever", "", 400, api.CodeInvalid},
		{"GET", "/v1/apps/orders/config?after=1&wait=1h", "", 400, api.CodeInvalid},
		{"GET", "/ui/missing.js", "", 404, api.CodeNotFound},
	} {
		a := do(t, tc.method, c.url+tc.path, testToken, tc.body)
		if a.status != tc.status || a.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %q, want %d JSON", tc.method, tc.path, a.status, a.header.Get("Content-Type"), tc.status)
			continue
		}
		if eb := a.errorBody(t); eb.Code != tc.code {
			t.Errorf("%s %s: code %s, want %s", tc.method, tc.path, eb.Code, tc.code)
		}
	}
	a := do(t, "GET", c.url+"/", "", "")
	if a.status != 200 || !strings.Contains(string(a.body), "msgmesh control plane") {
		t.Fatalf("GET / does not lead to the web page: %d", a.status)
	}
}

func TestNewOptions(t *testing.T) {
	st := openBolt(t, t.TempDir())
	for _, tc := range []struct {
		name string
		opts ctrlplane.Options
		msg  string
	}{
		{"no store", ctrlplane.Options{Token: testToken}, "Store"},
		{"no token", ctrlplane.Options{Store: st}, "no operator token"},
		{"short token", ctrlplane.Options{Store: st, Token: "short"}, "at least 16"},
		{"both", ctrlplane.Options{Store: st, Token: testToken, InsecureNoAuth: true}, "exclude"},
	} {
		if _, err := ctrlplane.New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.name, err, tc.msg)
		}
	}
	// Without authentication everything is open.
	c := startCP(t, st, "", func(o *ctrlplane.Options) { o.Token, o.InsecureNoAuth = "", true })
	if a := do(t, "POST", c.url+"/v1/apps", "", `{"name":"open"}`); a.status != http.StatusCreated {
		t.Fatalf("insecure create: %d %s", a.status, a.body)
	}
}
