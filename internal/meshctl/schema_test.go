package meshctl

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlplanetest"
	"github.com/msgmesh/msgmesh/schema"
)

// startCtrlplaneWithSchemas runs a real control plane on 127.0.0.1 with
// both of its bbolt files (state and schema registry) in a temporary
// directory, as the ctrlplane binary has them.
func startCtrlplaneWithSchemas(t *testing.T) string {
	t.Helper()
	schemas, err := schema.OpenBoltStore(filepath.Join(t.TempDir(), ctrlplane.SchemaFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = schemas.Close() })
	return ctrlplanetest.Start(t, ctrlplane.Options{SchemaStore: schemas, Token: cpToken})
}

func TestSchemaCommands(t *testing.T) {
	url := startCtrlplaneWithSchemas(t)
	cp := []string{"--ctrlplane", url, "--token", cpToken}
	runCP := func(args ...string) (int, string, string) {
		t.Helper()
		return run(t, append(args, cp...)...)
	}
	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, text)
		return p
	}
	v1 := file("v1.avsc", `{"type":"record","name":"Order","namespace":"com.acme","fields":[{"name":"id","type":"string"}]}`)
	v2 := file("v2.avsc", `{"type":"record","name":"Order","namespace":"com.acme","fields":[{"name":"id","type":"string"},{"name":"note","type":"string","default":""}]}`)
	bad := file("bad.avsc", `{"type":"record","name":"Order","namespace":"com.acme","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"}]}`)
	broken := file("broken.avsc", `{"type":"record","name":"Order"}`)

	// A topic without a schema accepts any valid one, not a broken one.
	if code, out, errs := runCP("schema", "check", "--topic", "orders", "--file", v1); code != 0 || !strings.Contains(out, "no schema yet") {
		t.Fatalf("check before any version: exit %d, %q %q", code, out, errs)
	}
	if code, _, errs := runCP("schema", "check", "--topic", "orders", "--file", broken); code != 1 || !strings.Contains(errs, "422") || !strings.Contains(errs, "42201") {
		t.Fatalf("check a broken schema: exit %d, %q", code, errs)
	}
	if code, out, errs := runCP("schema", "register", "--topic", "orders", "--file", v1); code != 0 || strings.TrimSpace(out) != "topic orders: schema version 1, id 1" {
		t.Fatalf("register v1: exit %d, %q %q", code, out, errs)
	}
	if code, out, errs := runCP("schema", "check", "--topic", "orders", "--file", v2); code != 0 || !strings.Contains(out, "would accept") {
		t.Fatalf("check v2: exit %d, %q %q", code, out, errs)
	}
	code, out, errs := runCP("schema", "check", "--topic", "orders", "--file", bad)
	if code != 1 || !strings.Contains(errs, "would refuse") || !strings.Contains(errs, `field "qty"`) || !strings.Contains(errs, "without a default") || out != "" {
		t.Fatalf("check an incompatible schema: exit %d, %q %q", code, out, errs)
	}
	if code, _, errs := runCP("schema", "register", "--topic", "orders", "--file", bad); code != 1 || !strings.Contains(errs, "409 Conflict") || !strings.Contains(errs, `field "qty"`) {
		t.Fatalf("register an incompatible schema: exit %d, %q", code, errs)
	}
	if code, out, errs := runCP("schema", "register", "--topic", "orders", "--file", v2); code != 0 || strings.TrimSpace(out) != "topic orders: schema version 2, id 2" {
		t.Fatalf("register v2: exit %d, %q %q", code, out, errs)
	}

	var got struct {
		Subject string
		Version int
		ID      int
		Schema  map[string]any
	}
	code, out, errs = runCP("schema", "get", "--topic", "orders")
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.Version != 2 || got.ID != 2 || got.Schema["name"] != "Order" {
		t.Fatalf("get latest: exit %d, %q %q (%v)", code, out, errs, err)
	}
	code, out, _ = runCP("schema", "get", "--topic", "orders", "--version", "1")
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.Version != 1 || len(got.Schema["fields"].([]any)) != 1 {
		t.Fatalf("get version 1: exit %d, %q (%v)", code, out, err)
	}
	if code, out, _ := runCP("schema", "list"); code != 0 || out != "orders\n" {
		t.Fatalf("list: exit %d, %q", code, out)
	}

	if code, out, errs := runCP("schema", "policy", "set", "--topic", "orders", "--policy", "warn"); code != 0 || !strings.Contains(out, "schema policy warn") {
		t.Fatalf("policy set: exit %d, %q %q", code, out, errs)
	}
	if code, out, _ := runCP("schema", "policy", "get"); code != 0 || !strings.Contains(out, `"orders": "warn"`) {
		t.Fatalf("policy get: exit %d, %q", code, out)
	}
	if code, out, _ := runCP("schema", "policy", "get", "--topic", "orders"); code != 0 || !strings.Contains(out, `"policy": "warn"`) {
		t.Fatalf("policy get --topic: exit %d, %q", code, out)
	}
	if code, out, _ := runCP("schema", "policy", "delete", "--topic", "orders"); code != 0 || !strings.Contains(out, "enforces") {
		t.Fatalf("policy delete: exit %d, %q", code, out)
	}
	if code, out, _ := runCP("schema", "policy", "get", "--topic", "orders"); code != 0 || !strings.Contains(out, `"policy": "enforce"`) || !strings.Contains(out, `"default": true`) {
		t.Fatalf("policy get after delete: exit %d, %q", code, out)
	}

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"schema", "get", "--topic", "orders", "--version", "9"}, 1, "404 Not Found"},
		{[]string{"schema", "get", "--topic", "nope"}, 1, "(40401)"},
		{[]string{"schema", "get", "--topic", "orders", "--version", "x"}, 2, "not a version"},
		{[]string{"schema", "get"}, 2, "--topic is required"},
		{[]string{"schema", "register", "--topic", "orders"}, 2, "--file is required"},
		{[]string{"schema", "register", "--topic", "orders", "--file", filepath.Join(dir, "missing.avsc")}, 1, "no such file"},
		{[]string{"schema", "policy", "set", "--topic", "orders"}, 2, "--policy is required"},
		{[]string{"schema", "policy", "set", "--topic", "orders", "--policy", "loud"}, 1, `policy: "loud" is not a policy; use enforce, warn or off (INVALID)`},
	} {
		code, _, errs := runCP(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.msg) {
			t.Errorf("%v: exit %d, %q; want exit %d mentioning %q", tc.args, code, errs, tc.code, tc.msg)
		}
	}
	// Reads need a credential, writes the operator token.
	if code, _, errs := run(t, "schema", "list", "--ctrlplane", url); code != 1 || !strings.Contains(errs, "401 Unauthorized") {
		t.Fatalf("list without a token: exit %d, %q", code, errs)
	}
	if code, _, errs := run(t, "schema", "register", "--topic", "x", "--file", v1, "--ctrlplane", url, "--token", "wrong-token-0123456789"); code != 1 || !strings.Contains(errs, "(40101)") {
		t.Fatalf("register with a wrong token: exit %d, %q", code, errs)
	}
	// Three words: "schema policy" alone asks which one.
	if code, _, errs := run(t, "schema", "policy"); code != 2 || !strings.Contains(errs, "which one?") || !strings.Contains(errs, "meshctl schema policy set") {
		t.Fatalf("schema policy: exit %d, %q", code, errs)
	}
	if code, out, _ := run(t, "help", "schema", "policy"); code != 0 || !strings.Contains(out, "meshctl schema policy delete") || strings.Contains(out, "meshctl schema register") {
		t.Fatalf("help schema policy: exit %d, %q", code, out)
	}
	if code, out, _ := run(t, "help", "schema"); code != 0 || !strings.Contains(out, "meshctl schema register") || !strings.Contains(out, "meshctl schema policy set") {
		t.Fatalf("help schema: exit %d, %q", code, out)
	}
}
