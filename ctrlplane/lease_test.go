package ctrlplane_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/ctrlplane/store/etcdtest"
)

// leaseTTL is the lease of these tests; the clock is moved past it, so
// its length costs no time.
const leaseTTL = 15 * time.Second

// leaseOpts gives a server the test's clock and a sweeper that looks
// every few milliseconds, so a moved clock takes effect at once.
func leaseOpts(clk *clock) func(*ctrlplane.Options) {
	return func(o *ctrlplane.Options) {
		o.Now, o.LeaseTTL, o.LeaseSweep = clk.Now, leaseTTL, 5*time.Millisecond
	}
}

// instanceOf returns the operators' view of one instance.
func instanceOf(t testing.TB, op *ctrlclient.Client, app, id string) api.Instance {
	t.Helper()
	ins, err := op.Instances(t.Context(), app)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range ins {
		if in.ID == id {
			return in
		}
	}
	t.Fatalf("app %s has no instance %s: %+v", app, id, ins)
	return api.Instance{}
}

// TestSelfRegistration: a sidecar's lease call creates its instance (ID =
// its address, default weight) and keeps it online; renewals do not
// change the config; when the lease lapses the instance is marked offline
// and the change is pushed to a waiting long poll; a renewal brings it
// back with the weight the operator set meanwhile. An instance an operator
// added and no sidecar ever registered stays online (static); one added
// ahead of its sidecar is adopted by it with its ID and weight.
func TestSelfRegistration(t *testing.T) {
	t.Run("bolt", func(t *testing.T) {
		clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
		c := startBolt(t, leaseOpts(clk))
		testSelfRegistration(t, c, clk)
	})
	t.Run("etcd", func(t *testing.T) {
		if testing.Short() {
			t.Skip("starts etcd")
		}
		clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
		c := startCP(t, openEtcd(t, etcdtest.Start(t)), "", leaseOpts(clk))
		testSelfRegistration(t, c, clk)
	})
}

func testSelfRegistration(t *testing.T, c *cp, clk *clock) {
	ctx := t.Context()
	op := client(t, c.url, testToken)
	// "static" was added by hand and no sidecar registers it; "canary" is
	// pre-provisioned with its own ID and weight 0 before its sidecar runs.
	cred := mustCreate(t, op, "orders", "10.0.0.9:7602")
	zero := 0
	if _, _, err := op.PutInstance(ctx, "orders", api.InstanceSpec{ID: "canary", Addr: "10.0.0.5:7602", Weight: &zero}); err != nil {
		t.Fatal(err)
	}
	sc := client(t, c.url, cred)
	const addr = "10.0.0.1:7602"
	reg := api.LeaseRequest{Addr: addr, Labels: map[string]string{"zone": "a"}, SidecarVersion: "v1.2.3"}

	l, err := sc.RenewLease(ctx, "orders", "", reg)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Created || l.InstanceID != addr || l.Weight != api.DefaultWeight || l.TTL != "15s" || l.RenewEvery != "5s" || !l.Expires.Equal(clk.Now().Add(leaseTTL)) {
		t.Fatalf("first registration: %+v", l)
	}
	cfg, err := sc.Config(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	in, ok := cfg.Instance(addr)
	if !ok || !in.Leased || in.Offline || in.Labels["zone"] != "a" || in.SidecarVersion != "v1.2.3" || in.Weight != 100 {
		t.Fatalf("pushed instance after registration: %+v (found %v)", in, ok)
	}
	if !in.LastSeen.IsZero() || !in.LeaseExpires.IsZero() {
		t.Fatalf("a pushed config carries lease times: %+v", in)
	}
	if got := instanceOf(t, op, "orders", addr); got.State() != api.StateOnline || !got.LastSeen.Equal(clk.Now()) {
		t.Fatalf("operators' view after registration: %+v", got)
	}

	// The operator sets a weight; renewals keep it and change nothing
	// the sidecars see.
	if _, err := op.SetWeight(ctx, "orders", addr, 30); err != nil {
		t.Fatal(err)
	}
	// A config read shares the read of the last change the store watch
	// delivered (configcache.go): on etcd the watch may not have brought
	// the weight yet, so wait until the read shows it.
	var before api.AppConfig
	waitUntil(t, 10*time.Second, "the config to show weight 30", func() bool {
		before, err = sc.Config(ctx, "orders")
		return err == nil && weightIs(addr, 30)(before)
	})
	for range 3 {
		clk.Add(leaseTTL / 3)
		if l, err = sc.RenewLease(ctx, "orders", "", reg); err != nil {
			t.Fatal(err)
		}
		if l.Created || l.Weight != 30 {
			t.Fatalf("renewal: %+v", l)
		}
	}
	after, err := sc.Config(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if after.Version != before.Version {
		t.Fatalf("renewals changed the config version from %d to %d", before.Version, after.Version)
	}

	// The sidecar stops renewing. A long poll waiting on the current
	// version gets the config that marks it offline once the lease lapses.
	type polled struct {
		cfg     api.AppConfig
		changed bool
		err     error
	}
	res := make(chan polled, 1)
	go func() {
		cfg, changed, err := sc.PollConfig(ctx, "orders", after.Version, time.Minute)
		res <- polled{cfg, changed, err}
	}()
	waitUntil(t, 10*time.Second, "the long poll to wait", func() bool { return c.srv.LongPolls() == 1 })
	clk.Add(leaseTTL)
	var got polled
	select {
	case got = <-res:
	case <-time.After(30 * time.Second):
		t.Fatal("no config pushed within 30s of the lease lapsing")
	}
	if got.err != nil || !got.changed {
		t.Fatalf("poll: changed %v, err %v", got.changed, got.err)
	}
	if in, _ := got.cfg.Instance(addr); !in.Offline || in.Weight != 30 {
		t.Fatalf("pushed instance after the lease lapsed: %+v", in)
	}
	// The same sweep left the hand-added instances alone.
	for _, id := range []string{"10.0.0.9:7602", "canary"} {
		if in, _ := got.cfg.Instance(id); in.Offline || in.Leased {
			t.Fatalf("instance %s, never registered, after the sweep: %+v", id, in)
		}
	}
	if in := instanceOf(t, op, "orders", addr); in.State() != api.StateOffline || in.Weight != 30 {
		t.Fatalf("operators' view after the lease lapsed: %+v", in)
	}
	if in := instanceOf(t, op, "orders", "10.0.0.9:7602"); in.State() != api.StateStatic {
		t.Fatalf("hand-added instance: state %s, want static", in.State())
	}

	// The sidecar comes back: online, with the operator's weight.
	if l, err = sc.RenewLease(ctx, "orders", "", reg); err != nil {
		t.Fatal(err)
	}
	if l.Created || l.Weight != 30 {
		t.Fatalf("registration after the lapse: %+v", l)
	}
	if in := instanceOf(t, op, "orders", addr); in.State() != api.StateOnline || in.Weight != 30 {
		t.Fatalf("operators' view after the comeback: %+v", in)
	}
	// An operator's edit of the instance keeps it leased.
	if _, _, err := op.PutInstance(ctx, "orders", api.InstanceSpec{Addr: addr, Labels: map[string]string{"team": "x"}}); err != nil {
		t.Fatal(err)
	}
	if in := instanceOf(t, op, "orders", addr); !in.Leased || in.Weight != 30 {
		t.Fatalf("after an operator's edit: %+v", in)
	}

	// The pre-provisioned instance's sidecar adopts it: its ID and weight
	// stay, its labels are merged.
	l, err = sc.RenewLease(ctx, "orders", "", api.LeaseRequest{Addr: "10.0.0.5:7602", Labels: map[string]string{"version": "v2"}})
	if err != nil {
		t.Fatal(err)
	}
	if l.Created || l.InstanceID != "canary" || l.Weight != 0 {
		t.Fatalf("adopting a pre-provisioned instance: %+v", l)
	}
	if in := instanceOf(t, op, "orders", "canary"); in.State() != api.StateOnline || in.Labels["version"] != "v2" || in.Weight != 0 {
		t.Fatalf("adopted instance: %+v", in)
	}
}

// TestLeaseAuthorization: a lease needs the app's own credential (or the
// operator token): another app's credential is refused (403) and registers
// nothing, an unknown one is 401, and a bad address is 400.
func TestLeaseAuthorization(t *testing.T) {
	c := startBolt(t)
	op := client(t, c.url, testToken)
	credA := mustCreate(t, op, "orders")
	mustCreate(t, op, "billing")
	a := client(t, c.url, credA)
	reg := api.LeaseRequest{Addr: "10.0.0.1:7602"}

	_, err := a.RenewLease(t.Context(), "billing", "", reg)
	if ae, ok := errors.AsType[*ctrlclient.APIError](err); !ok || ae.Status != http.StatusForbidden {
		t.Fatalf("app orders's credential registering a billing instance: %v, want 403", err)
	}
	if ins, err := op.Instances(t.Context(), "billing"); err != nil || len(ins) != 0 {
		t.Fatalf("billing's instances after the refused registration: %+v, %v", ins, err)
	}
	_, err = a.RenewLease(t.Context(), "orders", "mmc1.orders.not-the-credential", reg)
	if ae, ok := errors.AsType[*ctrlclient.APIError](err); !ok || ae.Status != http.StatusUnauthorized {
		t.Fatalf("an unknown credential: %v, want 401", err)
	}
	if ans := do(t, http.MethodPut, c.url+"/v1/apps/orders/lease", "", `{"addr":"10.0.0.1:7602"}`); ans.status != http.StatusUnauthorized {
		t.Fatalf("no credential: %d, want 401", ans.status)
	}
	if ans := do(t, http.MethodPut, c.url+"/v1/apps/orders/lease", credA, `{"addr":"nohost"}`); ans.status != http.StatusBadRequest || ans.errorBody(t).Code != api.CodeInvalid {
		t.Fatalf("a bad address: %d %s, want 400", ans.status, ans.body)
	}
	if _, err := a.RenewLease(t.Context(), "orders", "", reg); err != nil {
		t.Fatalf("the app's own credential: %v", err)
	}
	if l, err := op.RenewLease(t.Context(), "billing", "", reg); err != nil || !l.Created {
		t.Fatalf("the operator token: %+v, %v", l, err)
	}
}

// TestLeaseStartupGrace: a control plane that starts after its sidecars'
// leases lapsed (it was down) does not mark them offline before they had
// a lease's time to renew.
func TestLeaseStartupGrace(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	st := openBolt(t, t.TempDir())
	c := startCP(t, st, "", leaseOpts(clk))
	op := client(t, c.url, testToken)
	cred := mustCreate(t, op, "orders")
	sc := client(t, c.url, cred)
	for _, addr := range []string{"10.0.0.1:7602", "10.0.0.2:7602"} {
		if _, err := sc.RenewLease(t.Context(), "orders", "", api.LeaseRequest{Addr: addr}); err != nil {
			t.Fatal(err)
		}
	}
	c.stop()
	clk.Add(time.Hour) // down for an hour
	c = startCP(t, st, "", leaseOpts(clk))
	sc = client(t, c.url, cred)
	op = client(t, c.url, testToken)
	// One sidecar renews within the grace, the other does not.
	clk.Add(leaseTTL / 2)
	if _, err := sc.RenewLease(t.Context(), "orders", "", api.LeaseRequest{Addr: "10.0.0.1:7602"}); err != nil {
		t.Fatal(err)
	}
	// Two sweeps that began after the renewal have judged nothing.
	n := c.srv.LeaseSweeps()
	waitUntil(t, 30*time.Second, "two sweeps", func() bool { return c.srv.LeaseSweeps() >= n+2 })
	if in := instanceOf(t, op, "orders", "10.0.0.2:7602"); in.Offline {
		t.Fatal("marked offline within the startup grace")
	}
	clk.Add(leaseTTL / 2)
	waitUntil(t, 30*time.Second, "the instance that did not renew to go offline", func() bool {
		return instanceOf(t, op, "orders", "10.0.0.2:7602").Offline
	})
	if in := instanceOf(t, op, "orders", "10.0.0.1:7602"); in.Offline {
		t.Fatalf("the renewed instance went offline: %+v", in)
	}
}
