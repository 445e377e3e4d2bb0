package api

import (
	"errors"
	"fmt"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// Routing rules (docs/routing.md): per app, operators' rules that send
// coloured messages, or a canary share of the others, to the instances
// whose labels match a selector. They travel with the app's config
// (AppConfig.Routing) and every sidecar applies them locally (package
// scheduler).

// Fallbacks of a rule whose targets cannot take a delivery.
const (
	// FallbackAnywhere delivers it as if no rule had matched (the weights
	// decide). The default.
	FallbackAnywhere = "anywhere"
	// FallbackHold hands it back to the broker to be offered again a
	// little later, in case a target is back by then, for at most the
	// rule's HoldFor after the message was stored; then anywhere.
	FallbackHold = "hold"
)

// Bounds of a hold (RoutingRule.HoldFor).
const (
	DefaultHoldFor = 30 * time.Second
	MinHoldFor     = time.Second
	MaxHoldFor     = 10 * time.Minute
)

// Bounds of a routing document.
const (
	MaxRoutingRules = 64
	MaxRuleNameLen  = 63
	MaxGroupLen     = 255
)

// RoutingRule is one rule. A rule with Colour is a colour rule: messages of
// that colour in Group go to the instances matching Selector. A rule with
// Percent (and no Colour) is a canary rule: Percent of every 100 of Group's
// messages that no colour rule took go to the instances matching Selector,
// the rest to the instances that do not match.
type RoutingRule struct {
	// Name identifies the rule in metrics, stats and spans: 1 to 63 bytes
	// of letters, digits, '_', '.' and '-', unique within the app.
	Name string `json:"name"`
	// Group is the consumer group; empty: every group of the app that has
	// no rule of its own for the same colour (or no canary of its own).
	Group string `json:"group,omitempty"`
	// Colour is the message colour (broker.HeaderColour) a colour rule
	// takes.
	Colour string `json:"colour,omitempty"`
	// Percent is a canary rule's share, 0..100.
	Percent *int `json:"percent,omitempty"`
	// Selector is the labels (Instance.Labels) an instance must all have to
	// match; at least one.
	Selector map[string]string `json:"selector"`
	// Fallback is what happens when no matching instance can take a
	// delivery: "anywhere" (the default, also when empty) or "hold".
	Fallback string `json:"fallback,omitempty"`
	// HoldFor bounds a hold, a Go duration from MinHoldFor to MaxHoldFor
	// counted from when the broker stored the message; only with
	// fallback "hold", where empty means DefaultHoldFor.
	HoldFor string `json:"hold_for,omitempty"`
}

// Hold returns the rule's hold bound: 0 unless its fallback is "hold".
// The rule must be valid.
func (rule *RoutingRule) Hold() time.Duration {
	if rule.Fallback != FallbackHold {
		return 0
	}
	d, err := time.ParseDuration(rule.HoldFor)
	if err != nil {
		return DefaultHoldFor
	}
	return d
}

// Routing is the body of GET and PUT /v1/apps/{app}/routing: the app's
// rules, replaced as a whole. Rules are never null in an answer.
type Routing struct {
	Rules []RoutingRule `json:"rules"`
}

// Validate checks a routing document: at most MaxRoutingRules rules, each
// valid, names unique, at most one colour rule per (group, colour) and one
// canary rule per group (a second one could never apply). It fills empty
// fallbacks with FallbackAnywhere. The error is a *ValidationError naming
// the rule ("rules[2].selector").
func (r *Routing) Validate() error {
	if len(r.Rules) > MaxRoutingRules {
		return Invalid("rules", "%d rules; at most %d are allowed", len(r.Rules), MaxRoutingRules)
	}
	names := map[string]int{}
	type key struct{ group, colour string }
	keys := map[key]int{}
	for i := range r.Rules {
		rule := &r.Rules[i]
		field := fmt.Sprintf("rules[%d]", i)
		if err := rule.Validate(field); err != nil {
			return err
		}
		if j, dup := names[rule.Name]; dup {
			return Invalid(field+".name", "%q is already the name of rules[%d]", rule.Name, j)
		}
		names[rule.Name] = i
		k := key{rule.Group, rule.Colour}
		if j, dup := keys[k]; dup {
			what := "a canary rule"
			if rule.Colour != "" {
				what = fmt.Sprintf("a rule for colour %q", rule.Colour)
			}
			where := "every group"
			if rule.Group != "" {
				where = fmt.Sprintf("group %q", rule.Group)
			}
			return Invalid(field, "rules[%d] is already %s of %s; only one applies", j, what, where)
		}
		keys[k] = i
	}
	return nil
}

// Validate checks one rule; field prefixes the field names of its errors.
func (rule *RoutingRule) Validate(field string) error {
	if err := checkRuleName(rule.Name); err != nil {
		return Invalid(field+".name", "%v", err)
	}
	if len(rule.Group) > MaxGroupLen {
		return Invalid(field+".group", "longer than %d bytes", MaxGroupLen)
	}
	for _, c := range rule.Group {
		if c <= ' ' || c == 0x7f {
			return Invalid(field+".group", "%q has a space or control character", rule.Group)
		}
	}
	switch {
	case rule.Colour != "" && rule.Percent != nil:
		return Invalid(field, "a rule has a colour or a percent, not both")
	case rule.Colour == "" && rule.Percent == nil:
		return Invalid(field, "a rule needs a colour (a colour rule) or a percent (a canary rule)")
	case rule.Colour != "":
		if why := broker.CheckColour(rule.Colour); why != "" {
			return Invalid(field+".colour", "%s", why)
		}
	case *rule.Percent < 0 || *rule.Percent > 100:
		return Invalid(field+".percent", "%d is outside 0..100", *rule.Percent)
	}
	if len(rule.Selector) == 0 {
		return Invalid(field+".selector", "empty; name at least one label, e.g. {\"version\":\"v2\"}")
	}
	if err := ValidateLabels(rule.Selector); err != nil {
		reason := err.Error()
		if ve, ok := errors.AsType[*ValidationError](err); ok {
			reason = ve.Reason
		}
		return Invalid(field+".selector", "%s", reason)
	}
	switch rule.Fallback {
	case "":
		rule.Fallback = FallbackAnywhere
	case FallbackAnywhere, FallbackHold:
	default:
		return Invalid(field+".fallback", "%q: the fallback is %q or %q", rule.Fallback, FallbackAnywhere, FallbackHold)
	}
	switch {
	case rule.Fallback != FallbackHold && rule.HoldFor != "":
		return Invalid(field+".hold_for", "only with fallback %q", FallbackHold)
	case rule.Fallback == FallbackHold && rule.HoldFor == "":
		rule.HoldFor = DefaultHoldFor.String()
	case rule.Fallback == FallbackHold:
		d, err := time.ParseDuration(rule.HoldFor)
		if err != nil || d < MinHoldFor || d > MaxHoldFor {
			return Invalid(field+".hold_for", "%q is not a duration in %s..%s", rule.HoldFor, MinHoldFor, MaxHoldFor)
		}
		rule.HoldFor = d.String()
	}
	return nil
}

func checkRuleName(name string) error {
	if name == "" || len(name) > MaxRuleNameLen {
		return fmt.Errorf("a rule name is 1 to %d bytes", MaxRuleNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isAlnum(c) && (i == 0 || c != '_' && c != '.' && c != '-') {
			return fmt.Errorf("%q: only letters, digits, '_', '.' and '-' are allowed, and it must start with a letter or digit", name)
		}
	}
	return nil
}
