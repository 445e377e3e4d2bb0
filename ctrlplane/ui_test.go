package ctrlplane_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/internal/browsertest"
)

// TestWebPage drives the web page in a real headless Chromium: it enters
// the operator token, sees the app's instances and their state (static,
// online, and offline once a lease lapses), sets a weight, and the change
// reaches a sidecar's watcher. A bad weight shows the server's error.
func TestWebPage(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	c := startBolt(t, leaseOpts(clk))
	op := client(t, c.url, testToken)
	cred := mustCreate(t, op, "orders", "10.0.0.1:7610", "10.0.0.2:7610")
	if _, _, err := op.PutInstance(t.Context(), "orders", api.InstanceSpec{Addr: "10.0.0.2:7610", Labels: map[string]string{"version": "v2"}}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, op, "billing")
	ten := 10
	if _, err := op.SetRouting(t.Context(), "orders", api.Routing{Rules: []api.RoutingRule{
		{Name: "blue-to-v2", Colour: "blue", Selector: map[string]string{"version": "v2"}, Fallback: api.FallbackHold, HoldFor: "45s"},
		{Name: "canary-v2", Group: "billing-events", Percent: &ten, Selector: map[string]string{"version": "v2"}},
	}}); err != nil {
		t.Fatal(err)
	}
	// A sidecar registered 10.0.0.3:7610 itself.
	if _, err := client(t, c.url, cred).RenewLease(t.Context(), "orders", "", api.LeaseRequest{Addr: "10.0.0.3:7610", SidecarVersion: "v9.9.9",
		Traffic: &api.TrafficReport{Boot: "b1", Rules: map[string]api.RuleCounters{"blue-to-v2": {Matched: 9, Applied: 6, FellBack: 1, Held: 2}}}}); err != nil {
		t.Fatal(err)
	}
	rec := newConfigs()
	watch(t, client(t, c.url, cred), "orders", rec)
	rec.waitFor(t, 10*time.Second, "the first config", weightIs("10.0.0.1:7610", 100))

	bctx := browsertest.Start(t)
	if err := chromedp.Do(bctx, chromedp.Navigate(c.url+"/ui/")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
	t.Cleanup(cancel)

	weightInput := chromedp.CSS(`input.weight[data-app="orders"][data-id="10.0.0.1:7610"]`)
	setButton := chromedp.CSS(`button.set-weight[data-app="orders"][data-id="10.0.0.1:7610"]`)
	// waitStatus waits until the status line holds text, with the class.
	waitStatus := func(text, class string) {
		t.Helper()
		pred := fmt.Sprintf(`(() => { const s = document.getElementById("status"); return s.className === %q && s.textContent.includes(%q) ? s.textContent : null; })()`, class, text)
		got, err := chromedp.Run(ctx, chromedp.Poll[string](pred, chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(10*time.Second)))
		if err != nil {
			cur, _ := chromedp.Run(ctx, chromedp.Text(chromedp.ID("status")))
			t.Fatalf("waiting for the status %q (%s): %v; it is %q", text, class, err, cur)
		}
		t.Logf("status: %s", got)
	}
	err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), testToken),
		chromedp.Click(chromedp.ID("save-token")),
		chromedp.WaitVisible(weightInput),
	)
	if err != nil {
		t.Fatalf("entering the token: %v", err)
	}
	page, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("apps")))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"orders", "billing", "10.0.0.1:7610", "10.0.0.2:7610", "version=v2", "10.0.0.3:7610", "v9.9.9", "last seen",
		"Routing rules", "blue-to-v2", "colour blue", "canary-v2", "billing-events", "canary 10 % of the rest", "No routing rules", "9 / 6 / 1 / 2", "hold up to 45s"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page does not show %q:\n%s", want, page)
		}
	}
	// stateOf reads the state marker of an instance of orders.
	stateOf := func(id string) string {
		t.Helper()
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(fmt.Sprintf(`span[data-app="orders"][data-id=%q]`, id))))
		if err != nil {
			t.Fatalf("the state of %s: %v", id, err)
		}
		return got
	}
	if s1, s3 := stateOf("10.0.0.1:7610"), stateOf("10.0.0.3:7610"); s1 != "static" || s3 != "online" {
		t.Fatalf("states: hand-added %q (want static), self-registered %q (want online)", s1, s3)
	}
	// The sidecar stops renewing: after the lease the page (refreshed by
	// its button) marks it offline.
	clk.Add(2 * leaseTTL)
	waitUntil(t, 30*time.Second, "the instance to go offline", func() bool {
		in, _ := op.Instances(t.Context(), "orders")
		return len(in) == 3 && in[2].Offline
	})
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("refresh"))); err != nil {
		t.Fatal(err)
	}
	offline := `(() => { const s = document.querySelector('span[data-app="orders"][data-id="10.0.0.3:7610"]'); return s && s.dataset.state === "offline" ? s.textContent : null; })()`
	if _, err := chromedp.Run(ctx, chromedp.Poll[string](offline, chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("the page does not mark the lapsed instance offline: %v (it shows %q)", err, stateOf("10.0.0.3:7610"))
	}
	stored, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem("msgmesh.ctrlplane.token")`))
	if err != nil || stored != testToken {
		t.Fatalf("sessionStorage holds %q, %v", stored, err)
	}

	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.SetValue(weightInput, "30"), chromedp.Click(setButton)); err != nil {
		t.Fatalf("setting the weight: %v", err)
	}
	got := rec.waitFor(t, 10*time.Second, "weight 30 set in the browser", weightIs("10.0.0.1:7610", 30))
	t.Logf("web page click to watcher: %v", got.at.Sub(start))
	if d := got.at.Sub(start); d > maxPropagation {
		t.Errorf("the change took %v to reach the watcher", d)
	}
	waitStatus("set to 30", "ok")

	// Out of range: the server's message shows, nothing changes.
	if err := chromedp.Do(ctx, chromedp.SetValue(weightInput, "150"), chromedp.Click(setButton)); err != nil {
		t.Fatal(err)
	}
	waitStatus("weight: 150 is outside 0..100 (INVALID)", "error")
	if cfg, err := op.Config(t.Context(), "orders"); err != nil || !weightIs("10.0.0.1:7610", 30)(cfg) {
		t.Fatalf("after the rejected weight: %+v, %v", cfg, err)
	}

	// A wrong token is refused, forgotten, and the form comes back.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "wrong-token"),
		chromedp.Click(chromedp.ID("save-token")),
	)
	if err != nil {
		t.Fatal(err)
	}
	waitStatus("(UNAUTHORIZED)", "error")
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("token"))); err != nil {
		t.Fatal(err)
	}
}
