package sidecarapp

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/msgmesh/msgmesh/rpcproxy"
)

// The two example files claim to show every field of the config file
// (docs/config.md): every YAML key of File, at any depth, must appear in
// one of them at its place.
func TestExamplesShowEveryField(t *testing.T) {
	seen := make(map[string]bool)
	for _, name := range []string{"../../config/msgmesh.example.yaml", "../../config/msgmesh.embedded.example.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		var n yaml.Node
		if err := yaml.Unmarshal(b, &n); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		collectKeys(&n, "", seen)
	}
	var missing []string
	for _, p := range fieldPaths(reflect.TypeFor[File](), "", make(map[reflect.Type]bool), nil) {
		if !seen[p] {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		t.Errorf("config/*.example.yaml do not show these fields:\n%s", strings.Join(missing, "\n"))
	}

	// Shown is not enough: the sections LoadFile leaves to their packages
	// must be accepted by them too.
	f, err := LoadFile("../../config/msgmesh.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if f.RPC == nil || f.Telemetry == nil || f.Limits == nil {
		t.Fatalf("example lacks rpc, telemetry or limits: %+v", f)
	}
	if _, err := rpcproxy.New(*f.RPC, nil); err != nil {
		t.Errorf("the example's rpc section: %v", err)
	}
}

// collectKeys records the dotted path of every mapping key in n; a
// sequence's items and a map's entries add no path element of their own
// ("[]" and "*" in fieldPaths).
func collectKeys(n *yaml.Node, prefix string, seen map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			collectKeys(c, prefix, seen)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			collectKeys(c, prefix+"[]", seen)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := prefix + "." + n.Content[i].Value
			seen[p] = true
			collectKeys(n.Content[i+1], p, seen)
			// A free-form map (string keys chosen by the user) is "*".
			seen[prefix+".*"] = true
			collectKeys(n.Content[i+1], prefix+".*", seen)
		}
	}
}

// fieldPaths lists the dotted YAML paths of t's fields, recursively. A
// struct type met a second time (the same stream settings under a NATS
// cluster and under embedded) is shown once: only its key is listed again.
func fieldPaths(t reflect.Type, prefix string, done map[reflect.Type]bool, out []string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct || t.Elem().Kind() == reflect.Pointer {
			return fieldPaths(t.Elem(), prefix+"[]", done, out)
		}
		return out
	case reflect.Map:
		return fieldPaths(t.Elem(), prefix+".*", done, out)
	case reflect.Struct:
	default:
		return out
	}
	if t.PkgPath() == "time" || done[t] {
		return out
	}
	done[t] = true
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && tag == "" {
			out = fieldPaths(f.Type, prefix, done, out)
			continue
		}
		if tag == "" {
			tag = strings.ToLower(f.Name)
		}
		p := prefix + "." + tag
		out = append(out, p)
		out = fieldPaths(f.Type, p, done, out)
	}
	return slices.Compact(out)
}

// Every flag of the binary has a row in docs/config.md's flag table.
func TestEveryFlagDocumented(t *testing.T) {
	var usage strings.Builder
	if err := Run(t.Context(), []string{"--help"}, &usage); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Run --help = %v, want flag.ErrHelp", err)
	}
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(usage.String()) {
		name, ok := strings.CutPrefix(line, "  -")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(strings.TrimSpace(name), " ")
		n++
		if !strings.Contains(string(doc), "`--"+name+"`") {
			t.Errorf("flag --%s is not in docs/config.md", name)
		}
	}
	if n < 10 {
		t.Fatalf("found %d flags in the usage text:\n%s", n, usage.String())
	}
}

// The RPC proxy's YAML example in docs/rpc.md is a valid rpc section of
// the sidecar's file, as the proxy checks it.
func TestRPCDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/rpc.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml block in docs/rpc.md")
	}
	path := filepath.Join(t.TempDir(), "rpc.yaml")
	if err := os.WriteFile(path, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.RPC == nil || len(f.RPC.Routes) != 2 || len(f.RPC.Clusters) != 1 {
		t.Fatalf("docs/rpc.md's example: %+v", f.RPC)
	}
	if _, err := rpcproxy.New(*f.RPC, nil); err != nil {
		t.Fatalf("docs/rpc.md's example: %v", err)
	}
}
