package stream

import (
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// The stages here are the RPC proxy's built-in stages of its pipeline
// (package pipeline: OnExchange before a call is forwarded,
// OnExchangeDone once its outcome is known): Metrics counts exchanges
// (the observability stage, served on the sidecar's /metrics as a
// prometheus.Collector), AccessLog logs them, and Limiter enforces
// per-route concurrency and rate limits (the flow-control stage). Each is
// keyed by Exchange.Route.

// LatencyBuckets are the upper bounds of the latency histogram of Metrics.
var LatencyBuckets = []time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// Metrics counts exchanges per (kind, listener, route): requests, answers
// by status class, bytes each way, in flight, and a latency histogram. It
// never refuses a request. The zero value is not ready; use NewMetrics.
type Metrics struct {
	mu    sync.RWMutex
	stats map[statsKey]*RouteStats

	exchanges, inFlight, bytes, seconds *prometheus.Desc
}

type statsKey struct {
	kind     ExchangeKind
	listener string
	route    string
}

// RouteStats are the counters of one (kind, listener, route).
type RouteStats struct {
	Requests  atomic.Uint64
	InFlight  atomic.Int64
	ReqBytes  atomic.Uint64
	RespBytes atomic.Uint64
	// ByClass counts answers by status class: index 2 is 2xx, 5 is 5xx;
	// index 0 counts statuses outside 100-599.
	ByClass [6]atomic.Uint64
	// Latency counts answers by LatencyBuckets; the last slot is +Inf.
	Latency    [17]atomic.Uint64
	LatencySum atomic.Int64 // nanoseconds
}

// NewMetrics returns an empty Metrics filter.
func NewMetrics() *Metrics {
	route := []string{"kind", "listener", "route"}
	return &Metrics{
		stats: make(map[statsKey]*RouteStats),
		exchanges: prometheus.NewDesc("msgmesh_exchanges_total", "RPC calls answered, by status class.",
			append(route, "class"), nil),
		inFlight: prometheus.NewDesc("msgmesh_exchanges_in_flight", "RPC calls read and not answered yet.", route, nil),
		bytes: prometheus.NewDesc("msgmesh_exchange_bytes_total", "Bytes of RPC calls on the wire: in (requests) and out (answers).",
			append(route, "dir"), nil),
		seconds: prometheus.NewDesc("msgmesh_exchange_seconds", "Time from reading an RPC call to its answer.", route, nil),
	}
}

// Stats returns the counters of (kind, listener, route), creating them.
func (m *Metrics) Stats(kind ExchangeKind, listener, route string) *RouteStats {
	k := statsKey{kind, listener, route}
	m.mu.RLock()
	s := m.stats[k]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s = m.stats[k]; s == nil {
		s = new(RouteStats)
		m.stats[k] = s
	}
	return s
}

// OnExchange counts a call read.
func (m *Metrics) OnExchange(x *Exchange) error {
	s := m.Stats(x.Kind, x.Listener, x.Route)
	s.Requests.Add(1)
	s.InFlight.Add(1)
	s.ReqBytes.Add(uint64(x.ReqBytes))
	return nil
}

// OnExchangeDone counts its answer.
func (m *Metrics) OnExchangeDone(x *Exchange) {
	s := m.Stats(x.Kind, x.Listener, x.Route)
	s.InFlight.Add(-1)
	s.RespBytes.Add(uint64(x.RespBytes))
	class := x.Status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	s.ByClass[class].Add(1)
	d := time.Since(x.Start)
	i, _ := slices.BinarySearch(LatencyBuckets, d)
	s.Latency[i].Add(1)
	s.LatencySum.Add(int64(d))
}

// Describe and Collect make Metrics a prometheus.Collector: the sidecar
// registers it on the registry its /metrics serves
// (observe.Telemetry.Registerer), so the RPC proxy's calls are scraped
// with everything else.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.exchanges
	ch <- m.inFlight
	ch <- m.bytes
	ch <- m.seconds
}

// Collect reads every route's counters.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.RLock()
	keys := make([]statsKey, 0, len(m.stats))
	for k := range m.stats {
		keys = append(keys, k)
	}
	m.mu.RUnlock()
	for _, k := range keys {
		s := m.Stats(k.kind, k.listener, k.route)
		lv := []string{k.kind.String(), k.listener, k.route}
		for c := range s.ByClass {
			if n := s.ByClass[c].Load(); n > 0 {
				class := "other"
				if c > 0 {
					class = strconv.Itoa(c) + "xx"
				}
				ch <- prometheus.MustNewConstMetric(m.exchanges, prometheus.CounterValue, float64(n), append(lv, class)...)
			}
		}
		ch <- prometheus.MustNewConstMetric(m.inFlight, prometheus.GaugeValue, float64(s.InFlight.Load()), lv...)
		ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.CounterValue, float64(s.ReqBytes.Load()), append(lv, "in")...)
		ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.CounterValue, float64(s.RespBytes.Load()), append(lv, "out")...)
		buckets := make(map[float64]uint64, len(LatencyBuckets))
		var cum uint64
		for i := range s.Latency {
			cum += s.Latency[i].Load()
			if i < len(LatencyBuckets) {
				buckets[LatencyBuckets[i].Seconds()] = cum
			}
		}
		ch <- prometheus.MustNewConstHistogram(m.seconds, cum, time.Duration(s.LatencySum.Load()).Seconds(), buckets, lv...)
	}
}

// AccessLog logs one line per exchange when it ends, at Info (answers
// below 500) or Warn (5xx and proxy errors). It never refuses a request.
type AccessLog struct{ log *slog.Logger }

// NewAccessLog returns an access-log filter writing to log.
func NewAccessLog(log *slog.Logger) *AccessLog { return &AccessLog{log: log} }

// OnExchangeDone logs the call.
func (a *AccessLog) OnExchangeDone(x *Exchange) {
	level := slog.LevelInfo
	if x.Status >= 500 || x.Err != nil {
		level = slog.LevelWarn
	}
	ctx := x.Ctx
	if !a.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("kind", x.Kind.String()),
		slog.String("listener", x.Listener),
		slog.String("protocol", x.Protocol),
		slog.String("route", x.Route),
		slog.String("target", x.Target),
		slog.String("path", x.Path),
		slog.String("upstream", x.Upstream),
		slog.Int("status", x.Status),
		slog.Int("req_bytes", x.ReqBytes),
		slog.Int("resp_bytes", x.RespBytes),
		slog.Duration("duration", time.Since(x.Start)),
	}
	if x.Err != nil {
		attrs = append(attrs, slog.String("err", x.Err.Error()))
	}
	a.log.LogAttrs(ctx, level, "exchange", attrs...)
}

// RouteLimit limits one route. Zero fields mean no limit.
type RouteLimit struct {
	// MaxConcurrent bounds the route's exchanges in flight.
	MaxConcurrent int
	// Rate bounds the exchanges started per second; Burst is how many may
	// start at once (zero: max(1, Rate)).
	Rate  float64
	Burst int
}

// Limiter refuses exchanges over their route's limits with
// ErrRateLimited. Routes without a limit pass. Limits can be replaced at
// run time (SetLimits), as the control plane will.
type Limiter struct {
	limits atomic.Pointer[map[string]*routeLimiter]
}

type routeLimiter struct {
	max      int64
	inflight atomic.Int64
	rate     *rate.Limiter
	cfg      RouteLimit
}

// NewLimiter returns a limiter with limits per route name.
func NewLimiter(limits map[string]RouteLimit) *Limiter {
	l := &Limiter{}
	l.SetLimits(limits)
	return l
}

// SetLimits replaces every route's limits. Exchanges in flight keep the
// slots they took under the old limits.
func (l *Limiter) SetLimits(limits map[string]RouteLimit) {
	m := make(map[string]*routeLimiter, len(limits))
	for route, cfg := range limits {
		if cfg.MaxConcurrent <= 0 && cfg.Rate <= 0 {
			continue
		}
		rl := &routeLimiter{max: int64(cfg.MaxConcurrent), cfg: cfg}
		if cfg.Rate > 0 {
			burst := cfg.Burst
			if burst <= 0 {
				burst = max(1, int(cfg.Rate))
			}
			rl.rate = rate.NewLimiter(rate.Limit(cfg.Rate), burst)
		}
		m[route] = rl
	}
	l.limits.Store(&m)
}

// OnExchange refuses a call over its route's limits.
func (l *Limiter) OnExchange(x *Exchange) error {
	rl := (*l.limits.Load())[x.Route]
	if rl == nil {
		return nil
	}
	if rl.max > 0 {
		if n := rl.inflight.Add(1); n > rl.max {
			rl.inflight.Add(-1)
			return Errorf(ErrRateLimited, "route %q: %d requests in flight, the limit is %d", x.Route, n-1, rl.max)
		}
	}
	if rl.rate != nil && !rl.rate.Allow() {
		if rl.max > 0 {
			rl.inflight.Add(-1)
		}
		return Errorf(ErrRateLimited, "route %q: over %g requests/s (burst %d)", x.Route, rl.cfg.Rate, rl.rate.Burst())
	}
	return nil
}

// OnExchangeDone gives the call's slot back.
func (l *Limiter) OnExchangeDone(x *Exchange) {
	// The limiter of the route as OnRequest saw it may have been replaced;
	// releasing a slot on the new one is harmless (it may briefly admit a
	// little more), releasing none would leak it.
	rl := (*l.limits.Load())[x.Route]
	if rl == nil || rl.max <= 0 {
		return
	}
	for {
		n := rl.inflight.Load()
		if n <= 0 || rl.inflight.CompareAndSwap(n, n-1) {
			return
		}
	}
}
