package stream_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

func TestLimiterConcurrency(t *testing.T) {
	l := stream.NewLimiter(map[string]stream.RouteLimit{"r": {MaxConcurrent: 2}})
	x := &stream.Exchange{Route: "r"}
	for i := range 2 {
		if err := l.OnExchange(x); err != nil {
			t.Fatalf("request %d refused within the limit: %v", i+1, err)
		}
	}
	err := l.OnExchange(x)
	var e *stream.Error
	if !errors.As(err, &e) || e.Code != stream.ErrRateLimited || e.HTTPStatus() != 429 {
		t.Fatalf("third concurrent exchange: %v, want RATE_LIMITED", err)
	}
	l.OnExchangeDone(x)
	if err := l.OnExchange(x); err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	if err := l.OnExchange(&stream.Exchange{Route: "other"}); err != nil {
		t.Fatalf("a route without limits was refused: %v", err)
	}
	// Replacing the limits applies at once.
	l.SetLimits(map[string]stream.RouteLimit{"r": {MaxConcurrent: 10}})
	if err := l.OnExchange(x); err != nil {
		t.Fatalf("after raising the limit: %v", err)
	}
	l.OnExchangeDone(x)
	l.OnExchangeDone(x) // more ends than starts on the new limiter never go negative
	l.OnExchangeDone(x)
	for i := 0; i < 10; i++ {
		if err := l.OnExchange(x); err != nil {
			t.Fatalf("exchange %d of 10: %v", i, err)
		}
	}
	if l.OnExchange(x) == nil {
		t.Fatal("11th exchange admitted with a limit of 10")
	}
}

func TestLimiterRate(t *testing.T) {
	l := stream.NewLimiter(map[string]stream.RouteLimit{"r": {Rate: 0.001, Burst: 3, MaxConcurrent: 100}})
	x := &stream.Exchange{Route: "r"}
	for i := 0; i < 3; i++ {
		if err := l.OnExchange(x); err != nil {
			t.Fatalf("within the burst: %v", err)
		}
		l.OnExchangeDone(x)
	}
	if err := l.OnExchange(x); err == nil {
		t.Fatal("over the rate and burst but admitted")
	}
}

func TestMetrics(t *testing.T) {
	m := stream.NewMetrics()
	for i, status := range []int{200, 200, 404, 503, 0} {
		x := &stream.Exchange{Kind: stream.ExchangeRPC, Listener: "egress", Route: "echo", ReqBytes: 10, Start: time.Now().Add(-time.Duration(i) * time.Millisecond)}
		_ = m.OnExchange(x)
		x.Status, x.RespBytes = status, 20
		m.OnExchangeDone(x)
	}
	_ = m.OnExchange(&stream.Exchange{Kind: stream.ExchangeRPC, Listener: "ingress", Route: "app/mesh", Start: time.Now()})
	s := m.Stats(stream.ExchangeRPC, "egress", "echo")
	if s.Requests.Load() != 5 || s.InFlight.Load() != 0 || s.ReqBytes.Load() != 50 || s.RespBytes.Load() != 100 ||
		s.ByClass[2].Load() != 2 || s.ByClass[4].Load() != 1 || s.ByClass[5].Load() != 1 || s.ByClass[0].Load() != 1 {
		t.Fatalf("counters: requests %d in flight %d bytes %d/%d classes %v", s.Requests.Load(), s.InFlight.Load(), s.ReqBytes.Load(), s.RespBytes.Load(), &s.ByClass)
	}
	// Collected as Prometheus collects it, by a pedantic registry (which
	// checks every metric against its description).
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	out := rec.Body.String()
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", rec.Code, out)
	}
	for _, want := range []string{
		`msgmesh_exchanges_total{class="2xx",kind="rpc",listener="egress",route="echo"} 2`,
		`msgmesh_exchanges_total{class="other",kind="rpc",listener="egress",route="echo"} 1`,
		`msgmesh_exchanges_in_flight{kind="rpc",listener="ingress",route="app/mesh"} 1`,
		`msgmesh_exchange_bytes_total{dir="out",kind="rpc",listener="egress",route="echo"} 100`,
		`msgmesh_exchange_seconds_count{kind="rpc",listener="egress",route="echo"} 5`,
		`msgmesh_exchange_seconds_bucket{kind="rpc",listener="egress",route="echo",le="+Inf"} 5`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("prometheus output lacks %s\n%s", want, out)
		}
	}
}

func TestAccessLog(t *testing.T) {
	var buf bytes.Buffer
	a := stream.NewAccessLog(slog.New(slog.NewTextHandler(&buf, nil)))
	x := &stream.Exchange{Ctx: context.Background(), Kind: stream.ExchangeRPC, Route: "echo", Status: 504,
		Err: stream.Errorf(stream.ErrTimeout, "slow"), Start: time.Now()}
	a.OnExchangeDone(x)
	if out := buf.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "status=504") || !strings.Contains(out, `err="TIMEOUT: slow"`) {
		t.Fatalf("access log line: %s", out)
	}
}

func TestErrorCodes(t *testing.T) {
	for c := stream.ErrBadRequest; c <= stream.ErrInternal; c++ {
		if strings.HasPrefix(c.String(), "ERROR_CODE") || c.Status() < 400 {
			t.Errorf("code %d: name %s, status %d", c, c, c.Status())
		}
	}
	if stream.ErrorCode(0).String() != "ERROR_CODE(0)" || stream.ErrorCode(200).Status() != 500 {
		t.Error("unknown codes")
	}
	cause := errors.New("boom")
	e := stream.Errorf(stream.ErrUpstreamReset, "conn: %w", cause)
	if !errors.Is(e, cause) || e.Error() != "UPSTREAM_RESET: conn: boom" || e.HTTPStatus() != 502 {
		t.Fatalf("Errorf: %v (status %d)", e, e.HTTPStatus())
	}
	if ae := stream.AsError(cause); ae.Code != stream.ErrInternal || !errors.Is(ae, cause) {
		t.Fatalf("AsError(plain) = %v", ae)
	}
	if (&stream.Error{Code: stream.ErrUnsupported, Status: 505}).HTTPStatus() != 505 {
		t.Fatal("Status override ignored")
	}
}
