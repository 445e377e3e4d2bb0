package meshctl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlplanetest"
)

const cpToken = "meshctl-test-operator-token-42"

// startCtrlplane runs a real control plane on a bbolt file and 127.0.0.1.
func startCtrlplane(t *testing.T) string {
	t.Helper()
	return ctrlplanetest.Start(t, ctrlplane.Options{Token: cpToken})
}

// tokenFile writes the operator token to a file for --token-file.
func tokenFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, cpToken+"\n")
	return path
}

func TestCtrlplaneCommands(t *testing.T) {
	url := startCtrlplane(t)
	cp := []string{"--ctrlplane", url, "--token-file", tokenFile(t)}
	runCP := func(args ...string) (int, string, string) {
		t.Helper()
		return run(t, append(args, cp...)...)
	}

	code, out, errs := runCP("apps", "create", "--app", "orders")
	if code != 0 || !strings.Contains(errs, "shown only now") {
		t.Fatalf("apps create: exit %d, %q", code, errs)
	}
	var created api.AppCreated
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Name != "orders" || !strings.HasPrefix(created.Credential, "mmc1.orders.") {
		t.Fatalf("apps create printed %q (%v)", out, err)
	}
	if code, _, errs := runCP("apps", "create", "--app", "orders"); code != 1 || !strings.Contains(errs, "409 Conflict") || !strings.Contains(errs, "(CONFLICT)") {
		t.Fatalf("second apps create: exit %d, %q", code, errs)
	}

	for _, args := range [][]string{
		{"instances", "add", "--app", "orders", "--addr", "10.0.0.1:7610", "--label", "version=v1"},
		{"instances", "add", "--app", "orders", "--addr", "10.0.0.2:7610", "--label", "version=v2", "--label", "zone=b", "--weight", "0"},
		{"instances", "add", "--app", "orders", "--addr", "10.0.0.3:7610", "--id", "canary"},
	} {
		if code, _, errs := runCP(args...); code != 0 || !strings.Contains(errs, "added instance") {
			t.Fatalf("%v: exit %d, %q", args, code, errs)
		}
	}
	if code, out, errs := runCP("weights", "set", "--app", "orders", "--node", "10.0.0.1:7610", "--weight", "30"); code != 0 || !strings.Contains(out, "set to 30") {
		t.Fatalf("weights set: exit %d, %q %q", code, out, errs)
	}
	code, out, _ = runCP("weights", "get", "--app", "orders")
	if code != 0 {
		t.Fatalf("weights get: exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := [][]string{
		{"INSTANCE", "ADDR", "WEIGHT", "LABELS"},
		{"10.0.0.1:7610", "10.0.0.1:7610", "30", "version=v1"},
		{"10.0.0.2:7610", "10.0.0.2:7610", "0", "version=v2,zone=b"},
		{"canary", "10.0.0.3:7610", "100"},
	}
	if len(lines) != len(want) {
		t.Fatalf("weights get:\n%s", out)
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Fatalf("weights get line %d = %q, want %q\n%s", i, got, w, out)
		}
	}

	// A sidecar registers 10.0.0.4:7610 itself: instances list shows it
	// online with its last renewal and version; the hand-added ones are
	// static.
	sc, err := ctrlclient.New(url, created.Credential)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.RenewLease(t.Context(), "orders", "", api.LeaseRequest{Addr: "10.0.0.4:7610", SidecarVersion: "v1.4.0"}); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCP("instances", "list", "--app", "orders")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 5 || strings.Join(strings.Fields(lines[0]), " ") != "INSTANCE ADDR WEIGHT STATE LAST SEEN VERSION LABELS" {
		t.Fatalf("instances list: exit %d\n%s", code, out)
	}
	if f := strings.Fields(lines[1]); len(f) < 6 || f[3] != "static" || f[4] != "-" {
		t.Fatalf("instances list, a hand-added instance: %q", lines[1])
	}
	if f := strings.Fields(lines[3]); len(f) < 6 || f[0] != "10.0.0.4:7610" || f[2] != "100" || f[3] != "online" || f[5] != "v1.4.0" {
		t.Fatalf("instances list, a self-registered instance: %q", lines[3])
	}
	code, out, _ = runCP("instances", "list", "--app", "orders", "--json")
	var listed []api.Instance
	if err := json.Unmarshal([]byte(out), &listed); code != 0 || err != nil || len(listed) != 4 || !listed[2].Leased || listed[2].LastSeen.IsZero() {
		t.Fatalf("instances list --json: exit %d, %v\n%s", code, err, out)
	}

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"weights", "set", "--app", "orders", "--node", "10.0.0.1:7610", "--weight", "101"}, 1, "400 Bad Request: weight: 101 is outside 0..100 (INVALID)"},
		{[]string{"weights", "set", "--app", "orders", "--node", "10.0.0.1:7610", "--weight", "-5"}, 1, "outside 0..100"},
		{[]string{"weights", "set", "--app", "orders", "--node", "10.9.9.9:1", "--weight", "5"}, 1, `404 Not Found: app "orders" has no instance "10.9.9.9:1" (NOT_FOUND)`},
		{[]string{"weights", "set", "--app", "orders", "--node", "10.0.0.1:7610"}, 2, "--weight is required"},
		{[]string{"weights", "set", "--app", "orders", "--node", "10.0.0.1:7610", "--weight", "x"}, 2, "not an integer"},
		{[]string{"weights", "get"}, 2, "--app is required"},
		{[]string{"instances", "add", "--app", "orders", "--addr", "nohost"}, 1, "not host:port"},
		{[]string{"instances", "add", "--app", "orders", "--addr", "a:1", "--label", "novalue"}, 2, "KEY=VALUE"},
		{[]string{"instances", "remove", "--app", "orders"}, 2, "--id or --addr is required"},
		{[]string{"apps", "get", "--app", "ghost"}, 1, `no app "ghost"`},
		{[]string{"topology", "get"}, 1, "no global topology is set"},
	} {
		code, _, errs := runCP(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.msg) {
			t.Errorf("%v: exit %d, %q; want exit %d mentioning %q", tc.args, code, errs, tc.code, tc.msg)
		}
	}
	// No token, or a wrong one: the server's 401.
	if code, _, errs := run(t, "apps", "list", "--ctrlplane", url); code != 1 || !strings.Contains(errs, "401 Unauthorized") {
		t.Fatalf("without a token: exit %d, %q", code, errs)
	}
	// The token from the environment.
	t.Setenv(ctrlplaneTokenEnv, cpToken)
	if code, out, errs := run(t, "apps", "list", "--ctrlplane", url); code != 0 || !strings.Contains(out, `"name": "orders"`) {
		t.Fatalf("token from $%s: exit %d, %q %q", ctrlplaneTokenEnv, code, out, errs)
	}

	// Topology: a topology document, and a sidecar config file.
	dir := t.TempDir()
	topo := filepath.Join(dir, "topology.yaml")
	writeFile(t, topo, "clusters:\n  - name: main\n    kind: nats\n    endpoints: [nats://10.0.0.5:4222]\n  - name: events\n    kind: kafka\n    endpoints: [10.0.0.6:9092]\nroutes:\n  - topic: payments.>\n    cluster: events\ndefault_cluster: main\n")
	if code, out, errs := runCP("clusters", "set", "--file", topo); code != 0 || !strings.Contains(out, "default_cluster: main") {
		t.Fatalf("clusters set: exit %d, %q %q", code, out, errs)
	}
	if code, out, _ := runCP("topology", "get"); code != 0 || !strings.Contains(out, "payments.>") {
		t.Fatalf("topology get: exit %d, %q", code, out)
	}
	if code, out, errs := runCP("topology", "set", "--app", "orders", "--file", "../../config/msgmesh.example.yaml"); code != 0 || !strings.Contains(out, "name: legacy") {
		t.Fatalf("topology set from the sidecar's example config: exit %d, %q %q", code, out, errs)
	}
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "clusters:\n  - name: main\n    kind: nats\n    endpoint: [x]\n")
	if code, _, errs := runCP("topology", "set", "--file", bad); code != 1 || !strings.Contains(errs, "field endpoint not found") {
		t.Fatalf("topology with an unknown field: exit %d, %q", code, errs)
	}
	writeFile(t, bad, "clusters:\n  - name: main\n    kind: redis\n    endpoints: [x:1]\n")
	if code, _, errs := runCP("topology", "set", "--file", bad); code != 1 || !strings.Contains(errs, `kind "redis"`) || !strings.Contains(errs, "INVALID") {
		t.Fatalf("invalid topology: exit %d, %q", code, errs)
	}

	// The app's config, read with the app's credential; a watch that
	// sees the next change.
	app := []string{"--ctrlplane", url, "--token", created.Credential}
	code, out, errs = run(t, append([]string{"config", "get", "--app", "orders"}, app...)...)
	var cfg api.AppConfig
	if code != 0 || json.Unmarshal([]byte(out), &cfg) != nil || cfg.Brokers == nil || len(cfg.Brokers.Clusters) != 3 || len(cfg.Instances) != 4 {
		t.Fatalf("config get: exit %d, %q %q", code, out, errs)
	}
	if code, _, errs := run(t, append([]string{"apps", "list"}, app...)...); code != 1 || !strings.Contains(errs, "403 Forbidden") {
		t.Fatalf("apps list with an app credential: exit %d, %q", code, errs)
	}
	state := filepath.Join(dir, "state.json")
	type result struct {
		code      int
		out, errs string
	}
	watched := make(chan result, 1)
	go func() {
		var r result
		r.code, r.out, r.errs = run(t, append([]string{"config", "watch", "--app", "orders", "--count", "2", "--state-file", state}, app...)...)
		watched <- r
	}()
	// Change the weight once the watch has its first config on disk.
	waitUntil(t, 10*time.Second, "config watch to save the first config", func() bool {
		saved, err := ctrlclient.LoadLast(state)
		return err == nil && saved.Version == cfg.Version
	})
	if code, _, errs := runCP("weights", "set", "--app", "orders", "--node", "canary", "--weight", "5"); code != 0 {
		t.Fatalf("weights set: %q", errs)
	}
	select {
	case r := <-watched:
		lines := strings.Split(strings.TrimSpace(r.out), "\n")
		var last api.AppConfig
		if r.code != 0 || len(lines) != 2 || json.Unmarshal([]byte(lines[1]), &last) != nil {
			t.Fatalf("config watch: exit %d, %q %q", r.code, r.out, r.errs)
		}
		if in, ok := last.Instance("canary"); !ok || in.Weight != 5 {
			t.Fatalf("config watch's second config: %+v", last)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("config watch did not see the change")
	}

	// Rotation: a new credential; the old one works during the grace.
	code, out, errs = runCP("apps", "rotate-credential", "--app", "orders", "--grace", "1m")
	var rot api.CredentialRotated
	if code != 0 || json.Unmarshal([]byte(out), &rot) != nil || rot.Credential == created.Credential || rot.PreviousExpires.IsZero() {
		t.Fatalf("rotate-credential: exit %d, %q %q", code, out, errs)
	}
	if code, _, errs := run(t, append([]string{"config", "get", "--app", "orders"}, app...)...); code != 0 {
		t.Fatalf("old credential during the grace period: %q", errs)
	}

	// Removal and deletion.
	if code, out, _ := runCP("instances", "remove", "--app", "orders", "--addr", "10.0.0.2:7610"); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("instances remove: exit %d %q", code, out)
	}
	if code, out, _ := runCP("instances", "list", "--app", "orders"); code != 0 || strings.Contains(out, "10.0.0.2:7610") {
		t.Fatalf("instances list after remove: %q", out)
	}
	if code, _, _ := runCP("topology", "delete", "--app", "orders"); code != 0 {
		t.Fatal("topology delete --app")
	}
	if code, _, _ := runCP("clusters", "delete"); code != 0 {
		t.Fatal("clusters delete")
	}
	if code, out, _ := runCP("apps", "delete", "--app", "orders"); code != 0 || !strings.Contains(out, "deleted app orders") {
		t.Fatalf("apps delete: %q", out)
	}
	if code, out, _ := runCP("apps", "list"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("apps list after delete: %q", out)
	}
}

func TestCtrlplaneHelp(t *testing.T) {
	code, out, _ := run(t, "help")
	for _, want := range []string{"meshctl weights set --app NAME --node ID --weight N", "meshctl apps rotate-credential", "meshctl instances add", "meshctl clusters set", "meshctl topology get", "meshctl config watch", "-ctrlplane", "MSGMESH_CTRLPLANE_TOKEN"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("help does not mention %q", want)
		}
	}
	if code, out, _ := run(t, "help", "weights"); code != 0 || !strings.Contains(out, "meshctl weights set") || !strings.Contains(out, "meshctl weights get") || strings.Contains(out, "meshctl apps") {
		t.Fatalf("help weights: exit %d\n%s", code, out)
	}
	if code, out, _ := run(t, "help", "weights", "set"); code != 0 || !strings.Contains(out, "-node") || strings.Contains(out, "weights get") {
		t.Fatalf("help weights set: exit %d\n%s", code, out)
	}
	if code, _, errs := run(t, "weights"); code != 2 || !strings.Contains(errs, "which one?") || !strings.Contains(errs, "meshctl weights set") {
		t.Fatalf("weights alone: exit %d, %q", code, errs)
	}
	if code, _, errs := run(t, "weights", "frob"); code != 2 || !strings.Contains(errs, `unknown command "weights frob"`) {
		t.Fatalf("weights frob: exit %d, %q", code, errs)
	}
	// Nothing listens there: a clear error, exit 1.
	if code, _, errs := run(t, "apps", "list", "--ctrlplane", "127.0.0.1:1", "--token", "x"); code != 1 || !strings.Contains(errs, "connection refused") {
		t.Fatalf("unreachable control plane: exit %d, %q", code, errs)
	}
	if code, _, errs := run(t, "apps", "list", "--ctrlplane", "ftp://x"); code != 2 || !strings.Contains(errs, "--ctrlplane") {
		t.Fatalf("bad URL: exit %d, %q", code, errs)
	}
}

// TestCtrlplaneTokenSources: the token comes from --token-file or
// $MSGMESH_CTRLPLANE_TOKEN without a word; --token works but warns that
// it shows in ps; both flags at once are a usage error.
func TestCtrlplaneTokenSources(t *testing.T) {
	url := startCtrlplane(t)
	file := tokenFile(t)
	for _, tc := range []struct {
		name string
		env  string
		args []string
		code int
		warn string
	}{
		{"token file", "", []string{"--token-file", file}, 0, ""},
		{"environment", cpToken, nil, 0, ""},
		{"flag", "", []string{"--token", cpToken}, 0, "meshctl: warning: the token was given as --token, which every local user can read"},
		{"both flags", "", []string{"--token", cpToken, "--token-file", file}, 2, "--token and --token-file both give the token"},
		{"missing file", "", []string{"--token-file", file + ".missing"}, 2, "--token-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(ctrlplaneTokenEnv, tc.env)
			code, out, errs := run(t, append([]string{"apps", "list", "--ctrlplane", url}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %q %q", code, tc.code, out, errs)
			}
			if tc.warn == "" && errs != "" || tc.warn != "" && !strings.Contains(errs, tc.warn) {
				t.Fatalf("stderr %q, want %q", errs, tc.warn)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond every millisecond until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}
