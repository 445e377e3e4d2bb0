package kafkabroker

import (
	"testing"
	"time"
)

func TestPartitionTracker(t *testing.T) {
	type step struct {
		op     string // "out", "ack"
		offset int64
		ok     bool // for "out": recorded
	}
	tests := []struct {
		name   string
		steps  []step
		target int64 // after all steps
		commit bool  // toCommit reports something new
	}{
		{"nothing", nil, 0, false},
		{"handed out, not acked", []step{{"out", 5, true}, {"out", 6, true}}, 5, false},
		{"contiguous acks", []step{{"out", 5, true}, {"out", 6, true}, {"ack", 5, false}}, 6, true},
		{"all acked", []step{{"out", 5, true}, {"out", 6, true}, {"ack", 6, false}, {"ack", 5, false}}, 7, true},
		{"hole holds back", []step{{"out", 0, true}, {"out", 1, true}, {"out", 2, true}, {"out", 3, true},
			{"ack", 0, false}, {"ack", 1, false}, {"ack", 3, false}}, 2, true},
		{"gap in offsets", []step{{"out", 3, true}, {"out", 7, true}, {"ack", 3, false}}, 7, true},
		{"re-read skipped", []step{{"out", 0, true}, {"out", 1, true}, {"out", 0, false}, {"out", 1, false}, {"out", 2, true}}, 0, false},
		{"unknown ack ignored", []step{{"out", 4, true}, {"ack", 9, false}, {"ack", 3, false}}, 4, false},
		{"double ack ignored", []step{{"out", 4, true}, {"out", 5, true}, {"ack", 4, false}, {"ack", 4, false}}, 5, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p partitionTracker
			for _, s := range tc.steps {
				switch s.op {
				case "out":
					if got := p.handOut(s.offset); got != s.ok {
						t.Fatalf("handOut(%d) = %v, want %v", s.offset, got, s.ok)
					}
				case "ack":
					p.ack(s.offset)
				}
			}
			if got := p.target(); got != tc.target {
				t.Fatalf("target %d, want %d", got, tc.target)
			}
			got, ok := p.toCommit()
			if ok != tc.commit || (ok && got != tc.target) {
				t.Fatalf("toCommit = %d, %v; want %d, %v", got, ok, tc.target, tc.commit)
			}
			if ok {
				p.committedTo(got)
				if _, again := p.toCommit(); again {
					t.Fatal("toCommit reports the same target again after committedTo")
				}
			}
		})
	}
}

// TestPartitionTrackerCompacts: the tracker's memory follows the unacked
// messages, not the number handed out.
func TestPartitionTrackerCompacts(t *testing.T) {
	var p partitionTracker
	p.handOut(0) // held: never acked
	for off := int64(1); off <= 100000; off++ {
		p.handOut(off)
		p.ack(off)
	}
	if p.target() != 0 {
		t.Fatalf("target %d, want 0 (offset 0 unacked)", p.target())
	}
	if n := p.pending(); n != 1 {
		t.Fatalf("pending %d, want 1", n)
	}
	p.ack(0)
	if p.target() != 100001 || len(p.handed) != 0 {
		t.Fatalf("after the last ack: target %d, %d entries", p.target(), len(p.handed))
	}
	// Steady state: acks in order keep the slice short.
	for off := int64(100001); off <= 200000; off++ {
		p.handOut(off)
		if off%2 == 0 {
			p.ack(off - 1)
			p.ack(off)
		}
	}
	if len(p.handed) > 64 {
		t.Fatalf("%d entries kept with nothing unacked", len(p.handed))
	}
}

func TestRetryQueue(t *testing.T) {
	var q retryQueue
	now := time.Now()
	ds := make([]*delivery, 4)
	for i := range ds {
		ds[i] = &delivery{offset: int64(i)}
	}
	q.push(retryItem{due: now.Add(time.Second), seq: 1, d: ds[0]})
	q.push(retryItem{due: now, seq: 2, d: ds[1]})
	q.push(retryItem{due: now, seq: 3, d: ds[2]})
	q.push(retryItem{due: now.Add(-time.Second), seq: 4, d: ds[3]})
	if due, ok := q.nextDue(); !ok || !due.Equal(now.Add(-time.Second)) {
		t.Fatalf("nextDue %v %v", due, ok)
	}
	var got []int64
	for {
		d, ok := q.popDue(now)
		if !ok {
			break
		}
		got = append(got, d.offset)
	}
	if len(got) != 3 || got[0] != 3 || got[1] != 1 || got[2] != 2 {
		t.Fatalf("due order %v, want [3 1 2]", got)
	}
	if _, ok := q.popDue(now); ok || q.Len() != 1 {
		t.Fatal("the future item came out early")
	}
}
