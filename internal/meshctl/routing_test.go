package meshctl

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
)

// TestRoutingCommands: routing add, get, set, remove against a real
// control plane; bad rules exit 1 with the server's INVALID message, usage
// mistakes exit 2.
func TestRoutingCommands(t *testing.T) {
	url := startCtrlplane(t)
	cp := []string{"--ctrlplane", url, "--token-file", tokenFile(t)}
	runCP := func(args ...string) (int, string, string) {
		t.Helper()
		return run(t, append(args, cp...)...)
	}
	if code, _, errs := runCP("apps", "create", "--app", "orders"); code != 0 {
		t.Fatalf("apps create: exit %d, %q", code, errs)
	}
	if code, out, errs := runCP("routing", "add", "--app", "orders", "--name", "blue", "--colour", "blue", "--selector", "version=v2"); code != 0 || !strings.Contains(out, "blue") {
		t.Fatalf("routing add colour: exit %d, %q %q", code, out, errs)
	}
	if code, out, errs := runCP("routing", "add", "--app", "orders", "--name", "canary", "--group", "billing", "--percent", "10", "--selector", "version=v2", "--selector", "zone=a", "--fallback", "hold", "--hold-for", "2m"); code != 0 {
		t.Fatalf("routing add canary: exit %d, %q %q", code, out, errs)
	}
	code, out, _ := runCP("routing", "get", "--app", "orders")
	want := [][]string{
		{"RULE", "GROUP", "MATCHES", "TO", "FALLBACK"},
		{"blue", "*", "colour=blue", "version=v2", "anywhere"},
		{"canary", "billing", "canary", "10%", "version=v2,zone=a", "hold", "2m0s"},
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != len(want) {
		t.Fatalf("routing get: exit %d\n%s", code, out)
	}
	for i, w := range want {
		if got := strings.Join(strings.Fields(lines[i]), " "); got != strings.Join(w, " ") {
			t.Fatalf("routing get line %d = %q, want %q", i, got, w)
		}
	}
	// Replacing a rule by name; the canary goes to 25%.
	if code, _, errs := runCP("routing", "add", "--app", "orders", "--name", "canary", "--group", "billing", "--percent", "25", "--selector", "version=v2"); code != 0 {
		t.Fatalf("routing add again: exit %d, %q", code, errs)
	}
	code, out, _ = runCP("routing", "get", "--app", "orders", "--json")
	var got api.Routing
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got.Rules) != 2 || *got.Rules[1].Percent != 25 {
		t.Fatalf("routing get --json: exit %d, %v\n%s", code, err, out)
	}
	// A whole document from a YAML file.
	doc := filepath.Join(t.TempDir(), "routing.yaml")
	writeFile(t, doc, "rules:\n  - name: qa\n    colour: qa\n    selector: {version: v3}\n  - name: canary\n    percent: 5\n    selector: {version: v3}\n")
	if code, out, errs := runCP("routing", "set", "--app", "orders", "--file", doc); code != 0 || !strings.Contains(out, "canary 5%") || strings.Contains(out, "blue") {
		t.Fatalf("routing set: exit %d, %q %q", code, out, errs)
	}
	if code, out, _ := runCP("routing", "remove", "--app", "orders", "--name", "qa"); code != 0 || !strings.Contains(out, "removed routing rule qa") {
		t.Fatalf("routing remove: exit %d, %q", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, bad, "rules:\n  - name: x\n    colour: blue\n    selecter: {version: v3}\n")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"routing", "add", "--app", "orders", "--name", "x", "--percent", "101", "--selector", "v=2"}, 1, "rules[1].percent: 101 is outside 0..100 (INVALID)"},
		{[]string{"routing", "add", "--app", "orders", "--name", "x", "--colour", "light blue", "--selector", "v=2"}, 1, "rules[1].colour"},
		{[]string{"routing", "add", "--app", "orders", "--name", "x", "--colour", "blue"}, 2, "--selector is required"},
		{[]string{"routing", "add", "--app", "orders", "--name", "x", "--colour", "blue", "--percent", "3", "--selector", "v=2"}, 2, "--colour (a colour rule) or --percent"},
		{[]string{"routing", "remove", "--app", "orders", "--name", "ghost"}, 1, `no routing rule "ghost"`},
		{[]string{"routing", "add", "--app", "orders", "--name", "x", "--colour", "blue", "--selector", "v=2", "--hold-for", "5s"}, 1, "hold_for: only with fallback"},
		{[]string{"routing", "set", "--app", "orders", "--file", bad}, 1, "selecter"},
		{[]string{"routing", "get", "--app", "ghost"}, 1, "NOT_FOUND"},
	} {
		if code, _, errs := runCP(tc.args...); code != tc.code || !strings.Contains(errs, tc.msg) {
			t.Errorf("%v: exit %d, %q; want exit %d and %q", tc.args, code, errs, tc.code, tc.msg)
		}
	}
}
