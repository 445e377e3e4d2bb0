package ctrlplane_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
)

// TestRoutingValidation: good routing documents are stored as sent (empty
// fallbacks filled in); bad ones are 400 INVALID naming the rule and field,
// and change nothing.
func TestRoutingValidation(t *testing.T) {
	c := startBolt(t)
	op := client(t, c.url, testToken)
	mustCreate(t, op, "orders", "10.0.0.1:7610")
	path := "/v1/apps/orders/routing"
	long := strings.Repeat("r", 64)
	for _, tc := range []struct {
		name, body string
		status     int
		msg        string // in the error message
	}{
		{"colour rule", `{"rules":[{"name":"blue","colour":"blue","selector":{"version":"v2"}}]}`, 200, ""},
		{"canary and colour per group", `{"rules":[{"name":"c1","group":"billing","percent":10,"selector":{"version":"v2"},"fallback":"anywhere"},{"name":"c2","percent":5,"selector":{"version":"v2"}},{"name":"b","group":"billing","colour":"blue","selector":{"version":"v2"}},{"name":"b-all","colour":"blue","selector":{"zone":"a"}}]}`, 200, ""},
		{"canary 0", `{"rules":[{"name":"c","percent":0,"selector":{"version":"v2"}}]}`, 200, ""},
		{"no rules", `{"rules":[]}`, 200, ""},
		{"null rules", `{}`, 200, ""},
		{"neither colour nor percent", `{"rules":[{"name":"x","selector":{"version":"v2"}}]}`, 400, "rules[0]: a rule needs a colour"},
		{"both", `{"rules":[{"name":"x","colour":"blue","percent":3,"selector":{"version":"v2"}}]}`, 400, "not both"},
		{"percent 101", `{"rules":[{"name":"x","percent":101,"selector":{"version":"v2"}}]}`, 400, "rules[0].percent: 101 is outside 0..100"},
		{"percent -1", `{"rules":[{"name":"x","percent":-1,"selector":{"version":"v2"}}]}`, 400, "rules[0].percent"},
		{"percent fraction", `{"rules":[{"name":"x","percent":2.5,"selector":{"version":"v2"}}]}`, 400, "percent"},
		{"bad colour", `{"rules":[{"name":"x","colour":"light blue","selector":{"version":"v2"}}]}`, 400, "rules[0].colour"},
		{"empty selector", `{"rules":[{"name":"x","colour":"blue","selector":{}}]}`, 400, "rules[0].selector: empty"},
		{"bad selector key", `{"rules":[{"name":"x","colour":"blue","selector":{"/v":"2"}}]}`, 400, "rules[0].selector"},
		{"no name", `{"rules":[{"colour":"blue","selector":{"v":"2"}}]}`, 400, "rules[0].name"},
		{"long name", `{"rules":[{"name":"` + long + `","colour":"blue","selector":{"v":"2"}}]}`, 400, "rules[0].name"},
		{"duplicate name", `{"rules":[{"name":"x","colour":"blue","selector":{"v":"2"}},{"name":"x","colour":"red","selector":{"v":"2"}}]}`, 400, "rules[1].name"},
		{"two canaries of a group", `{"rules":[{"name":"a","percent":1,"selector":{"v":"2"}},{"name":"b","percent":2,"selector":{"v":"3"}}]}`, 400, "rules[1]: rules[0] is already a canary rule of every group"},
		{"two rules for one colour", `{"rules":[{"name":"a","group":"g","colour":"blue","selector":{"v":"2"}},{"name":"b","group":"g","colour":"blue","selector":{"v":"3"}}]}`, 400, `already a rule for colour "blue" of group "g"`},
		{"bad fallback", `{"rules":[{"name":"x","colour":"blue","selector":{"v":"2"},"fallback":"drop"}]}`, 400, "rules[0].fallback"},
		{"hold", `{"rules":[{"name":"x","colour":"blue","selector":{"v":"2"},"fallback":"hold","hold_for":"90s"}]}`, 200, ""},
		{"hold, default bound", `{"rules":[{"name":"x","colour":"blue","selector":{"v":"2"},"fallback":"hold"}]}`, 200, ""},
		{"hold_for without hold", `{"rules":[{"name":"x","colour":"blue","selector":{"v":"2"},"hold_for":"5s"}]}`, 400, `rules[0].hold_for: only with fallback "hold"`},
		{"hold_for too short", `{"rules":[{"name":"x","colour":"blue","selector":{"v":"2"},"fallback":"hold","hold_for":"10ms"}]}`, 400, "rules[0].hold_for"},
		{"hold_for too long", `{"rules":[{"name":"x","colour":"blue","selector":{"v":"2"},"fallback":"hold","hold_for":"1h"}]}`, 400, "1s..10m0s"},
		{"hold_for not a duration", `{"rules":[{"name":"x","colour":"blue","selector":{"v":"2"},"fallback":"hold","hold_for":"soon"}]}`, 400, "rules[0].hold_for"},
		{"bad group", `{"rules":[{"name":"x","group":"a b","colour":"blue","selector":{"v":"2"}}]}`, 400, "rules[0].group"},
		{"unknown field", `{"rules":[{"name":"x","color":"blue","selector":{"v":"2"}}]}`, 400, "unknown field"},
		{"unknown app", ``, 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := op.Routing(t.Context(), "orders")
			if err != nil {
				t.Fatal(err)
			}
			p := path
			body := tc.body
			if tc.status == 404 {
				p, body = "/v1/apps/ghost/routing", `{"rules":[]}`
			}
			a := do(t, "PUT", c.url+p, testToken, body)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.status, tc.status, a.body)
			}
			if tc.status == 200 {
				var got api.Routing
				if err := json.Unmarshal(a.body, &got); err != nil || got.Rules == nil {
					t.Fatalf("answer %s (%v)", a.body, err)
				}
				for _, r := range got.Rules {
					switch {
					case r.Fallback == api.FallbackHold && (r.HoldFor == "1m30s" || r.HoldFor == "30s"):
					case r.Fallback != api.FallbackAnywhere || r.HoldFor != "":
						t.Fatalf("rule %s: fallback %q, hold_for %q", r.Name, r.Fallback, r.HoldFor)
					}
				}
				stored, err := op.Routing(t.Context(), "orders")
				if err != nil || len(stored.Rules) != len(got.Rules) {
					t.Fatalf("GET after PUT: %+v, %v; want %d rules", stored, err, len(got.Rules))
				}
				return
			}
			eb := a.errorBody(t)
			wantCode := map[int]string{400: api.CodeInvalid, 404: api.CodeNotFound}[tc.status]
			if eb.Code != wantCode || !strings.Contains(eb.Message, tc.msg) {
				t.Fatalf("error %+v, want code %s and a message with %q", eb, wantCode, tc.msg)
			}
			after, err := op.Routing(t.Context(), "orders")
			if err != nil || len(after.Rules) != len(before.Rules) {
				t.Fatalf("a refused PUT changed the rules: %+v -> %+v", before, after)
			}
		})
	}
	// The client's typed error, and the operator token only.
	if _, err := op.SetRouting(t.Context(), "orders", api.Routing{Rules: []api.RoutingRule{{Name: "x", Colour: "blue"}}}); !errors.Is(err, ctrlclient.ErrInvalid) || !strings.Contains(err.Error(), "selector") {
		t.Fatalf("SetRouting without a selector: %v", err)
	}
	cred, err := op.CreateApp(t.Context(), "billing")
	if err != nil {
		t.Fatal(err)
	}
	if a := do(t, "PUT", c.url+"/v1/apps/billing/routing", cred.Credential, `{"rules":[]}`); a.status != 403 {
		t.Fatalf("an app's credential set routing: %d %s", a.status, a.body)
	}
}

// TestRoutingPush: rules reach watching sidecars with the app's config, as
// weights do, within a second; the operators' views show them.
func TestRoutingPush(t *testing.T) {
	c := startBolt(t)
	op := client(t, c.url, testToken)
	cred := mustCreate(t, op, "orders", "10.0.0.1:7610", "10.0.0.2:7610")
	var recs []*configs
	for range 3 {
		rec := newConfigs()
		watch(t, client(t, c.url, cred), "orders", rec)
		rec.waitFor(t, 5*time.Second, "the first config", func(api.AppConfig) bool { return true })
		recs = append(recs, rec)
	}
	ten := 10
	rules := api.Routing{Rules: []api.RoutingRule{
		{Name: "blue", Colour: "blue", Selector: map[string]string{"version": "v2"}},
		{Name: "canary", Group: "billing", Percent: &ten, Selector: map[string]string{"version": "v2"}},
	}}
	setAt := time.Now()
	if _, err := op.SetRouting(t.Context(), "orders", rules); err != nil {
		t.Fatal(err)
	}
	var worst time.Duration
	var withRules uint64
	for _, rec := range recs {
		got := rec.waitFor(t, 5*time.Second, "the rules", func(cfg api.AppConfig) bool { return len(cfg.Routing) == 2 })
		if r := got.cfg.Routing[1]; r.Name != "canary" || r.Percent == nil || *r.Percent != 10 || r.Group != "billing" || r.Fallback != api.FallbackAnywhere {
			t.Fatalf("pushed rule %+v", r)
		}
		worst = max(worst, got.at.Sub(setAt))
		withRules = got.cfg.Version
	}
	if worst > time.Second {
		t.Errorf("the rules took %s to reach the last watcher, want under 1 s", worst)
	}
	t.Logf("routing rules reached 3 watchers within %s of the PUT", worst.Round(time.Millisecond))
	app, err := op.GetApp(t.Context(), "orders")
	if err != nil || !slices.EqualFunc(app.Routing, rules.Rules, func(a, b api.RoutingRule) bool { return a.Name == b.Name }) {
		t.Fatalf("GET /v1/apps/orders: routing %+v, %v", app.Routing, err)
	}
	// Removing them is a push too.
	if _, err := op.SetRouting(t.Context(), "orders", api.Routing{}); err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		rec.waitFor(t, 5*time.Second, "no rules", func(cfg api.AppConfig) bool {
			return cfg.Routing == nil && cfg.Version > withRules
		})
	}
}

// TestRoutingCountersReported: a sidecar's lease renewal carries its
// routing rules' counters; the traffic endpoint shows the newest per
// instance. Bad ones are refused with the renewal (400).
func TestRoutingCountersReported(t *testing.T) {
	c := startBolt(t)
	op := client(t, c.url, testToken)
	cred := mustCreate(t, op, "orders")
	sc := client(t, c.url, cred)
	report := func(rules map[string]api.RuleCounters) error {
		_, err := sc.RenewLease(t.Context(), "orders", "", api.LeaseRequest{Addr: "10.0.0.1:7610",
			Traffic: &api.TrafficReport{Boot: "b1", Rules: rules}})
		return err
	}
	if err := report(map[string]api.RuleCounters{"blue": {Matched: 10, Applied: 9, FellBack: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := report(map[string]api.RuleCounters{"blue": {Matched: 12, Applied: 11, FellBack: 1}}); err != nil {
		t.Fatal(err)
	}
	tr, err := op.Traffic(t.Context(), "orders")
	if err != nil || len(tr.Instances) != 1 {
		t.Fatalf("traffic: %+v, %v", tr, err)
	}
	if got := tr.Instances[0].Rules["blue"]; got != (api.RuleCounters{Matched: 12, Applied: 11, FellBack: 1}) {
		t.Fatalf("reported rule counters %+v, want the newest report's", got)
	}
	many := map[string]api.RuleCounters{}
	for i := range api.MaxReportRules + 1 {
		many[fmt.Sprintf("r%d", i)] = api.RuleCounters{}
	}
	for name, bad := range map[string]map[string]api.RuleCounters{
		"too many":   many,
		"bad name":   {"a b": {}},
		"empty name": {"": {}},
	} {
		if err := report(bad); !errors.Is(err, ctrlclient.ErrInvalid) || !strings.Contains(err.Error(), "traffic.rules") {
			t.Errorf("%s: %v, want INVALID naming traffic.rules", name, err)
		}
	}
}
