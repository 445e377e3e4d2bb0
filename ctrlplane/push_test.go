package ctrlplane_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
)

// maxPropagation is the requirement: a change reaches every connected
// sidecar within a second.
const maxPropagation = time.Second

func TestLongPoll(t *testing.T) {
	c := startBolt(t)
	op := client(t, c.url, testToken)
	mustCreate(t, op, "orders", "10.0.0.1:7610")
	cfg, err := op.Config(t.Context(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	v := strconv.FormatUint(cfg.Version, 10)

	// Nothing changes: 304 with the current version after the wait.
	start := time.Now()
	a := do(t, "GET", c.url+"/v1/apps/orders/config?after="+v+"&wait=200ms", testToken, "")
	if a.status != 304 || a.header.Get(api.VersionHeader) != v || len(a.body) != 0 {
		t.Fatalf("unchanged poll: %d %q %q", a.status, a.header.Get(api.VersionHeader), a.body)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Fatalf("the poll answered after %v, before its wait", el)
	}
	// An older version: the config at once.
	a = do(t, "GET", c.url+"/v1/apps/orders/config?after=0", testToken, "")
	if a.status != 200 || a.header.Get(api.VersionHeader) != v {
		t.Fatalf("poll after 0: %d %s", a.status, a.body)
	}
	// A version from the future (the store was reset): the config at once.
	a = do(t, "GET", c.url+"/v1/apps/orders/config?after=999999&wait=1m", testToken, "")
	if a.status != 200 || a.header.Get(api.VersionHeader) != v {
		t.Fatalf("poll after a future version: %d %s", a.status, a.body)
	}
	// The client's view of the same.
	if _, changed, err := op.PollConfig(t.Context(), "orders", cfg.Version, 50*time.Millisecond); err != nil || changed {
		t.Fatalf("PollConfig unchanged = %v, %v", changed, err)
	}
	// A change during the wait answers at once.
	polled := make(chan api.AppConfig, 1)
	go func() {
		got, _, err := op.PollConfig(t.Context(), "orders", cfg.Version, 30*time.Second)
		if err != nil {
			t.Error(err)
		}
		polled <- got
	}()
	waitUntil(t, 10*time.Second, "the poll to wait", func() bool { return c.srv.LongPolls() == 1 })
	if _, err := op.SetWeight(t.Context(), "orders", "10.0.0.1:7610", 50); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-polled:
		if got.Version <= cfg.Version || !weightIs("10.0.0.1:7610", 50)(got) {
			t.Fatalf("poll answered %+v", got)
		}
	case <-time.After(maxPropagation):
		t.Fatal("the change did not answer the poll within 1s")
	}
	// A deleted app ends its polls with 404.
	go func() {
		_, _, err := op.PollConfig(t.Context(), "orders", cfg.Version+1000, 30*time.Second)
		polled <- api.AppConfig{App: errString(err)}
	}()
	// (after=future answers at once, so poll on the current version.)
	cur, _ := op.Config(t.Context(), "orders")
	<-polled
	go func() {
		_, _, err := op.PollConfig(t.Context(), "orders", cur.Version, 30*time.Second)
		polled <- api.AppConfig{App: errString(err)}
	}()
	waitUntil(t, 10*time.Second, "the poll to wait", func() bool { return c.srv.LongPolls() == 1 })
	if err := op.DeleteApp(t.Context(), "orders"); err != nil {
		t.Fatal(err)
	}
	if got := <-polled; got.App != errString(ctrlclient.ErrNotFound) {
		t.Fatalf("poll of a deleted app ended with %q", got.App)
	}
}

// errString reduces an error to the sentinel it wraps, for comparisons.
func errString(err error) string {
	for _, s := range []error{ctrlclient.ErrNotFound, ctrlclient.ErrUnauthorized, ctrlclient.ErrUnavailable} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestPropagation: five watchers (five sidecars) on one app; every weight
// change must reach all of them within a second. The delay is measured
// from just before the operator's write to each watcher's onChange.
func TestPropagation(t *testing.T) {
	const watchers, rounds = 5, 20
	c := startBolt(t)
	op := client(t, c.url, testToken)
	cred := mustCreate(t, op, "orders", "10.0.0.1:7610", "10.0.0.2:7610")
	var recs []*configs
	for range watchers {
		rec := newConfigs()
		watch(t, client(t, c.url, cred), "orders", rec)
		rec.waitFor(t, 10*time.Second, "the first config", func(api.AppConfig) bool { return true })
		recs = append(recs, rec)
	}
	waitUntil(t, 10*time.Second, "every watcher to wait", func() bool { return c.srv.LongPolls() == watchers })

	var delays, writes []time.Duration
	for i := range rounds {
		w := i % 100 // 0..19, each different from the last
		start := time.Now()
		if _, err := op.SetWeight(t.Context(), "orders", "10.0.0.1:7610", w); err != nil {
			t.Fatal(err)
		}
		writes = append(writes, time.Since(start))
		for _, rec := range recs {
			got := rec.waitFor(t, 10*time.Second, "the new weight", weightIs("10.0.0.1:7610", w))
			delays = append(delays, got.at.Sub(start))
		}
		// Every watcher is waiting again before the next change.
		waitUntil(t, 10*time.Second, "every watcher to wait", func() bool { return c.srv.LongPolls() == watchers })
	}
	slices.Sort(delays)
	slices.Sort(writes)
	p50, p99, worst := delays[len(delays)/2], delays[len(delays)*99/100], delays[len(delays)-1]
	t.Logf("propagation over %d watchers x %d changes, from before the write to each onChange: p50 %v, p99 %v, max %v (the write alone: p50 %v, max %v)",
		watchers, rounds, p50, p99, worst, writes[len(writes)/2], writes[len(writes)-1])
	if worst > maxPropagation {
		t.Fatalf("a change took %v to reach a watcher; the limit is %v", worst, maxPropagation)
	}
}

// TestWatcherSurvivesRestart: the control plane goes away; the watcher
// keeps its last config (and so does a sidecar restarting meanwhile, from
// its state file), reconnects when the control plane is back on the same
// data directory, and gets the changes made after.
func TestWatcherSurvivesRestart(t *testing.T) {
	dataDir := t.TempDir()
	st := openBolt(t, dataDir)
	c := startCP(t, st, "")
	op := client(t, c.url, testToken)
	cred := mustCreate(t, op, "orders", "10.0.0.1:7610")
	if _, err := op.SetWeight(t.Context(), "orders", "10.0.0.1:7610", 60); err != nil {
		t.Fatal(err)
	}

	stateFile := filepath.Join(t.TempDir(), "ctrlplane-config.json")
	rec := newConfigs()
	w := watch(t, client(t, c.url, cred), "orders", rec, ctrlclient.WithStateFile(stateFile))
	first := rec.waitFor(t, 10*time.Second, "weight 60", weightIs("10.0.0.1:7610", 60)).cfg
	if fi, err := os.Stat(stateFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v; want mode 0600", fi, err)
	}

	// The control plane stops (its store too, as a process exit would).
	c.stop()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the watcher to notice", func() bool { return w.Status().Failures >= 2 })
	if last, ok := w.Last(); !ok || last.Version != first.Version || !weightIs("10.0.0.1:7610", 60)(last) {
		t.Fatalf("while the control plane is down the watcher has %+v", last)
	}
	saved, err := ctrlclient.LoadLast(stateFile)
	if err != nil || saved.Version != first.Version || saved.Credential != cred {
		t.Fatalf("LoadLast = %+v, %v", saved, err)
	}
	// A sidecar (re)starting now serves with the saved config at once.
	rec2 := newConfigs()
	w2 := watch(t, client(t, c.url, "provisioned-credential-is-stale"), "orders", rec2, ctrlclient.WithStateFile(stateFile))
	if got, ok := w2.Last(); !ok || got.Version != first.Version {
		t.Fatalf("a watcher started while the control plane is down has %+v, %v", got, ok)
	}
	rec2.waitFor(t, time.Millisecond, "the saved config, before Watch returned", weightIs("10.0.0.1:7610", 60))

	// The control plane comes back on the same address and data directory.
	st2 := openBolt(t, dataDir)
	c2 := startCP(t, st2, c.addr)
	waitUntil(t, 15*time.Second, "both watchers to reconnect", func() bool { return c2.srv.LongPolls() == 2 })
	if _, err := client(t, c2.url, testToken).SetWeight(t.Context(), "orders", "10.0.0.1:7610", 25); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*configs{rec, rec2} {
		got := r.waitFor(t, 10*time.Second, "weight 25 after the restart", weightIs("10.0.0.1:7610", 25)).cfg
		if got.Version <= first.Version {
			t.Fatalf("version %d after the restart, not above %d", got.Version, first.Version)
		}
	}
	if saved, err := ctrlclient.LoadLast(stateFile); err != nil || !weightIs("10.0.0.1:7610", 25)(saved) {
		t.Fatalf("the state file was not updated: %+v, %v", saved, err)
	}
	// No temporary files are left behind.
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(stateFile), ".*tmp*")); len(m) != 0 {
		t.Fatalf("left behind: %v", m)
	}
}

// TestWatcherFollowsRotation: after a rotation the watcher switches to the
// new credential from the pushed config, and keeps working after the old
// credential expires.
func TestWatcherFollowsRotation(t *testing.T) {
	clk := &clock{now: time.Now()}
	c := startBolt(t, func(o *ctrlplane.Options) { o.Now = clk.Now })
	op := client(t, c.url, testToken)
	cred := mustCreate(t, op, "orders", "10.0.0.1:7610")
	rec := newConfigs()
	w := watch(t, client(t, c.url, cred), "orders", rec)
	rec.waitFor(t, 10*time.Second, "the first config", func(api.AppConfig) bool { return true })
	rot, err := op.RotateCredential(t.Context(), "orders", api.RotateCredentialRequest{Grace: "1m"})
	if err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 10*time.Second, "the new credential", func(cfg api.AppConfig) bool { return cfg.Credential == rot.Credential })
	clk.Add(2 * time.Minute) // the old credential expires
	if _, err := op.SetWeight(t.Context(), "orders", "10.0.0.1:7610", 7); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 10*time.Second, "weight 7 with the new credential", weightIs("10.0.0.1:7610", 7))
	if s := w.Status(); !s.Connected {
		t.Fatalf("status %+v", s)
	}
}

func TestLoadLastErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ctrlclient.LoadLast(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ctrlclient.LoadLast(bad); err == nil {
		t.Fatal("corrupt file loaded")
	}
	if err := ctrlclient.SaveLast(filepath.Join(dir, "no", "such", "dir"), api.AppConfig{App: "a"}); err == nil {
		t.Fatal("SaveLast into a missing directory succeeded")
	}
	good := filepath.Join(dir, "good")
	want := api.AppConfig{App: "orders", Version: 9, Instances: []api.Instance{{ID: "a:1", Addr: "a:1", Weight: 5}}, Credential: "c"}
	if err := ctrlclient.SaveLast(good, want); err != nil {
		t.Fatal(err)
	}
	got, err := ctrlclient.LoadLast(good)
	if err != nil || got.Version != 9 || got.Instances[0].Weight != 5 {
		t.Fatalf("round trip = %+v, %v", got, err)
	}
	// A state file of another app is ignored by a Watcher.
	rec := newConfigs()
	c, _ := ctrlclient.New("127.0.0.1:1", "")
	w := watch(t, c, "billing", rec, ctrlclient.WithStateFile(good))
	if _, ok := w.Last(); ok {
		t.Fatal("the watcher of billing took the saved config of orders")
	}
}
