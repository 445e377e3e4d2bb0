package msgmesh_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/flowctl"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/observe"
)

// TestOneTraceProducerToConsumer: the producer SDK's publish, the
// sidecar's send to the broker, the sidecar's delivery and the consumer
// SDK's processing are one trace, each span the child of the one before
// (OpenTelemetry's in-memory exporter records them). /metrics then shows
// the exact counts of the run.
func TestOneTraceProducerToConsumer(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tel, err := observe.New(context.Background(), observe.Config{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	e := newEnv(t, func(c *msgmesh.Config) { c.Telemetry = tel })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})

	processed := make(chan struct{}, 16)
	sub := e.dial(client.WithTracerProvider(tp))
	if _, err := sub.Subscribe(context.Background(), "g1", topic, func(ctx context.Context, d *client.Delivery) error {
		processed <- struct{}{}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pub := e.dial(client.WithTracerProvider(tp))
	if _, err := pub.Publish(context.Background(), &client.Message{Topic: topic, Body: []byte("traced")}); err != nil {
		t.Fatal(err)
	}
	<-processed

	byName := map[string]tracetest.SpanStub{}
	sidecartest.WaitFor(t, 10*time.Second, "the four spans", func() bool {
		for _, s := range exp.GetSpans() {
			byName[s.Name] = s
		}
		return len(byName) >= 4 && byName["process "+topic].Name != ""
	})
	chain := []string{"publish " + topic, "send " + topic, "deliver " + topic, "process " + topic}
	for i, name := range chain {
		s, ok := byName[name]
		if !ok {
			t.Fatalf("no span %q; spans: %v", name, spanNames(byName))
		}
		if s.SpanContext.TraceID() != byName[chain[0]].SpanContext.TraceID() {
			t.Errorf("span %q is in another trace", name)
		}
		if i > 0 && s.Parent.SpanID() != byName[chain[i-1]].SpanContext.SpanID() {
			t.Errorf("span %q's parent is not %q", name, chain[i-1])
		}
	}

	// Metrics count exactly what happened: 1 + n publishes, all delivered
	// and acked.
	const n = 24
	sidecartest.PublishN(t, pub, topic, "m", n, 8)
	for range n {
		<-processed
	}
	want := map[string]int{
		fmt.Sprintf(`msgmesh_messages_in_total{topic=%q}`, topic):                                 n + 1,
		fmt.Sprintf(`msgmesh_messages_out_total{group="g1",topic=%q}`, topic):                     n + 1,
		fmt.Sprintf(`msgmesh_deliveries_settled_total{group="g1",outcome="ack",topic=%q}`, topic): n + 1,
	}
	sidecartest.WaitFor(t, 10*time.Second, "the metrics to show the run", func() bool {
		got := scrape(t, e.http)
		for k, v := range want {
			if got[k] != v {
				return false
			}
		}
		return true
	})
}

func spanNames(m map[string]tracetest.SpanStub) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// scrape reads GET /metrics into series (name with sorted labels) → value,
// ignoring the labels the exporter adds (otel_scope_*, job...).
func scrape(t *testing.T, httpAddr string) map[string]int {
	t.Helper()
	status, body := sidecartest.HTTPDo(t, http.MethodGet, "http://"+httpAddr+"/metrics", "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	out := map[string]int{}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, "msgmesh_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		series, val := line[:i], line[i+1:]
		var keep []string
		if a, b, ok := strings.Cut(series, "{"); ok {
			for _, l := range strings.Split(strings.TrimSuffix(b, "}"), ",") {
				if !strings.HasPrefix(l, "otel_") {
					keep = append(keep, l)
				}
			}
			series = a + "{" + strings.Join(keep, ",") + "}"
		}
		var v float64
		fmt.Sscan(val, &v)
		out[series] = int(v)
	}
	return out
}

// TestFlowLimits: a topic's rate limit in reject mode answers RATE_LIMITED
// at once, its size limit MESSAGE_TOO_BIG before anything reaches the
// broker, and Apply changes the limits of a running sidecar.
func TestFlowLimits(t *testing.T) {
	flow, err := flowctl.New(flowctl.Config{Topics: map[string]flowctl.TopicLimits{
		"limited.topic": {PublishRate: 1, Burst: 1, OnLimit: flowctl.OnLimitReject, MaxMessageBytes: 10},
	}})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *msgmesh.Config) { c.Flow = flow })
	e.register("orders", []string{"p1:limited.topic"}, nil)
	c := e.dial()
	pub := func(body string) error {
		_, err := c.Publish(context.Background(), &client.Message{Topic: "limited.topic", Body: []byte(body)})
		return err
	}
	if err := pub("first"); err != nil {
		t.Fatalf("first publish: %v", err)
	}
	if err := pub("second"); client.CodeOf(err) != mesh.CodeRateLimited {
		t.Fatalf("second publish at once: %v, want RATE_LIMITED", err)
	}
	if err := pub("eleven byte"); client.CodeOf(err) != mesh.CodeMessageTooBig {
		t.Fatalf("over the topic's size limit: %v, want MESSAGE_TOO_BIG", err)
	}
	// Lift the limits while running.
	if err := flow.Apply(flowctl.Config{}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := pub(fmt.Sprintf("free-%d", i)); err != nil {
			t.Fatalf("after the limits were lifted: %v", err)
		}
	}
}
