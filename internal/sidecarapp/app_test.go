package sidecarapp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The example in the repo must stay loadable: it is the documentation.
func TestExampleConfigLoads(t *testing.T) {
	f, err := LoadFile("../../config/msgmesh.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if f.Brokers == nil || len(f.Brokers.Clusters) != 3 {
		t.Fatalf("example config: %+v", f.Brokers)
	}
	for topic, want := range map[string]string{"payments.card.eu": "events", "billing.invoice": "legacy", "orders.created": "main"} {
		if got := f.Brokers.Resolve(topic); got != want {
			t.Errorf("example routes %s to %s, want %s", topic, got, want)
		}
	}
}

func TestEmbeddedExampleConfigLoads(t *testing.T) {
	f, err := LoadFile("../../config/msgmesh.embedded.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, streams, err := f.Embedded.config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxStore != 10<<30 || cfg.SyncInterval != 0 || streams.For("jobs.a").Retention != "interest" || *streams.For("x").MaxAge != 168*time.Hour {
		t.Fatalf("embedded example: %+v, streams %+v", cfg, streams)
	}
}

func TestLoadFileErrors(t *testing.T) {
	for name, c := range map[string]struct{ yaml, want string }{
		"unknown field":        {"brokerz: {}\n", "brokerz"},
		"bad kind":             {"brokers:\n  clusters: [{name: a, kind: pulsar, endpoints: [x]}]\n", "pulsar"},
		"unknown cluster":      {"brokers:\n  clusters: [{name: a, kind: nats, endpoints: [x]}]\n  routes: [{topic: t, cluster: b}]\n", "unknown cluster"},
		"syntax":               {"brokers: [\n", "yaml"},
		"embedded and brokers": {"brokers:\n  clusters: [{name: a, kind: nats, endpoints: [x]}]\nembedded: {sync: always}\n", "both set"},
		"bad sync":             {"embedded: {sync: sometimes}\n", "sync"},
		"negative sync":        {"embedded: {sync: -1s}\n", "sync"},
		"bad max_store":        {"embedded: {max_store: lots}\n", "lots"},
		"embedded replicas":    {"embedded: {streams: {topics: [{topic: a, replicas: 3}]}}\n", "single server"},
		"bad retention":        {"embedded: {streams: {retention: forever}}\n", "forever"},
		"streams on kafka":     {"brokers:\n  clusters: [{name: a, kind: kafka, endpoints: [x], streams: {max_age: 1h}}]\n", "nats clusters only"},
	} {
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte(c.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadFile(path)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: LoadFile error %v, want one mentioning %q", name, err, c.want)
		}
	}
	if f, err := LoadFile(writeFile(t, "")); err != nil || f.Brokers != nil {
		t.Errorf("empty file: %+v, %v; want no brokers section and no error", f, err)
	}
}

func writeFile(t *testing.T, s string) string {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
