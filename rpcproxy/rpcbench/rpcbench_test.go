package rpcbench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestRunSmoke runs a tiny benchmark so that it cannot rot; its figures
// are not judged.
func TestRunSmoke(t *testing.T) {
	cfg := Config{Duration: 200 * time.Millisecond, Concurrency: 8, Conns: 2, Latencies: 20}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rs, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 4 {
		t.Fatalf("%d results, want 4", len(rs))
	}
	for _, r := range rs {
		if r.Calls == 0 || r.QPS <= 0 || r.P50 <= 0 || r.SerialP50 <= 0 {
			t.Errorf("empty result %+v", r)
		}
	}
	var buf bytes.Buffer
	PrintTable(&buf, cfg, rs)
	for _, want := range []string{"| mesh  | direct", "| http1 | sidecars", "sidecars/direct QPS"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	t.Logf("\n%s", buf.String())
}
