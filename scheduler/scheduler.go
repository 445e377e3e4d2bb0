// Package scheduler decides, for each delivery a sidecar receives, whether
// it stays with the local app or is forwarded to a sibling sidecar of the
// same app (docs/design.md flow 7). It is pure logic: no I/O, no goroutines, no
// clock.
//
// The rules, in order:
//
//  1. A delivery that came from a sibling stays local: it is never forwarded
//     again, so forwarding cannot loop.
//  2. If this node's weight is 100 (or this node is not in the table, which
//     counts as 100), the delivery stays local.
//  3. If no online sibling has weight 100, the delivery stays local: there
//     is no one to forward to (this is also what weight 0 falls back to).
//     An offline sibling (its lease at the control plane lapsed) is never
//     forwarded to, whatever its weight; this node's own weight applies
//     whether or not the control plane sees it online.
//  4. Otherwise this node keeps weight% of its deliveries and forwards the
//     rest, spread evenly over the online siblings whose weight is 100.
//     Weight 0 forwards everything (drain).
//
// The split is deterministic, not random. Every broker delivery takes the
// next tick of one counter shared by all callers of the scheduler; tick k is
// local when floor((k+1)·w/100) > floor(k·w/100), which keeps exactly w of
// every 100 consecutive ticks local, evenly spaced (a Bresenham line), and
// the forwarded ticks go to the eligible siblings in turn, in the sorted
// order of their ids. So over any run of N decisions with one table, the
// local share is within one delivery of N·w/100 and each eligible sibling's
// share within one delivery of the others'. A table swap does not reset the
// counter; the bound then holds for each stretch of ticks decided with one
// table.
//
// Routing rules (rules.go, docs/routing.md) come before rules 2 to 4: an
// operator's colour and canary rules choose which instances, by their
// labels, may take a delivery, and the weights split it within those;
// Route applies them, Decide is the weights alone.
//
// Concurrency: Decide, Route and Next are lock-free (two atomic operations and
// arithmetic, no allocation); Update builds a new table and swaps it in
// atomically, so a config push never blocks deliveries and a decision
// always sees one whole table, never a mix of two.
package scheduler

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Instance is one instance of an app as the control plane pushes it.
type Instance struct {
	// ID is the instance's forwarding address (host:port of its sidecar's
	// forwarding listener). A Decision names a sibling by this ID.
	ID string
	// Weight is the share of its own broker deliveries the instance keeps,
	// 0..100. Values outside that range are clamped.
	Weight int
	// Offline: the control plane saw the instance's lease lapse; it is not
	// forwarded to (rule 3). Ignored for this node itself.
	Offline bool
	// Labels are the instance's labels, which routing rules' selectors
	// match (rules.go). The map is not retained.
	Labels map[string]string
}

// Decision says where one delivery goes. Exactly one of Local, Sibling and
// Hold is set (Hold only by a routing rule's FallbackHold).
type Decision struct {
	Local   bool
	Sibling string // the ID of the sibling to forward to
	// Hold: hand the delivery back to the broker to be offered again, as
	// long as it was stored less than Hold ago (rules.go, FallbackHold).
	Hold time.Duration
	// Rule names the routing rule that matched the delivery (Route), ""
	// when none did; Fallback says that rule's targets could not take it
	// and it went as the weights say (its fallback).
	Rule     string
	Fallback bool
	set      uint8 // which of the rule's target sets (rules.go)
}

// String is "local" or "sibling <id>", for logs.
func (d Decision) String() string {
	where := "sibling " + d.Sibling
	switch {
	case d.Local:
		where = "local"
	case d.Hold > 0:
		where = "hold " + d.Hold.String()
	}
	switch {
	case d.Rule != "" && d.Fallback:
		where += " (rule " + d.Rule + " fell back)"
	case d.Rule != "":
		where += " (rule " + d.Rule + ")"
	}
	return where
}

var local = Decision{Local: true}

// Scheduler holds one app's weight table as seen by one instance. It is safe
// for concurrent use. The zero value is not ready; use New.
type Scheduler struct {
	self  string
	table atomic.Pointer[table]
	ticks atomic.Uint64 // one per broker delivery decided by Decide
	retry atomic.Uint64 // rotates retries in Next

	rulesMu  sync.Mutex               // serialises compileRules
	counters map[string]*ruleCounters // by rule name; guarded by rulesMu
}

// table is immutable once published.
type table struct {
	weight   uint64        // this node's weight, 0..100
	siblings []string      // ids of the other instances with weight 100, sorted
	replaced chan struct{} // closed when the next Update replaces this table
	// rules are the routing rules compiled against this table (rules.go);
	// nil without rules. anyTarget: some rule has a sibling among its
	// targets, so broker deliveries may leave even at weight 100.
	rules     map[ruleKey]*compiled
	anyTarget bool
}

// keepAll reports whether every broker delivery stays local (rules 2, 3).
func (t *table) keepAll() bool { return t.weight >= 100 || len(t.siblings) == 0 }

// New returns a scheduler for the instance whose forwarding address is self.
// Until the first Update it keeps everything local.
func New(self string) *Scheduler {
	s := &Scheduler{self: self}
	s.table.Store(&table{weight: 100, replaced: make(chan struct{})})
	return s
}

// Changed returns a channel that is closed by the next Update. A caller
// that gates its broker reads on Forwarding takes it before asking, and
// waits on it too, so that a node whose weight drops (to 0, say) while it
// waits for local room starts reading for its siblings at once.
func (s *Scheduler) Changed() <-chan struct{} { return s.table.Load().replaced }

// Update replaces the table with instances, the full list of the app's
// instances (self may or may not be in it; absent, its weight is 100), and
// no routing rules. Instances with an empty ID are ignored; if an ID
// appears twice, the last entry wins. The slice is not retained.
func (s *Scheduler) Update(instances []Instance) { s.Apply(instances, nil) }

// Apply is Update with routing rules (rules.go): the instances and the
// rules replace the table together, so a decision sees both of one push.
// A rule keeps its canary counter across pushes as long as its name stays.
// Neither slice is retained.
func (s *Scheduler) Apply(instances []Instance, rules []Rule) {
	last := make(map[string]Instance, len(instances))
	for _, in := range instances {
		if in.ID != "" {
			last[in.ID] = in
		}
	}
	t := &table{weight: 100, replaced: make(chan struct{})}
	var selfLabels map[string]string
	for id, in := range last {
		w := min(max(in.Weight, 0), 100)
		switch {
		case id == s.self:
			t.weight = uint64(w)
			selfLabels = in.Labels
		case w == 100 && !in.Offline:
			t.siblings = append(t.siblings, id)
		}
	}
	slices.Sort(t.siblings)
	t.rules = s.compileRules(rules, last, selfLabels, t.weight)
	for _, r := range t.rules {
		if len(r.match.members) > 0 || len(r.rest.members) > 0 {
			t.anyTarget = true
		}
	}
	close(s.table.Swap(t).replaced)
}

// Decide says where the next delivery goes. fromSibling is true when the
// delivery arrived from a sibling's forwarder rather than from the broker.
func (s *Scheduler) Decide(fromSibling bool) Decision {
	if fromSibling {
		return local
	}
	return s.decide(s.table.Load())
}

// decide is the weights' decision (rules 2 to 4) for a broker delivery.
func (s *Scheduler) decide(t *table) Decision {
	if t.keepAll() {
		return local
	}
	k := s.ticks.Add(1) - 1
	before := localsBefore(k, t.weight)
	if localsBefore(k+1, t.weight) > before {
		return local
	}
	fwd := k - before // forwarded ticks before this one
	return Decision{Sibling: t.siblings[fwd%uint64(len(t.siblings))]}
}

// localsBefore is floor(k·w/100), computed without overflowing for any k.
func localsBefore(k, w uint64) uint64 {
	return (k/100)*w + (k%100)*w/100
}

// Forwarding reports whether the current table may forward a broker
// delivery (this node's weight is below 100 and some sibling has weight
// 100, or a routing rule has a sibling among its targets). When it is
// false every decision is Local, so a caller may keep gating its broker
// reads on local room alone; when it is true, some deliveries need room at
// a sibling instead (weight 0: all of them).
func (s *Scheduler) Forwarding() bool {
	t := s.table.Load()
	return !t.keepAll() || t.anyTarget
}

// Weight returns this node's weight in the current table (100 when it is
// not in the table).
func (s *Scheduler) Weight() int { return int(s.table.Load().weight) }

// Next is Decide for a retry. With an empty exclude it is exactly Decide.
// Otherwise the caller is retrying a delivery that an earlier decision sent
// to a sibling that failed before taking it, and exclude holds the siblings
// that failed: Next does not draw a new local-or-forward lot (so a failing
// sibling does not shift traffic onto this node) but picks another eligible
// sibling not in exclude, rotating over them, or Local when none is left
// (or the table now keeps everything local).
func (s *Scheduler) Next(fromSibling bool, exclude map[string]bool) Decision {
	if len(exclude) == 0 {
		return s.Decide(fromSibling)
	}
	if fromSibling {
		return local
	}
	t := s.table.Load()
	if t.keepAll() {
		return local
	}
	var left uint64 // eligible siblings not excluded
	for _, id := range t.siblings {
		if !exclude[id] {
			left++
		}
	}
	if left == 0 {
		return local
	}
	pick := (s.retry.Add(1) - 1) % left
	for _, id := range t.siblings {
		if exclude[id] {
			continue
		}
		if pick == 0 {
			return Decision{Sibling: id}
		}
		pick--
	}
	return local // not reached: t is immutable
}
