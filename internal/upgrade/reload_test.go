package upgrade_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/otlptest"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// TestReloadMovesConsumers: msgmesh reload applies a changed brokers
// section in-process while an app publishes and consumes: a second NATS
// cluster and a route send topic "audit" there, so its upstream consumer
// moves from cluster a to cluster b, while "orders" consumption goes on
// through the freeze/adopt of its connection and held deliveries. A
// second reload turns span export on (to an OTLP collector in the test)
// under a new service name. Counted
// by message id: every acknowledged message is consumed once, none lost,
// none doubled, and neither app connection dials again. An invalid file,
// by msgmesh reload (exit 1, with the reason) or SIGHUP, keeps the old
// configuration serving; so does one naming a cluster that cannot be
// reached, whose start fails after the freeze: the old configuration
// adopts a copy of the same sockets again.
func TestReloadMovesConsumers(t *testing.T) {
	natsA, natsB := natstest.Start(t), natstest.Start(t)
	cluster := func(name, url string) string {
		return fmt.Sprintf("    - {name: %s, kind: nats, endpoints: [%q]}\n", name, url)
	}
	v1 := "brokers:\n  default_cluster: a\n  clusters:\n" + cluster("a", natsA.ClientURL())
	routes := "  routes:\n    - {topic: audit, cluster: b}\n"
	v2 := v1 + cluster("b", natsB.ClientURL()) + routes
	bad := v2 + "  bogus: 1\n"
	path := sidecartest.WriteConfig(t, v1)
	s := newSidecarArgs(t, "--config", path, "--delivery-timeout", "10s")
	p := s.start(t)
	dataDir := s.args[1]

	if status, body := sidecartest.Register(t, s.http, "orders", []string{"p1:orders", "p2:audit"}, []string{"g1:orders", "g2:audit"}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	meshAddr := s.args[3]

	var dials sidecartest.CountingDialer
	dial := func() *client.Client { return sidecartest.Dial(t, meshAddr, client.WithDialer(dials.Dial)) }
	led := sidecartest.NewLedger()
	count := led.Consumed.Distinct
	sub := dial()
	for _, gt := range [][2]string{{"g1", "orders"}, {"g2", "audit"}} {
		if _, err := sub.Subscribe(context.Background(), gt[0], gt[1], func(_ context.Context, d *client.Delivery) error {
			time.Sleep(time.Millisecond) // the app's work: deliveries are held at the reload
			led.Consumed.Add("sub", string(d.Body))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	pub := dial()
	publish := func(topic, body string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: []byte(body)}); err == nil {
			led.Ack(body)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				publish("orders", fmt.Sprintf("orders-%d-%d", w, i))
			}
		})
	}
	upstreamCluster := func(topic string) string {
		resp, err := http.Get("http://" + s.http + "/v1/upstreams")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var us []struct{ Cluster, Topic string }
		if json.NewDecoder(resp.Body).Decode(&us) != nil {
			return ""
		}
		for _, u := range us {
			if u.Topic == topic {
				return u.Cluster
			}
		}
		return ""
	}
	reload := func(want int) string {
		t.Helper()
		out, err := exec.Command(build(t), "reload", "--data-dir", dataDir).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != want {
			t.Fatalf("msgmesh reload exited %d, want %d:\n%s", code, want, out)
		}
		return string(out)
	}
	flow := func(what string) {
		t.Helper()
		before := count()
		sidecartest.WaitFor(t, waitLong, what, func() bool { return count() > before+300 })
	}

	flow("orders to flow")
	if c := upstreamCluster("audit"); c != "a" {
		t.Fatalf("audit's upstream consumer runs on %q before the reload, want a", c)
	}
	if err := os.WriteFile(path, []byte(v2), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	reload(0)
	t.Logf("msgmesh reload of the brokers section took %s", time.Since(start).Round(time.Millisecond))
	for _, l := range strings.Split(p.Output(), "\n") {
		if strings.Contains(l, `msg="handed off"`) || strings.Contains(l, "configuration reloaded") {
			t.Log(l[strings.Index(l, "msg="):])
		}
	}
	sidecartest.WaitFor(t, waitLong, "audit's upstream consumer to move to cluster b", func() bool { return upstreamCluster("audit") == "b" })
	for i := range 100 {
		publish("audit", fmt.Sprintf("audit-%d", i))
	}
	flow("orders to flow after the reload")

	// Telemetry: the same brokers, and spans now exported over OTLP to a
	// collector under a new service name, which /metrics' target_info
	// shows too.
	colLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := otlptest.Serve(colLn)
	t.Cleanup(col.Close)
	v3 := v2 + fmt.Sprintf("telemetry:\n  otlp_endpoint: %q\n  service_name: msgmesh-reloaded\n", "http://"+col.Addr().String())
	if err := os.WriteFile(path, []byte(v3), 0o600); err != nil {
		t.Fatal(err)
	}
	if col.Count() != 0 {
		t.Fatalf("the collector got %d spans before tracing was configured", col.Count())
	}
	start = time.Now()
	reload(0)
	t.Logf("msgmesh reload of the telemetry section took %s", time.Since(start).Round(time.Millisecond))
	sidecartest.WaitFor(t, waitLong, "target_info on /metrics to name the new service", func() bool {
		resp, err := http.Get("http://" + s.http + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `target_info{service_name="msgmesh-reloaded"`)
	})
	sidecartest.WaitFor(t, waitLong, "the reloaded sidecar's publish spans at the collector", func() bool {
		return len(col.Spans(func(sp otlptest.Span) bool {
			return sp.Service == "msgmesh-reloaded" && sp.Kind == "SPAN_KIND_PRODUCER"
		})) > 0
	})
	flow("orders to flow after the telemetry reload")

	// A file that validates but does not start (a cluster nobody serves):
	// the old configuration adopts a copy of the same sockets and serves on.
	unreachable := v1 + cluster("b", natsB.ClientURL()) + cluster("c", "nats://"+brokertest.FreeAddr(t)) + routes
	if err := os.WriteFile(path, []byte(unreachable), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := reload(1); !strings.Contains(out, "the new configuration did not start; the old one serves again") {
		t.Errorf("msgmesh reload of a configuration that cannot start says:\n%s", out)
	}
	flow("orders to flow after the reload that fell back")

	// An invalid file: refused with the reason; the old configuration serves.
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := reload(1); !strings.Contains(out, "reload refused") || !strings.Contains(out, "bogus") {
		t.Errorf("msgmesh reload of an invalid file says:\n%s", out)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	sidecartest.WaitFor(t, waitLong, "SIGHUP with an invalid file to be logged", func() bool {
		return strings.Contains(p.Output(), "SIGHUP: configuration not reloaded; the old one stays")
	})
	flow("orders to flow after the refused reloads")
	if c := upstreamCluster("audit"); c != "b" {
		t.Errorf("audit's upstream consumer runs on %q after the refused reloads, want b", c)
	}

	stop()
	wg.Wait()
	led.WaitConsumed(t, waitLong)
	led.ConsumedOnce(t)
	audit := 0
	for b := range led.Consumed.Bodies() {
		if !led.IsAcked(b) {
			t.Errorf("%s consumed but never acknowledged", b)
		}
		if strings.HasPrefix(b, "audit-") {
			audit++
		}
	}
	if audit != 100 {
		t.Errorf("%d of 100 audit messages consumed", audit)
	}
	if d := dials.Count(); d != 2 {
		t.Errorf("the app's two clients dialled %d times: a connection broke", d)
	}
	t.Logf("%d acknowledged, %d consumed once each, through two reloads (brokers, telemetry), one that fell back and two refused ones", led.AckedCount(), led.Consumed.Distinct())
}
