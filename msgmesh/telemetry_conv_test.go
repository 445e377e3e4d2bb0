package msgmesh_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/observe"
)

// TestSpanConventions: on every broker the sidecar's spans follow the
// OpenTelemetry messaging conventions: messaging.system names the broker,
// the send span (whose context travels in the message) is PRODUCER, and
// send and deliver carry server.address, the key and, where the broker
// has them, the partition and offset the message got.
func TestSpanConventions(t *testing.T) {
	for _, kit := range sidecartest.BrokerKits() {
		t.Run(kit.Name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			tel, err := observe.New(context.Background(), observe.Config{TracerProvider: tp})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
			e := newEnvOn(t, kit.Start(t), func(c *msgmesh.Config) { c.Telemetry = tel })
			e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
			done := make(chan struct{}, 1)
			if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(context.Context, *client.Delivery) error {
				done <- struct{}{}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
			defer cancel()
			ack, err := e.dial().Publish(ctx, &client.Message{Topic: topic, Key: "order-7", Body: []byte("x")})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatal("no delivery")
			}
			spans := map[string]tracetest.SpanStub{}
			sidecartest.WaitFor(t, 10*time.Second, "the send and deliver spans", func() bool {
				for _, s := range exp.GetSpans() {
					spans[s.Name] = s
				}
				return spans["send "+topic].Name != "" && spans["deliver "+topic].Name != "" && !spans["deliver "+topic].EndTime.IsZero()
			})
			send, deliver := spans["send "+topic], spans["deliver "+topic]
			if send.SpanKind != trace.SpanKindProducer {
				t.Errorf("send span kind %v, want PRODUCER", send.SpanKind)
			}
			offsetKey := "msgmesh.offset"
			want := map[string]string{"messaging.system": kit.Name, "server.address": "127.0.0.1"}
			switch kit.Name {
			case "kafka":
				offsetKey = "messaging.kafka.offset"
				want["messaging.kafka.message.key"] = "order-7"
				want["messaging.destination.partition.id"] = fmt.Sprint(ack.Partition)
			case "rocketmq":
				want["messaging.rocketmq.message.keys"] = `["order-7"]`
				want["messaging.destination.partition.id"] = fmt.Sprint(ack.Partition)
			}
			want[offsetKey] = fmt.Sprint(ack.Offset)
			for _, s := range []tracetest.SpanStub{send, deliver} {
				for k, v := range want {
					if k == "msgmesh.offset" && kit.Name == "nats" && s.Name == deliver.Name {
						continue // a NATS delivery has no position the sidecar reports
					}
					if got, ok := spanAttr(s, k); !ok || got != v {
						t.Errorf("span %q: %s = %q (present %v), want %q", s.Name, k, got, ok, v)
					}
				}
			}
		})
	}
}

func spanAttr(s tracetest.SpanStub, k string) (string, bool) {
	for _, a := range s.Attributes {
		if a.Key == attribute.Key(k) {
			return a.Value.String(), true
		}
	}
	return "", false
}

// TestMetricsKnownSeriesAndOpenMetrics: on a sidecar that has done nothing
// yet, the error counters of every registered topic, group and cluster
// are there at 0 (so rate() alerts see 0, not nothing); /metrics speaks
// OpenMetrics when asked; and promtool, Prometheus's own checker, accepts
// both formats.
func TestMetricsKnownSeriesAndOpenMetrics(t *testing.T) {
	tel, err := observe.New(context.Background(), observe.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	e := newEnv(t, func(c *msgmesh.Config) { c.Telemetry = tel })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	got := scrape(t, e.http)
	for _, series := range []string{
		fmt.Sprintf(`msgmesh_publish_errors_total{topic=%q}`, topic),
		fmt.Sprintf(`msgmesh_messages_in_total{topic=%q}`, topic),
		fmt.Sprintf(`msgmesh_rejected_total{reason="schema_invalid",topic=%q}`, topic),
		fmt.Sprintf(`msgmesh_rejected_total{reason="rate_limited",topic=%q}`, topic),
		fmt.Sprintf(`msgmesh_deliveries_settled_total{group="g1",outcome="nack",topic=%q}`, topic),
		fmt.Sprintf(`msgmesh_deliveries_settled_total{group="g1",outcome="dead_letter",topic=%q}`, topic),
		fmt.Sprintf(`msgmesh_redelivered_total{group="g1",topic=%q}`, topic),
		`msgmesh_broker_errors_total{cluster="default"}`,
	} {
		v, ok := got[series]
		if !ok || v != 0 {
			t.Errorf("%s: %d (present %v), want 0 before anything happened", series, v, ok)
		}
	}

	get := func(accept string) (string, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+e.http+"/metrics", nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Header.Get("Content-Type"), string(b)
	}
	ct, om := get("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
	if !strings.HasPrefix(ct, "application/openmetrics-text") || !strings.HasSuffix(strings.TrimSpace(om), "# EOF") {
		t.Errorf("asked for OpenMetrics, got %q ending %q", ct, tail(om))
	}
	ct, text := get("")
	if !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("asked for nothing, got %q", ct)
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian package prometheus); the formats were not checked by Prometheus's own parser")
	}
	// The classic text format: promtool check metrics parses it (its lint
	// advice on names exits 3; a parse error exits 1).
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	// OpenMetrics: promtool parses it when backfilling, which needs a
	// timestamp on every sample; give each the same one.
	var stamped strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(om), "\n") {
		if !strings.HasPrefix(line, "#") {
			line += " 1700000000"
		}
		stamped.WriteString(line + "\n")
	}
	dir := t.TempDir()
	in := dir + "/metrics.om"
	if err := os.WriteFile(in, []byte(stamped.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", in, dir+"/blocks").CombinedOutput(); err != nil {
		t.Errorf("promtool could not parse the OpenMetrics answer: %v\n%s", err, out)
	}
}

func tail(s string) string {
	s = strings.TrimSpace(s)
	return s[max(0, len(s)-40):]
}
