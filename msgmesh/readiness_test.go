package msgmesh_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/rmqtest"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/observe"
	"github.com/msgmesh/msgmesh/topology"
)

// stoppable is a real broker, in this process, that a test stops and
// starts again on the same addresses (and data directory).
type stoppable struct {
	cluster topology.Cluster
	start   func() // runs it (again)
	stop    func()
}

// stoppableBrokers are the three broker kinds as stoppable brokers.
var stoppableBrokers = []struct {
	name string
	make func(t *testing.T) *stoppable
}{
	{"nats", func(t *testing.T) *stoppable {
		addr, dir := brokertest.FreeAddr(t), t.TempDir()
		s := &stoppable{cluster: topology.Cluster{Name: "natsc", Kind: topology.KindNATS, Endpoints: []string{"nats://" + addr}}}
		var e *natsbroker.Embedded
		s.start = func() {
			var err error
			if e, err = natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{StoreDir: dir, Listen: addr}); err != nil {
				t.Fatal(err)
			}
		}
		s.stop = func() { e.Shutdown() }
		return s
	}},
	{"kafka", func(t *testing.T) *stoppable {
		addr := brokertest.FreeAddr(t)
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		s := &stoppable{cluster: topology.Cluster{Name: "kafkac", Kind: topology.KindKafka, Endpoints: []string{addr}}}
		var c *kfake.Cluster
		s.start = func() {
			var err error
			if c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port)); err != nil {
				t.Fatal(err)
			}
		}
		s.stop = func() { c.Close() }
		return s
	}},
	{"rocketmq", func(t *testing.T) *stoppable {
		cfg := rmqtest.Config{NameServerAddr: brokertest.FreeAddr(t), BrokerAddr: brokertest.FreeAddr(t), DataDir: t.TempDir()}
		s := &stoppable{cluster: topology.Cluster{Name: "rmqc", Kind: topology.KindRocketMQ, Endpoints: []string{cfg.NameServerAddr}}}
		var b *rmqtest.Broker
		s.start = func() {
			var err error
			if b, err = rmqtest.Start(cfg); err != nil {
				t.Fatal(err)
			}
		}
		s.stop = func() { _ = b.Close() }
		return s
	}},
}

// startStoppable starts a broker of the kind and stops it when the test
// ends (after the sidecar, whose cleanup runs first).
func startStoppable(t *testing.T, make func(t *testing.T) *stoppable) *stoppable {
	t.Helper()
	s := make(t)
	s.start()
	running := true
	stop, start := s.stop, s.start
	s.stop = func() { stop(); running = false }
	s.start = func() { start(); running = true }
	t.Cleanup(func() {
		if running {
			stop()
		}
	})
	return s
}

// readyz is GET /readyz, decoded.
type readyz struct {
	Status   string     `json:"status"`
	NotReady []string   `json:"not_ready"`
	Clusters []struct { // of the body
		Name  string `json:"name"`
		Up    bool   `json:"up"`
		Error string `json:"error"`
	} `json:"clusters"`
	Upstreams []upstreamState `json:"upstreams"`
}

// upstreamState is one entry of GET /v1/upstreams (and of /readyz).
type upstreamState struct {
	Cluster     string `json:"cluster"`
	Group       string `json:"group"`
	Topic       string `json:"topic"`
	Running     bool   `json:"running"`
	State       string `json:"state"`
	Ready       bool   `json:"ready"`
	Error       string `json:"error"`
	LastError   string `json:"last_error"`
	BrokerUp    bool   `json:"broker_up"`
	BrokerError string `json:"broker_error"`
}

// getJSON GETs url with a short timeout (these endpoints must never wait
// for a broker) and decodes the body into v; it returns the status.
func getJSON(t testing.TB, url string, v any) int {
	t.Helper()
	c := http.Client{Timeout: sidecartest.Scaled(2 * time.Second)}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %d %q: %v", url, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// waitReady polls GET /readyz until its status is want (200 or 503) and
// returns the body.
func waitReady(t testing.TB, httpAddr string, want int, what string) readyz {
	t.Helper()
	var r readyz
	sidecartest.WaitFor(t, 30*time.Second, what, func() bool {
		r = readyz{}
		return getJSON(t, "http://"+httpAddr+"/readyz", &r) == want
	})
	return r
}

// upstreamOf returns GET /v1/upstreams' entry for (group, topic).
func upstreamOf(t testing.TB, httpAddr, group, topic string) (upstreamState, bool) {
	t.Helper()
	var us []upstreamState
	getJSON(t, "http://"+httpAddr+"/v1/upstreams", &us)
	for _, u := range us {
		if u.Group == group && u.Topic == topic {
			return u, true
		}
	}
	return upstreamState{}, false
}

// metricValue returns the value of one series of GET /metrics, or "" if
// it is not there.
func metricValue(t testing.TB, httpAddr, series string) string {
	t.Helper()
	status, body := sidecartest.HTTPDo(t, http.MethodGet, "http://"+httpAddr+"/metrics", "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}

func newTelemetry(t testing.TB) *observe.Telemetry {
	t.Helper()
	tel, err := observe.New(context.Background(), observe.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

// newEnvNamed starts a sidecar on the cluster c describes, under c's
// name (newEnvOn calls it "default").
func newEnvNamed(t *testing.T, c topology.Cluster, tweak ...func(*msgmesh.Config)) *env {
	t.Helper()
	b, err := brokers.Open(context.Background(), c, sidecartest.Logger())
	if err != nil {
		t.Fatalf("open %s cluster: %v", c.Kind, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return newEnvWith(t, b, append([]func(*msgmesh.Config){func(cfg *msgmesh.Config) {
		cfg.Broker, cfg.Brokers = nil, map[string]broker.Broker{c.Name: b}
	}}, tweak...)...)
}

// fastProbes checks the clusters every 100 ms, so tests see changes soon.
// The timeout is long: a stopped broker refuses at once, and a check
// slowed down by a busy machine must not look like an outage.
func fastProbes(c *msgmesh.Config) {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = sidecartest.Scaled(5 * time.Second)
}

// waitMetric waits until one series of GET /metrics has the value want.
func waitMetric(t testing.TB, httpAddr, series, want string) {
	t.Helper()
	var v string
	sidecartest.WaitFor(t, 30*time.Second, series+" = "+want, func() bool {
		v = metricValue(t, httpAddr, series)
		return v == want
	})
}

// TestReadinessFollowsTheBroker stops and restarts a real broker of each
// kind under a sidecar with a consumer running: GET /readyz turns 503
// naming the cluster, GET /v1/upstreams shows the broker down for the
// consumer, msgmesh_broker_up shows 0, while GET /healthz (liveness) stays
// 200; with the broker back, all turn ready again.
func TestReadinessFollowsTheBroker(t *testing.T) {
	for _, kind := range stoppableBrokers {
		t.Run(kind.name, func(t *testing.T) {
			br := startStoppable(t, kind.make)
			name := br.cluster.Name
			e := newEnvNamed(t, br.cluster, fastProbes, func(c *msgmesh.Config) { c.Telemetry = newTelemetry(t) })
			e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
			upSeries := fmt.Sprintf(`msgmesh_broker_up{cluster=%q}`, name)
			upstreamSeries := fmt.Sprintf(`msgmesh_upstream_ready{group="g1",topic=%q}`, topic)

			r := waitReady(t, e.http, http.StatusOK, "ready with the broker up")
			if len(r.Upstreams) != 1 || r.Upstreams[0].State != "running" {
				t.Fatalf("ready, upstreams %+v; want g1 running", r.Upstreams)
			}
			waitMetric(t, e.http, upSeries, "1")

			br.stop()
			r = waitReady(t, e.http, http.StatusServiceUnavailable, "not ready with the broker down")
			if r.Status != "not_ready" || !strings.Contains(strings.Join(r.NotReady, "\n"), "cluster "+name+":") {
				t.Fatalf("/readyz with the broker down: %+v; want not_ready naming cluster %s", r, name)
			}
			u, ok := upstreamOf(t, e.http, "g1", topic)
			if !ok || u.State != "broker_down" || u.BrokerUp || u.BrokerError == "" || u.Ready || !u.Running {
				t.Fatalf("/v1/upstreams with the broker down: %+v; want running, state broker_down, broker_up false with its error", u)
			}
			for series, want := range map[string]string{upSeries: "0", "msgmesh_ready": "0", upstreamSeries: "0"} {
				waitMetric(t, e.http, series, want)
			}
			if status := getJSON(t, "http://"+e.http+"/healthz", nil); status != http.StatusOK {
				t.Fatalf("/healthz with the broker down: %d, want 200 (liveness)", status)
			}

			br.start()
			r = waitReady(t, e.http, http.StatusOK, "ready again with the broker back")
			if u, _ := upstreamOf(t, e.http, "g1", topic); u.State != "running" || !u.BrokerUp {
				t.Fatalf("/v1/upstreams with the broker back: %+v", u)
			}
			for series, want := range map[string]string{upSeries: "1", "msgmesh_ready": "1", upstreamSeries: "1"} {
				waitMetric(t, e.http, series, want)
			}
		})
	}
}

// With the broker down, a registration waits for the broker inside
// reconcile (which holds its lock): GET /v1/upstreams and GET /readyz
// answer meanwhile, showing the new consumer starting; once it could not
// start it is failed with the broker's error, and it runs after the
// broker is back.
func TestUpstreamsDoNotWaitForTheBroker(t *testing.T) {
	br := startStoppable(t, stoppableBrokers[0].make) // NATS: requests wait for their timeout while it reconnects
	e := newEnvNamed(t, br.cluster, fastProbes)
	waitReady(t, e.http, http.StatusOK, "ready")
	br.stop()
	waitReady(t, e.http, http.StatusServiceUnavailable, "not ready with the broker down")

	registered := make(chan int, 1)
	go func() {
		status, _ := sidecartest.Register(t, e.http, "orders", nil, []string{"g2:" + topic})
		registered <- status
	}()
	sidecartest.WaitFor(t, 10*time.Second, "GET /v1/upstreams to show g2 starting", func() bool {
		u, ok := upstreamOf(t, e.http, "g2", topic)
		return ok && u.State == "starting"
	})
	select {
	case status := <-registered:
		t.Fatalf("the registration already answered %d: the test did not catch reconcile waiting for the broker", status)
	default:
	}
	if r := waitReady(t, e.http, http.StatusServiceUnavailable, "/readyz while reconcile waits"); !strings.Contains(strings.Join(r.NotReady, "\n"), "g2/"+topic) {
		t.Fatalf("/readyz does not name the starting consumer: %v", r.NotReady)
	}

	select {
	case status := <-registered:
		if status != http.StatusCreated {
			t.Fatalf("register with the broker down: %d, want 201 (stored; the consumer is retried)", status)
		}
	case <-time.After(sidecartest.Scaled(60 * time.Second)):
		t.Fatal("the registration did not answer")
	}
	u, _ := upstreamOf(t, e.http, "g2", topic)
	if u.State != "failed" || u.Error == "" || u.Running {
		t.Fatalf("after the failed start: %+v; want state failed with the error", u)
	}
	r := waitReady(t, e.http, http.StatusServiceUnavailable, "not ready")
	if !strings.Contains(strings.Join(r.NotReady, "\n"), "g2/"+topic+" on cluster natsc: failed to start") {
		t.Fatalf("/readyz does not say the consumer failed to start: %v", r.NotReady)
	}

	br.start()
	waitReady(t, e.http, http.StatusOK, "ready once the broker is back and the consumer retried")
	if u, _ := upstreamOf(t, e.http, "g2", topic); u.State != "running" || !u.Running {
		t.Fatalf("after the broker came back: %+v", u)
	}
}

// flakyBroker is a real broker whose consumers' Next fails while failing
// is set. It is a stand-in for an adapter whose Next returns errors: the
// three real adapters retry their client's errors inside Next, so none of
// them can be made to return one on demand.
type flakyBroker struct {
	broker.Broker
	failing atomic.Bool
}

func (f *flakyBroker) Consume(ctx context.Context, spec broker.ConsumerSpec) (broker.Consumer, error) {
	c, err := f.Broker.Consume(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &flakyConsumer{Consumer: c, b: f}, nil
}

func (f *flakyBroker) Check(ctx context.Context) error { return f.Broker.(broker.Checker).Check(ctx) }

type flakyConsumer struct {
	broker.Consumer
	b *flakyBroker
}

var errInjected = errors.New("injected fetch failure")

func (c *flakyConsumer) Next(ctx context.Context) (broker.Delivery, error) {
	if c.b.failing.Load() {
		return nil, errInjected
	}
	return c.Consumer.Next(ctx)
}

// An upstream consumer whose Next keeps failing is erroring, with its
// last error, and the sidecar is not ready; once a message gets through
// it is running and ready again.
func TestReadinessShowsAnErroringConsumer(t *testing.T) {
	b, err := brokers.Open(context.Background(), sidecartest.NATSCluster(t), sidecartest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	flaky := &flakyBroker{Broker: b}
	flaky.failing.Store(true)
	e := newEnvWith(t, flaky, fastProbes)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	sub := e.dial()
	got := make(chan struct{}, 1)
	if _, err := sub.Subscribe(context.Background(), "g1", topic, func(context.Context, *client.Delivery) error {
		got <- struct{}{}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	r := waitReady(t, e.http, http.StatusServiceUnavailable, "not ready while Next fails")
	sidecartest.WaitFor(t, 10*time.Second, "g1 erroring", func() bool {
		u, _ := upstreamOf(t, e.http, "g1", topic)
		return u.State == "erroring" && strings.Contains(u.LastError, errInjected.Error())
	})
	r = waitReady(t, e.http, http.StatusServiceUnavailable, "not ready while Next fails")
	if !strings.Contains(strings.Join(r.NotReady, "\n"), "erroring: "+errInjected.Error()) {
		t.Fatalf("/readyz does not name the erroring consumer: %v", r.NotReady)
	}

	flaky.failing.Store(false)
	pub := e.dial()
	if _, err := pub.Publish(context.Background(), &client.Message{Topic: topic, Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	<-got
	waitReady(t, e.http, http.StatusOK, "ready once a message got through")
	if u, _ := upstreamOf(t, e.http, "g1", topic); u.State != "running" || u.LastError == "" {
		t.Fatalf("after recovery: %+v; want running, the last error still shown", u)
	}
}
