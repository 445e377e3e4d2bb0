package scheduler

import (
	"maps"
	"slices"
	"sync/atomic"
	"time"
)

// Routing rules (docs/routing.md) choose which instances may take a broker
// delivery before the weights split it. They are evaluated in this order,
// after rule 1 of the package doc (a delivery from a sibling stays local):
//
//  1. A colour rule: the delivery has a colour, and a rule names that
//     colour for its consumer group (a rule for the group wins over a rule
//     for every group). Its targets are the instances whose labels match
//     the rule's selector.
//  2. Otherwise a canary rule for its group (again the group's own before
//     one for every group): of the deliveries it sees, exactly Percent of
//     every 100 (a Bresenham line, as the weights) target the instances
//     matching the selector, the rest the instances that do not match.
//  3. Otherwise, or when a rule's targets are empty (none online and
//     undrained: the fallback), the weights alone decide (package doc,
//     rules 2 to 4).
//
// Within a rule's targets the weights still apply: a target is an online
// instance whose weight is above 0 (weight 0 drains an instance from rules
// too). If this node is a target it keeps its weight's share and forwards
// the rest, evenly, to the targets of weight 100 (all of it stays local
// when there are none, or at weight 100); if it is not, the delivery goes
// to the targets in turn, sorted by id.

// Fallback says what happens to a delivery a rule matched when none of the
// rule's targets can take it (none online, or every forward failed).
type Fallback int

const (
	// FallbackAnywhere delivers it as if no rule had matched: the weights
	// decide, and a failed forward delivers locally.
	FallbackAnywhere Fallback = iota
	// FallbackHold asks the caller to hold the delivery (Decision.Hold):
	// hand it back to the broker to be offered again later, while the
	// rule's HoldFor allows (the caller has the clock); past that, the
	// caller asks Decide, as for FallbackAnywhere.
	FallbackHold
)

// Rule is one routing rule as the control plane pushes it (api.RoutingRule,
// checked there). Exactly one of Colour and Canary applies: a rule with a
// Colour is a colour rule, else a canary rule of Percent.
type Rule struct {
	// Name identifies the rule in decisions, counters and spans; unique
	// within the app.
	Name string
	// Group is the consumer group the rule applies to; "" applies it to
	// every group of the app that has no rule of its own.
	Group string
	// Colour: the rule takes deliveries of this colour.
	Colour string
	// Percent is a canary rule's share, 0..100 (clamped), of the
	// deliveries no colour rule took that go to the instances matching
	// Selector.
	Percent int
	// Selector is the labels an instance must all have, with these values,
	// to match; an empty selector matches every instance.
	Selector map[string]string
	Fallback Fallback
	// HoldFor is the bound of FallbackHold (passed on in Decision.Hold).
	HoldFor time.Duration
}

// Msg is what the scheduler reads of a delivery to route it.
type Msg struct {
	Group  string
	Colour string // "" uncoloured
}

// Target sets of a rule's decision (Decision.set).
const (
	setNone  uint8 = iota
	setMatch       // the instances matching the selector
	setRest        // a canary's others
)

// targets is one set of instances a rule may send a delivery to, as seen
// by this node. Immutable once published.
type targets struct {
	self    bool     // this node is in the set, with a weight above 0
	members []string // the other online instances in the set with weight > 0, sorted
	full    []string // of those, the ones with weight 100
}

// compiled is a Rule against one instance table. Immutable once published.
type compiled struct {
	Rule
	match, rest targets
	c           *ruleCounters
}

// ruleCounters are a rule's decision counters. They survive table swaps
// (keyed by rule name), so a rule's canary split stays exact across a push
// that does not change it.
type ruleCounters struct {
	ticks  atomic.Uint64 // canary lots drawn
	split  atomic.Uint64 // weight splits within the targets
	spread atomic.Uint64 // forwards to targets, in turn
}

// ruleKey finds a rule: a colour rule by (group, colour), a canary rule by
// (group, "").
type ruleKey struct{ group, colour string }

// compileRules builds the rule lookup for one table. instances are the
// last entries by id; weight is this node's weight.
func (s *Scheduler) compileRules(rules []Rule, instances map[string]Instance, selfLabels map[string]string, weight uint64) map[ruleKey]*compiled {
	if len(rules) == 0 {
		return nil
	}
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	counters := make(map[string]*ruleCounters, len(rules))
	out := make(map[ruleKey]*compiled, len(rules))
	for _, r := range rules {
		c := s.counters[r.Name]
		if c == nil {
			c = &ruleCounters{}
		}
		counters[r.Name] = c
		r.Selector = maps.Clone(r.Selector)
		r.Percent = min(max(r.Percent, 0), 100)
		cr := &compiled{Rule: r, c: c}
		cr.match.self = weight > 0 && matches(r.Selector, selfLabels)
		cr.rest.self = weight > 0 && !matches(r.Selector, selfLabels)
		for id, in := range instances {
			w := min(max(in.Weight, 0), 100)
			if id == s.self || in.Offline || w == 0 {
				continue
			}
			set := &cr.rest
			if matches(r.Selector, in.Labels) {
				set = &cr.match
			}
			set.members = append(set.members, id)
			if w == 100 {
				set.full = append(set.full, id)
			}
		}
		for _, set := range []*targets{&cr.match, &cr.rest} {
			slices.Sort(set.members)
			slices.Sort(set.full)
		}
		k := ruleKey{group: r.Group, colour: r.Colour}
		if _, dup := out[k]; !dup { // the control plane refuses duplicates; first wins
			out[k] = cr
		}
	}
	s.counters = counters
	return out
}

// matches reports whether labels has every key of sel with its value.
func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// rule returns the rule that applies to m, or nil (evaluation order above).
func (t *table) rule(m Msg) *compiled {
	if len(t.rules) == 0 {
		return nil
	}
	if m.Colour != "" {
		if r := t.rules[ruleKey{m.Group, m.Colour}]; r != nil {
			return r
		}
		if r := t.rules[ruleKey{"", m.Colour}]; r != nil {
			return r
		}
	}
	if r := t.rules[ruleKey{m.Group, ""}]; r != nil {
		return r
	}
	return t.rules[ruleKey{"", ""}]
}

// Route says where the next delivery of m goes, by the rules and the
// weights (the evaluation order above). A Decision whose Rule is set was
// matched by that rule; Fallback says the rule's targets were empty and the
// weights decided instead. With no rules it is exactly Decide.
func (s *Scheduler) Route(fromSibling bool, m Msg) Decision {
	if fromSibling {
		return local
	}
	t := s.table.Load()
	r := t.rule(m)
	if r == nil {
		return s.decide(t)
	}
	set, which := &r.match, setMatch
	if r.Colour == "" {
		k := r.c.ticks.Add(1) - 1
		if localsBefore(k+1, uint64(r.Percent)) == localsBefore(k, uint64(r.Percent)) {
			set, which = &r.rest, setRest
		}
	}
	if d, ok := s.pick(t, r, set); ok {
		d.Rule, d.set = r.Name, which
		return d
	}
	return s.fallback(t, r)
}

// fallback is the decision of rule r when none of its targets can take a
// delivery.
func (s *Scheduler) fallback(t *table, r *compiled) Decision {
	if r.Fallback == FallbackHold && r.HoldFor > 0 {
		return Decision{Hold: r.HoldFor, Rule: r.Name, Fallback: true}
	}
	d := s.decide(t)
	d.Rule, d.Fallback = r.Name, true
	return d
}

// Anywhere is the decision for a delivery prev held (Decision.Hold) that
// the caller cannot or may no longer hold: the weights decide, as for
// FallbackAnywhere.
func (s *Scheduler) Anywhere(prev Decision) Decision {
	d := s.decide(s.table.Load())
	d.Rule, d.Fallback = prev.Rule, true
	return d
}

// pick chooses within a rule's targets; false when there are none.
func (s *Scheduler) pick(t *table, r *compiled, set *targets) (Decision, bool) {
	switch {
	case set.self:
		if t.weight >= 100 || len(set.full) == 0 {
			return local, true
		}
		k := r.c.split.Add(1) - 1
		before := localsBefore(k, t.weight)
		if localsBefore(k+1, t.weight) > before {
			return local, true
		}
		return Decision{Sibling: set.full[(k-before)%uint64(len(set.full))]}, true
	case len(set.members) > 0:
		k := r.c.spread.Add(1) - 1
		return Decision{Sibling: set.members[k%uint64(len(set.members))]}, true
	}
	return Decision{}, false
}

// Retry is Next for a delivery routed by Route: prev is the decision whose
// forward failed (its sibling is in exclude, with every other sibling that
// failed). A delivery a rule sent to its targets goes to another target not
// in exclude, in turn, or stays local when this node is a target; when
// none is left the rule's fallback applies (Fallback set: anywhere, so
// local; or a hold). A delivery no rule moved is retried as Next does.
func (s *Scheduler) Retry(prev Decision, exclude map[string]bool) Decision {
	t := s.table.Load()
	var r *compiled
	if prev.Rule != "" && !prev.Fallback && prev.set != setNone {
		for _, x := range t.rules {
			if x.Name == prev.Rule {
				r = x
				break
			}
		}
	}
	if r == nil {
		d := s.Next(false, exclude)
		d.Rule, d.Fallback = prev.Rule, prev.Fallback
		return d
	}
	set := &r.match
	if prev.set == setRest {
		set = &r.rest
	}
	if set.self {
		return Decision{Local: true, Rule: r.Name, set: prev.set}
	}
	var left []string
	for _, id := range set.members {
		if !exclude[id] {
			left = append(left, id)
		}
	}
	if len(left) == 0 {
		if r.Fallback == FallbackHold && r.HoldFor > 0 {
			return Decision{Hold: r.HoldFor, Rule: r.Name, Fallback: true}
		}
		return Decision{Local: true, Rule: r.Name, Fallback: true}
	}
	k := s.retry.Add(1) - 1
	return Decision{Sibling: left[k%uint64(len(left))], Rule: r.Name, set: prev.set}
}

// Rules returns the names of the rules in the current table, sorted.
func (s *Scheduler) Rules() []string {
	t := s.table.Load()
	names := make([]string, 0, len(t.rules))
	for _, r := range t.rules {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	return names
}
