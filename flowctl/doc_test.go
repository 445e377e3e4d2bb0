package flowctl_test

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/msgmesh/msgmesh/flowctl"
)

// TestDocExample loads the YAML example of docs/flow-control.md the way the
// sidecar loads its config file (unknown fields are errors), so the
// documentation stays valid.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/flow-control.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml block in docs/flow-control.md")
	}
	var file struct {
		Limits flowctl.Config `yaml:"limits"`
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte(block)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatal(err)
	}
	cfg := file.Limits
	if cfg.Topics["orders.created"].PublishRate != 500 || cfg.Topics["payments.>"].OnLimit != flowctl.OnLimitReject ||
		cfg.Groups["audit:orders.*"].MaxInflight != 10 || cfg.Breaker.OpenFor != 5*time.Second || cfg.MaxMessageBytes != 1<<20 {
		t.Fatalf("decoded %+v", cfg)
	}
	c, err := flowctl.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.MaxMessageBytes("logs.app"); got != 8192 {
		t.Fatalf("MaxMessageBytes(logs.app) = %d", got)
	}
	if got := c.MaxMessageBytes("payments.eu.card"); got != 1<<20 {
		t.Fatalf("MaxMessageBytes(payments.eu.card) = %d", got)
	}
}
