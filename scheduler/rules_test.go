package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"
)

// three is the app of the routing tests: a and b at version v1, c at v2,
// all at weight 100 unless a test changes them.
func three(mod ...func(map[string]*Instance)) []Instance {
	m := map[string]*Instance{
		"a": {ID: "a", Weight: 100, Labels: map[string]string{"version": "v1"}},
		"b": {ID: "b", Weight: 100, Labels: map[string]string{"version": "v1"}},
		"c": {ID: "c", Weight: 100, Labels: map[string]string{"version": "v2", "zone": "x"}},
	}
	for _, f := range mod {
		f(m)
	}
	var out []Instance
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, *m[k])
	}
	return out
}

func v2(percent int) Rule {
	return Rule{Name: "canary", Percent: percent, Selector: map[string]string{"version": "v2"}}
}

var blue = Rule{Name: "blue", Colour: "blue", Selector: map[string]string{"version": "v2"}}

// TestRoute: the decision function, table-driven. Each case routes 200
// deliveries of msg at node self and tallies "local", a sibling id,
// with "!" appended when the rule fell back.
func TestRoute(t *testing.T) {
	offline := func(id string) func(map[string]*Instance) {
		return func(m map[string]*Instance) { m[id].Offline = true }
	}
	weight := func(id string, w int) func(map[string]*Instance) {
		return func(m map[string]*Instance) { m[id].Weight = w }
	}
	for _, tc := range []struct {
		name      string
		self      string
		instances []Instance
		rules     []Rule
		msg       Msg
		want      map[string]int // of 200
		rule      string         // the Decision.Rule every decision has
	}{
		{"no rules: weights (a at 100 keeps all)", "a", three(), nil, Msg{Colour: "blue"}, map[string]int{"local": 200}, ""},
		{"blue at a goes to c", "a", three(), []Rule{blue}, Msg{Group: "g", Colour: "blue"}, map[string]int{"c": 200}, "blue"},
		{"blue at c stays", "c", three(), []Rule{blue}, Msg{Colour: "blue"}, map[string]int{"local": 200}, "blue"},
		{"red is not blue: weights", "a", three(), []Rule{blue}, Msg{Colour: "red"}, map[string]int{"local": 200}, ""},
		{"blue rule of another group", "a", three(), []Rule{{Name: "b2", Group: "other", Colour: "blue", Selector: map[string]string{"version": "v2"}}}, Msg{Group: "g", Colour: "blue"}, map[string]int{"local": 200}, ""},
		{"group rule wins over app-wide", "a", three(), []Rule{blue, {Name: "g-blue", Group: "g", Colour: "blue", Selector: map[string]string{"version": "v1"}}}, Msg{Group: "g", Colour: "blue"}, map[string]int{"local": 200}, "g-blue"},
		{"blue, c offline: falls back to weights", "a", three(offline("c")), []Rule{blue}, Msg{Colour: "blue"}, map[string]int{"local!": 200}, "blue"},
		{"blue, c drained: falls back", "b", three(weight("c", 0)), []Rule{blue}, Msg{Colour: "blue"}, map[string]int{"local!": 200}, "blue"},
		{"blue, c offline, a at weight 0: fallback follows the weights", "a", three(offline("c"), weight("a", 0)), []Rule{blue}, Msg{Colour: "blue"}, map[string]int{"b!": 200}, "blue"},
		{"selector on two labels", "a", three(), []Rule{{Name: "cx", Colour: "blue", Selector: map[string]string{"version": "v2", "zone": "x"}}}, Msg{Colour: "blue"}, map[string]int{"c": 200}, "cx"},
		{"selector nobody matches: falls back", "a", three(), []Rule{{Name: "v3", Colour: "blue", Selector: map[string]string{"version": "v3"}}}, Msg{Colour: "blue"}, map[string]int{"local!": 200}, "v3"},
		{"v1 rule at c spreads over a and b", "c", three(), []Rule{{Name: "v1", Colour: "blue", Selector: map[string]string{"version": "v1"}}}, Msg{Colour: "blue"}, map[string]int{"a": 100, "b": 100}, "v1"},
		{"v1 rule at a, a at weight 50: split within the targets", "a", three(weight("a", 50)), []Rule{{Name: "v1", Colour: "blue", Selector: map[string]string{"version": "v1"}}}, Msg{Colour: "blue"}, map[string]int{"local": 100, "b": 100}, "v1"},
		{"canary 10% at a", "a", three(), []Rule{v2(10)}, Msg{}, map[string]int{"c": 20, "local": 180}, "canary"},
		{"canary 10% at c: the rest to a and b", "c", three(), []Rule{v2(10)}, Msg{}, map[string]int{"local": 20, "a": 90, "b": 90}, "canary"},
		{"canary applies to a colour no rule names", "a", three(), []Rule{v2(50), blue}, Msg{Colour: "red"}, map[string]int{"c": 100, "local": 100}, "canary"},
		{"colour rule before canary", "a", three(), []Rule{v2(0), blue}, Msg{Colour: "blue"}, map[string]int{"c": 200}, "blue"},
		{"canary 0%", "a", three(), []Rule{v2(0)}, Msg{}, map[string]int{"local": 200}, "canary"},
		{"canary 100%", "a", three(), []Rule{v2(100)}, Msg{}, map[string]int{"c": 200}, "canary"},
		{"canary, c offline: its share falls back", "a", three(offline("c")), []Rule{v2(10)}, Msg{}, map[string]int{"local!": 20, "local": 180}, "canary"},
		{"blue, c offline, fallback hold", "a", three(offline("c")), []Rule{{Name: "h", Colour: "blue", Selector: map[string]string{"version": "v2"}, Fallback: FallbackHold, HoldFor: time.Second}}, Msg{Colour: "blue"}, map[string]int{"hold!": 200}, "h"},
		{"hold without a bound is anywhere", "a", three(offline("c")), []Rule{{Name: "h", Colour: "blue", Selector: map[string]string{"version": "v2"}, Fallback: FallbackHold}}, Msg{Colour: "blue"}, map[string]int{"local!": 200}, "h"},
		{"canary share held while c is offline", "a", three(offline("c")), []Rule{{Name: "h", Percent: 10, Selector: map[string]string{"version": "v2"}, Fallback: FallbackHold, HoldFor: time.Second}}, Msg{}, map[string]int{"hold!": 20, "local": 180}, "h"},
		{"canary of the group only", "a", three(), []Rule{{Name: "gc", Group: "g", Percent: 100, Selector: map[string]string{"version": "v2"}}}, Msg{Group: "h"}, map[string]int{"local": 200}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(tc.self)
			s.Apply(tc.instances, tc.rules)
			got := map[string]int{}
			for range 200 {
				d := s.Route(false, tc.msg)
				if n := btoi(d.Local) + btoi(d.Sibling != "") + btoi(d.Hold > 0); n != 1 {
					t.Fatalf("decision %+v: want exactly one of Local, Sibling and Hold", d)
				}
				if d.Rule != tc.rule {
					t.Fatalf("decision %v: rule %q, want %q", d, d.Rule, tc.rule)
				}
				k := d.Sibling
				switch {
				case d.Local:
					k = "local"
				case d.Hold > 0:
					k = "hold"
				}
				if d.Fallback {
					k += "!"
				}
				got[k]++
			}
			if !maps.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if d := s.Route(true, tc.msg); d != local {
				t.Fatalf("a delivery from a sibling: %v, want local and no rule", d)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestCanaryExactPer100: for every share, every run of 100 consecutive
// canary decisions at one node sends exactly that many to the canary.
func TestCanaryExactPer100(t *testing.T) {
	for p := 0; p <= 100; p++ {
		s := New("a")
		s.Apply(three(), []Rule{v2(p)})
		for run := range 3 {
			n := 0
			for range 100 {
				if s.Route(false, Msg{}).Sibling == "c" {
					n++
				}
			}
			if n != p {
				t.Fatalf("%d%%: run %d sent %d of 100 to the canary", p, run, n)
			}
		}
	}
	// A push that keeps the rule keeps its counter: still exact per 100
	// counted from the first decision.
	s := New("a")
	s.Apply(three(), []Rule{v2(7)})
	n := 0
	for i := range 1000 {
		if i == 450 {
			s.Apply(three(func(m map[string]*Instance) { m["b"].Weight = 100 }), []Rule{v2(7)})
		}
		if s.Route(false, Msg{}).Sibling == "c" {
			n++
		}
	}
	if n != 70 {
		t.Fatalf("7%% over 1000 decisions across a push: %d", n)
	}
}

// TestRetry: a forward a rule chose that fails goes to another target, or
// falls back when none is left; one no rule chose is retried as Next.
func TestRetry(t *testing.T) {
	s := New("c")
	s.Apply(three(), []Rule{{Name: "v1", Colour: "blue", Selector: map[string]string{"version": "v1"}}})
	d := s.Route(false, Msg{Colour: "blue"})
	if d.Sibling != "a" || d.Rule != "v1" {
		t.Fatalf("first decision %v, want a by rule v1", d)
	}
	d2 := s.Retry(d, map[string]bool{"a": true})
	if d2.Sibling != "b" || d2.Rule != "v1" || d2.Fallback {
		t.Fatalf("retry %v, want b by rule v1", d2)
	}
	d3 := s.Retry(d2, map[string]bool{"a": true, "b": true})
	if !d3.Local || d3.Rule != "v1" || !d3.Fallback {
		t.Fatalf("retry with every target failed: %v, want local, fell back", d3)
	}
	// A node that is itself a target keeps a delivery whose forward failed.
	s = New("a")
	s.Apply(three(func(m map[string]*Instance) { m["a"].Weight = 0 }), []Rule{{Name: "v1", Colour: "blue", Selector: map[string]string{"version": "v1"}}})
	d = s.Route(false, Msg{Colour: "blue"})
	if d.Sibling != "b" {
		t.Fatalf("a at weight 0 routes blue to %v, want b", d)
	}
	if d2 := s.Retry(d, map[string]bool{"b": true}); !d2.Local || !d2.Fallback {
		t.Fatalf("retry: %v, want local, fell back", d2)
	}
	// Every target failed and the rule holds: a hold; once the caller
	// cannot hold any more, Anywhere is the weights' decision.
	s = New("c")
	s.Apply(three(), []Rule{{Name: "v1h", Colour: "blue", Selector: map[string]string{"version": "v1"}, Fallback: FallbackHold, HoldFor: 5 * time.Second}})
	d = s.Route(false, Msg{Colour: "blue"})
	if d2 := s.Retry(d, map[string]bool{"a": true, "b": true}); d2.Hold != 5*time.Second || !d2.Fallback || d2.Rule != "v1h" {
		t.Fatalf("retry with every target failed, fallback hold: %v", d2)
	} else if d3 := s.Anywhere(d2); !d3.Local || !d3.Fallback || d3.Rule != "v1h" {
		t.Fatalf("anywhere after a hold: %v, want local (c at weight 100), fell back", d3)
	}
	// No rule: Next's behaviour.
	s = New("a")
	s.Apply(three(func(m map[string]*Instance) { m["a"].Weight = 0 }), nil)
	d = s.Route(false, Msg{})
	if d.Sibling == "" || d.Rule != "" {
		t.Fatalf("weights only: %v", d)
	}
	if d2 := s.Retry(d, map[string]bool{"b": true, "c": true}); !d2.Local || d2.Rule != "" {
		t.Fatalf("weights retry with every sibling failed: %v", d2)
	}
	if !s.Forwarding() {
		t.Fatal("Forwarding false at weight 0")
	}
	s.Apply(three(), nil)
	if s.Forwarding() {
		t.Fatal("Forwarding true at weight 100 without rules")
	}
	s.Apply(three(), []Rule{blue})
	if !s.Forwarding() {
		t.Fatal("Forwarding false with a rule whose target is a sibling")
	}
	if got := fmt.Sprint(s.Rules()); got != "[blue]" {
		t.Fatalf("Rules = %s", got)
	}
}

func BenchmarkRoute(b *testing.B) {
	s := New("a")
	s.Apply(three(), []Rule{v2(10), blue})
	b.ReportAllocs()
	for b.Loop() {
		s.Route(false, Msg{Group: "g", Colour: "blue"})
		s.Route(false, Msg{Group: "g"})
	}
}
