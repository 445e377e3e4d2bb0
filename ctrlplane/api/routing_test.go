package api

import (
	"errors"
	"testing"
)

// TestRoutingValidate: every refusal is a *ValidationError (wrapping
// ErrInvalid) naming the rule's field; good documents get their defaults.
func TestRoutingValidate(t *testing.T) {
	pct := func(p int) *int { return &p }
	sel := map[string]string{"version": "v2"}
	for _, tc := range []struct {
		name  string
		rules []RoutingRule
		field string // "" when valid
	}{
		{"colour", []RoutingRule{{Name: "b", Colour: "blue", Selector: sel}}, ""},
		{"canary", []RoutingRule{{Name: "c", Percent: pct(10), Selector: sel, Group: "g"}}, ""},
		{"hold", []RoutingRule{{Name: "h", Colour: "qa", Selector: sel, Fallback: FallbackHold, HoldFor: "2m"}}, ""},
		{"same colour, other groups", []RoutingRule{{Name: "a", Colour: "blue", Selector: sel}, {Name: "b", Group: "g", Colour: "blue", Selector: sel}}, ""},
		{"no kind", []RoutingRule{{Name: "x", Selector: sel}}, "rules[0]"},
		{"both kinds", []RoutingRule{{Name: "x", Colour: "blue", Percent: pct(1), Selector: sel}}, "rules[0]"},
		{"percent", []RoutingRule{{Name: "x", Percent: pct(-1), Selector: sel}}, "rules[0].percent"},
		{"colour", []RoutingRule{{Name: "x", Colour: "a/b", Selector: sel}}, "rules[0].colour"},
		{"selector", []RoutingRule{{Name: "x", Colour: "blue"}}, "rules[0].selector"},
		{"selector value", []RoutingRule{{Name: "x", Colour: "blue", Selector: map[string]string{"k": "a\nb"}}}, "rules[0].selector"},
		{"name", []RoutingRule{{Name: "-x", Colour: "blue", Selector: sel}}, "rules[0].name"},
		{"duplicate name", []RoutingRule{{Name: "x", Colour: "blue", Selector: sel}, {Name: "x", Colour: "red", Selector: sel}}, "rules[1].name"},
		{"two canaries", []RoutingRule{{Name: "a", Percent: pct(1), Selector: sel}, {Name: "b", Percent: pct(2), Selector: sel}}, "rules[1]"},
		{"fallback", []RoutingRule{{Name: "x", Colour: "blue", Selector: sel, Fallback: "later"}}, "rules[0].fallback"},
		{"hold_for alone", []RoutingRule{{Name: "x", Colour: "blue", Selector: sel, HoldFor: "1m"}}, "rules[0].hold_for"},
		{"hold_for range", []RoutingRule{{Name: "x", Colour: "blue", Selector: sel, Fallback: FallbackHold, HoldFor: "11m"}}, "rules[0].hold_for"},
		{"group", []RoutingRule{{Name: "x", Group: "a\tb", Colour: "blue", Selector: sel}}, "rules[0].group"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Routing{Rules: tc.rules}
			err := r.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				for _, rule := range r.Rules {
					if rule.Fallback == "" || (rule.Fallback == FallbackHold) != (rule.Hold() > 0) {
						t.Fatalf("rule %s after Validate: fallback %q, hold %s", rule.Name, rule.Fallback, rule.Hold())
					}
				}
				return
			}
			ve, ok := errors.AsType[*ValidationError](err)
			if !ok || !errors.Is(err, ErrInvalid) || ve.Field != tc.field {
				t.Fatalf("error %v (%T), want a *ValidationError of field %q", err, err, tc.field)
			}
		})
	}
	many := Routing{Rules: make([]RoutingRule, MaxRoutingRules+1)}
	if err := many.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("%d rules: %v", len(many.Rules), err)
	}
	r := Routing{Rules: []RoutingRule{{Name: "h", Colour: "qa", Selector: sel, Fallback: FallbackHold}}}
	if err := r.Validate(); err != nil || r.Rules[0].HoldFor != "30s" || r.Rules[0].Hold() != DefaultHoldFor {
		t.Fatalf("a hold without hold_for: %v, %+v", err, r.Rules[0])
	}
}
