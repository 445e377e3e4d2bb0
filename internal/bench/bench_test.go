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

// The HTTP publish row is held against the direct path's synchronous
// publishers, and every target the rows measured gets a line.
func TestPrintTableTargets(t *testing.T) {
	rs := []Result{
		{Broker: "kafka", Kind: KindDirect, Path: "direct", PublishMPS: 1000, ConsumeMPS: 1000, P50: 100 * time.Microsecond, P99: time.Millisecond, Sync32MPS: 1000,
			AppCPU: PhaseCPU{Publish: 6 * time.Microsecond, Consume: 4 * time.Microsecond}, BrokerCPU: PhaseCPU{Publish: 6 * time.Microsecond, Consume: 4 * time.Microsecond}},
		{Broker: "kafka", Kind: KindSidecar, Path: "sidecar", PublishMPS: 900, ConsumeMPS: 500, P50: 120 * time.Microsecond, P99: time.Millisecond, Sync32MPS: 800,
			PublishCost: PerMsg{CPU: 8 * time.Microsecond, Reads: 0.2, Writes: 0.5, Switches: 0.25}, ConsumeCost: PerMsg{CPU: 12 * time.Microsecond},
			Sync32Cost: PerMsg{CPU: 20 * time.Microsecond, Reads: 1, Writes: 2, Switches: 3}, PeakRSSKiB: 30 * 1024, AnonKiB: 11 * 1024, FileKiB: 18 * 1024,
			AppCPU: PhaseCPU{Publish: 6 * time.Microsecond, Consume: 4 * time.Microsecond}, BrokerCPU: PhaseCPU{Publish: 10 * time.Microsecond, Consume: 4 * time.Microsecond}},
		{Broker: "kafka", Kind: KindHTTPPublish, Path: "HTTP publish (32 connections)", Sync32MPS: 700, Sync32Cost: PerMsg{CPU: 14 * time.Microsecond, Reads: 1.5}, PeakRSSKiB: 32 * 1024},
	}
	var b strings.Builder
	PrintTable(&b, Config{}, rs)
	out := b.String()
	for _, want := range []string{
		"| ratio HTTP publish / direct sync×32  |               |               |            |            |          0.70 |",
		"| added p50 (sidecar − direct)         |               |               |       20µs |         0s |",
		"| kafka                | publish, sidecar / direct ≥ 0.80             |       0.90 | yes      |",
		"| kafka                | consume, sidecar / direct ≥ 0.80             |       0.50 | no       |",
		"| kafka                | HTTP publish / direct sync×32 ≥ 0.80         |       0.70 | no       |",
		"| kafka                | sidecar CPU µs/msg, HTTP publish ≤ 15        |       14.0 | yes      |",
		"| kafka                | sidecar CPU µs/msg, SDK publish ≤ 10         |        8.0 | yes      |",
		"| kafka                | sidecar CPU µs/msg, SDK consume ≤ 10         |       12.0 | no       |",
		"| kafka                | added p50 at one connection ≤ 30 µs          |      20 µs | yes      |",
		"| kafka                | sidecar peak RSS, SDK+HTTP phases ≤ 25 MiB   |   32.0 MiB | no       |",
		"| HTTP publish (32 connections)        |               |               |            |            |           700 |           |           |      14.0 |    32.0 |",
		"| kafka: SDK publish                   |        8.0 |       0.20 |       0.50 |       0.25 |",
		"| kafka: SDK consume                   |       12.0 |       0.00 |       0.00 |       0.00 |",
		"| kafka: SDK sync×32                   |       20.0 |       1.00 |       2.00 |       3.00 |",
		"| kafka: HTTP publish                  |       14.0 |       1.50 |       0.00 |       0.00 |",
		"| kafka: direct, publish                       |        6.0 |            |        6.0 |       12.0 |",
		"| kafka: sidecar, publish                      |        6.0 |        8.0 |       10.0 |       24.0 |",
		"| kafka: sidecar, consume                      |        4.0 |       12.0 |        4.0 |       20.0 |",
		"| kafka: total direct / sidecar                |            |            |            | 0.50, 0.40 |",
		"| kafka                |          30.0 |                 11.0 |                 18.0 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
