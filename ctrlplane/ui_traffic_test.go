package ctrlplane_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/internal/browsertest"
)

// screenshotDir is where TestWebPageTraffic saves its screenshots: the
// docs' images with MSGMESH_UPDATE_SCREENSHOTS=1, else the test's
// temporary directory.
func screenshotDir(t *testing.T) string {
	if os.Getenv("MSGMESH_UPDATE_SCREENSHOTS") != "" {
		return filepath.Join("..", "docs", "img")
	}
	return t.TempDir()
}

// TestWebPageTraffic drives the web page in a real headless Chromium with
// traffic reports behind it: two sidecars of "orders" report ten minutes
// of traffic (the clock moved 5 s per report): A, at weight 30, keeps 30%
// of its broker deliveries and forwards the rest to B. The page shows A's
// kept share (30%) and B's (100%), a sparkline per instance with one point
// per interval, and the topology table with each topic's cluster,
// producers and consuming groups. It saves screenshots (PNG).
func TestWebPageTraffic(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	c := startBolt(t, leaseOpts(clk))
	op := client(t, c.url, testToken)
	cred := mustCreate(t, op, "orders")
	mustCreate(t, op, "billing")
	sc := client(t, c.url, cred)
	const addrA, addrB = "10.0.0.1:7610", "10.0.0.2:7610"
	apps := []api.AppBindings{
		{App: "billing", Consumes: []api.GroupBinding{{Group: "invoicing", Topic: "orders.created", Cluster: "east"}}},
		{App: "orders", Produces: []api.TopicCluster{{Topic: "orders.audit", Cluster: "west"}, {Topic: "orders.created", Cluster: "east"}},
			Consumes: []api.GroupBinding{{Group: "shipping", Topic: "orders.created", Cluster: "east"}}},
	}
	var a, b api.TrafficCounters
	const reports = 120
	for i := range reports {
		for _, r := range []struct {
			addr string
			c    api.TrafficCounters
		}{{addrA, a}, {addrB, b}} {
			req := api.LeaseRequest{Addr: r.addr, Traffic: &api.TrafficReport{Boot: "boot-" + r.addr, Counters: r.c, InFlight: i % 7, Apps: apps}}
			if _, err := sc.RenewLease(t.Context(), "orders", "", req); err != nil {
				t.Fatal(err)
			}
		}
		if i == 0 {
			if _, err := op.SetWeight(t.Context(), "orders", addrA, 30); err != nil {
				t.Fatal(err)
			}
		}
		// A load that rises and falls: 10 per 5 s times 2..14.
		n := uint64(10 * (8 + math.Round(6*math.Sin(float64(i)/8))))
		fw := n * 7 / 10
		a.FromBroker, a.Forwarded, a.Delivered, a.Acked = a.FromBroker+n, a.Forwarded+fw, a.Delivered+n-fw, a.Acked+n-fw
		b.FromBroker, b.FromSiblings = b.FromBroker+n, b.FromSiblings+fw
		b.Delivered, b.Acked = b.Delivered+n+fw, b.Acked+n+fw
		clk.Add(5 * time.Second)
	}

	bctx := browsertest.Start(t)
	ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
	t.Cleanup(cancel)
	err := chromedp.Do(ctx,
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(c.url+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), testToken),
		chromedp.Click(chromedp.ID("save-token")),
		chromedp.WaitVisible(chromedp.CSS(`div.topology[data-app="orders"] tr[data-topic="orders.created"]`)),
	)
	if err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	// The kept share next to each weight.
	for id, want := range map[string]string{addrA: "30", addrB: "100"} {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector('td.share[data-app="orders"][data-id=%q]').dataset.kept`, id)))
		if err != nil || got != want {
			t.Errorf("kept share of %s: %q (%v), want %s", id, got, err, want)
		}
	}
	// A sparkline per instance, with a point per interval the endpoint gives.
	tr, err := op.Traffic(t.Context(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range tr.Instances {
		pts, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(
			`document.querySelector('td.spark[data-app="orders"][data-id=%q] svg.sparkline polyline.delivered').getAttribute("points").trim().split(/\s+/).length`, in.ID)))
		if err != nil || pts != len(in.Series) || pts < reports-2 {
			t.Errorf("sparkline of %s: %d points (%v), the endpoint has %d", in.ID, pts, err, len(in.Series))
		}
	}
	topo, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`div.topology[data-app="orders"]`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"orders.created", "orders.audit", "east", "west", "billing / invoicing", "orders / shipping"} {
		if !strings.Contains(topo, want) {
			t.Errorf("the topology table does not show %q:\n%s", want, topo)
		}
	}
	row, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`div.topology[data-app="orders"] tr[data-topic="orders.audit"]`)))
	if err != nil || !strings.Contains(row, "west") || strings.Contains(row, "invoicing") {
		t.Errorf("the orders.audit row: %q (%v)", row, err)
	}
	if txt, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`div.topology[data-app="billing"]`))); err != nil || !strings.Contains(txt, "No topics reported") {
		t.Errorf("billing, without sidecars: %q (%v)", txt, err)
	}

	dir := screenshotDir(t)
	full, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	table, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(`section.app[data-app="orders"]`)))
	if err != nil {
		t.Fatal(err)
	}
	for name, png := range map[string][]byte{"ctrlplane-traffic.png": full, "ctrlplane-traffic-orders.png": table} {
		if !strings.HasPrefix(string(png), "\x89PNG") {
			t.Fatalf("%s is not a PNG", name)
		}
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots in %s", dir)
}
