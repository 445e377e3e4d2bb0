package observe_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/msgmesh/msgmesh/observe"
)

// wait bounds every wait of a test; nothing waits this long when the code
// is right.
const wait = 30 * time.Second

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// traced returns a Telemetry whose spans go, synchronously, to the
// returned in-memory exporter of the real SDK.
func traced(t testing.TB, cfg observe.Config) (*observe.Telemetry, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg.TracerProvider = tp
	return newTelemetry(t, cfg), exp
}

func newTelemetry(t testing.TB, cfg observe.Config) *observe.Telemetry {
	t.Helper()
	tel, err := observe.New(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("observe.New: %v", err)
	}
	t.Cleanup(func() {
		if err := tel.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return tel
}

// scrape GETs /metrics from a real HTTP server serving MetricsHandler and
// returns the lines of the msgmesh_ metrics (no comments).
func scrape(t testing.TB, tel *observe.Telemetry) map[string]bool {
	t.Helper()
	srv := httptest.NewServer(tel.MetricsHandler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q, want the Prometheus text format", ct)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "msgmesh_") || strings.HasPrefix(l, "target_info") {
			lines[l] = true
		}
	}
	return lines
}

// wantLines fails unless every line of want is in got.
func wantLines(t testing.TB, got map[string]bool, want ...string) {
	t.Helper()
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing metric line %q", w)
		}
	}
	if t.Failed() {
		var all []string
		for l := range got {
			all = append(all, l)
		}
		t.Logf("scraped:\n%s", strings.Join(all, "\n"))
	}
}

// countPrefix counts the lines of got that start with prefix.
func countPrefix(got map[string]bool, prefix string) int {
	n := 0
	for l := range got {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}
