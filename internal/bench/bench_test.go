package bench

import (
	"strings"
	"testing"
	"time"
)

// The table compares each sync setting's rows with the first one's.
func TestPrintTableSyncCost(t *testing.T) {
	rs := []Result{
		{Broker: "nats, sync always", Kind: KindDirect, Path: "direct", PublishMPS: 1000, ConsumeMPS: 50000, P50: 400 * time.Microsecond, P99: time.Millisecond},
		{Broker: "nats, sync always", Kind: KindSidecar, Path: "sidecar", PublishMPS: 900, ConsumeMPS: 20000, P50: 450 * time.Microsecond, P99: time.Millisecond},
		{Broker: "nats, sync every 1s", Kind: KindDirect, Path: "direct", PublishMPS: 100000, ConsumeMPS: 100000, P50: 40 * time.Microsecond, P99: 100 * time.Microsecond},
		{Broker: "nats, sync every 1s", Kind: KindSidecar, Path: "sidecar", PublishMPS: 50000, ConsumeMPS: 40000, P50: 60 * time.Microsecond, P99: 200 * time.Microsecond},
	}
	var b strings.Builder
	PrintTable(&b, Config{NATSSync: []time.Duration{0, time.Second}}, rs)
	out := b.String()
	for _, want := range []string{
		"**nats, sync always**", "**nats, sync every 1s**", "**cost of the sync setting**",
		"| direct: always / every 1s            |          0.01 |          0.50 |      10.00 |      10.00 |",
		"| sidecar: always / every 1s           |          0.02 |          0.50 |       7.50 |       5.00 |",
		"| ratio sidecar / direct               |          0.50 |          0.40 |       1.50 |       2.00 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
