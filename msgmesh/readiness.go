package msgmesh

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/observe"
)

// Readiness (GET /readyz, docs/http-api.md): the sidecar is ready when it
// is not stopping or paused, Config.Health passes, every broker cluster
// passed its last check, and every upstream consumer the registrations ask
// for is running without errors. Nothing here waits for a broker: each
// cluster is checked by a goroutine of its own (probeLoop, owned by
// Sidecar.bg, stopped by Shutdown) and the handlers read the last
// results; upstream consumers are read from a view that reconcile
// publishes (upstreamView), not from the maps reconcileMu guards.

// Default probe timing (Config.ProbeInterval, Config.ProbeTimeout).
const (
	defaultProbeInterval = 2 * time.Second
	defaultProbeTimeout  = 2 * time.Second
)

// upstreamErrorWindow is how long an upstream consumer counts as erroring
// after Next failed (with no delivery since). The feeding loop retries
// with a backoff of at most 5 s, so one that keeps failing stays erroring;
// one that failed once and then waits quietly on an idle topic does not
// stay so for ever.
const upstreamErrorWindow = 15 * time.Second

// Upstream consumer states, as GET /v1/upstreams and GET /readyz show them.
const (
	stateRunning    = "running"     // consuming; its cluster passed its last check
	stateErroring   = "erroring"    // Next failed within upstreamErrorWindow; retried
	stateBrokerDown = "broker_down" // started, but its cluster failed its last check
	statePaused     = "paused"      // delivery paused (hot upgrade)
	stateStarting   = "starting"    // being started for the first time
	stateFailed     = "failed"      // could not start; retried in the background
)

// cluster is one broker cluster and the result of its last check.
type cluster struct {
	name    string
	checker broker.Checker // nil: the adapter cannot tell; always up
	last    atomic.Pointer[probeResult]
}

// probeResult is one check of a cluster.
type probeResult struct {
	err     error     // nil: ready
	checked time.Time // when the check ended
	since   time.Time // when the cluster last turned up or down
}

// newClusters builds the probe state of every configured cluster.
func newClusters(brokers map[string]broker.Broker) map[string]*cluster {
	out := make(map[string]*cluster, len(brokers))
	for name, b := range brokers {
		c := &cluster{name: name}
		c.checker, _ = b.(broker.Checker)
		out[name] = c
	}
	return out
}

// startProbes starts one probe loop per cluster that can be checked.
func (s *Sidecar) startProbes() {
	for _, c := range s.clusters {
		if c.checker != nil {
			s.bg.Go(func() { s.probeLoop(c) })
		}
	}
	s.clearHealth = s.metrics().SetHealthSource(s.healthReport)
}

// stopHealth takes the sidecar's readiness off the metrics once it has
// stopped. Its probe loops stop with s.ctx.
func (s *Sidecar) stopHealth() {
	if s.clearHealth != nil {
		s.clearHealth()
	}
}

// probeLoop checks c every ProbeInterval, the first time at once, until
// the sidecar stops. A check is bounded by ProbeTimeout.
func (s *Sidecar) probeLoop(c *cluster) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ProbeTimeout)
		err := c.checker.Check(ctx)
		cancel()
		if s.ctx.Err() != nil {
			return
		}
		s.recordProbe(c, err)
		t.Reset(s.cfg.ProbeInterval)
	}
}

// recordProbe stores a check's result and logs when the cluster turns up
// or down.
func (s *Sidecar) recordProbe(c *cluster, err error) {
	now := time.Now()
	prev := c.last.Load()
	r := &probeResult{err: err, checked: now, since: now}
	if prev != nil && (prev.err == nil) == (err == nil) {
		r.since = prev.since
	}
	c.last.Store(r)
	switch {
	case err != nil && (prev == nil || prev.err == nil):
		s.log.Warn("broker cluster not ready", "cluster", c.name, "err", err)
	case err == nil && prev != nil && prev.err != nil:
		s.log.Info("broker cluster ready again", "cluster", c.name, "was_down_for", now.Sub(prev.since).Round(time.Millisecond))
	}
}

// clusterInfo is one cluster in GET /readyz.
type clusterInfo struct {
	Name      string     `json:"name"`
	Up        bool       `json:"up"`
	Error     string     `json:"error,omitempty"`
	CheckedAt *time.Time `json:"checked_at,omitempty"` // absent: not checked yet, or cannot be checked
	Since     *time.Time `json:"since,omitempty"`      // when it last turned up or down
}

// info returns c's last result; up unless the last check failed or none
// ran yet (a cluster that cannot be checked is always up).
func (c *cluster) info() clusterInfo {
	ci := clusterInfo{Name: c.name, Up: true}
	if c.checker == nil {
		return ci
	}
	r := c.last.Load()
	if r == nil {
		ci.Up, ci.Error = false, "not checked yet"
		return ci
	}
	ci.CheckedAt, ci.Since = &r.checked, &r.since
	if r.err != nil {
		ci.Up, ci.Error = false, r.err.Error()
	}
	return ci
}

// upstreamEntry is one upstream consumer the registrations ask for, as
// reconcile last published it.
type upstreamEntry struct {
	key      upstreamKey
	u        *upstream // running; nil when starting or failed
	startErr error     // why it could not start (failed)
}

// publishUpstreamsLocked publishes the upstream consumers for the
// lock-free readers: the running ones, the failed ones, and those of want
// not started yet. reconcileMu held on entry.
func (s *Sidecar) publishUpstreamsLocked(want map[upstreamKey]bool) {
	view := make([]upstreamEntry, 0, len(s.upstreams)+len(s.failed))
	for k, u := range s.upstreams {
		view = append(view, upstreamEntry{key: k, u: u})
	}
	for k, err := range s.failed {
		view = append(view, upstreamEntry{key: k, startErr: err})
	}
	for k := range want {
		if _, ok := s.upstreams[k]; !ok && s.failed[k] == nil {
			view = append(view, upstreamEntry{key: k})
		}
	}
	sort.Slice(view, func(i, j int) bool {
		a, b := view[i].key, view[j].key
		if a.group != b.group {
			return a.group < b.group
		}
		if a.topic != b.topic {
			return a.topic < b.topic
		}
		return a.cluster < b.cluster
	})
	s.upstreamView.Store(&view)
}

// timedErr is an upstream consumer's last Next error.
type timedErr struct {
	err     error
	at      time.Time
	cleared bool // a delivery came after it
}

// noteNext records the outcome of a Next that did not end by pause, stop
// or shutdown. Only the upstream's run goroutine calls it; a success costs
// one atomic load.
func (u *upstream) noteNext(err error) {
	if err != nil {
		u.lastErr.Store(&timedErr{err: err, at: time.Now()})
		return
	}
	if p := u.lastErr.Load(); p != nil && !p.cleared {
		u.lastErr.Store(&timedErr{err: p.err, at: p.at, cleared: true})
	}
}

// upstreamInfo describes one upstream consumer in GET /v1/upstreams and
// GET /readyz.
type upstreamInfo struct {
	Cluster string `json:"cluster"`
	Group   string `json:"group"`
	Topic   string `json:"topic"`
	// Running: the consumer started (it may still be not ready: see State).
	Running bool `json:"running"`
	// State is one of running, erroring, broker_down, paused, starting,
	// failed.
	State string `json:"state"`
	// Ready: State is running.
	Ready bool `json:"ready"`
	// Error says why it is not running (failed).
	Error string `json:"error,omitempty"`
	// LastError is the last error of its Next (erroring, or earlier).
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// BrokerUp and BrokerError are its cluster's last check.
	BrokerUp    bool   `json:"broker_up"`
	BrokerError string `json:"broker_error,omitempty"`
	// The group's effective dead-letter policy on the topic.
	MaxAttempts     int    `json:"max_attempts"`
	DeadLetterTopic string `json:"dead_letter_topic"`
	// BrokerGroup is the registered broker_group; empty when the
	// adapter derives the broker-side group from Group.
	BrokerGroup string `json:"broker_group,omitempty"`
}

// upstreamInfos describes every upstream consumer, reading only atomics.
func (s *Sidecar) upstreamInfos(clusters map[string]clusterInfo) []upstreamInfo {
	view := s.upstreamView.Load()
	if view == nil {
		return []upstreamInfo{}
	}
	paused := s.pausedFlag.Load()
	out := make([]upstreamInfo, 0, len(*view))
	for _, e := range *view {
		ci := clusters[e.key.cluster]
		ui := upstreamInfo{Cluster: e.key.cluster, Group: e.key.group, Topic: e.key.topic, BrokerGroup: e.key.brokerGroup, BrokerUp: ci.Up, BrokerError: ci.Error}
		p := s.policyOf(e.key.route())
		ui.MaxAttempts, ui.DeadLetterTopic = p.maxAttempts, p.topic
		if e.u != nil {
			ui.Running = true
			if p := e.u.lastErr.Load(); p != nil {
				at := p.at
				ui.LastError, ui.LastErrorAt = p.err.Error(), &at
			}
		}
		switch {
		case e.startErr != nil:
			ui.State, ui.Error = stateFailed, e.startErr.Error()
		case e.u == nil:
			ui.State = stateStarting
		case paused:
			ui.State = statePaused
		case !ci.Up:
			ui.State = stateBrokerDown
		case e.u.erroring():
			ui.State = stateErroring
		default:
			ui.State, ui.Ready = stateRunning, true
		}
		out = append(out, ui)
	}
	return out
}

// erroring reports whether Next failed within upstreamErrorWindow with no
// delivery since.
func (u *upstream) erroring() bool {
	p := u.lastErr.Load()
	return p != nil && !p.cleared && time.Since(p.at) < upstreamErrorWindow
}

// readiness is the body of GET /readyz.
type readiness struct {
	// Status is "ready" or "not_ready".
	Status string `json:"status"`
	// NotReady names each thing that is not ready, one line each.
	NotReady  []string       `json:"not_ready,omitempty"`
	Clusters  []clusterInfo  `json:"clusters"`
	Upstreams []upstreamInfo `json:"upstreams"`
}

// clusterInfos returns every cluster's last result, by name.
func (s *Sidecar) clusterInfos() map[string]clusterInfo {
	out := make(map[string]clusterInfo, len(s.clusters))
	for name, c := range s.clusters {
		out[name] = c.info()
	}
	return out
}

// ready computes the readiness report. It does not block.
func (s *Sidecar) ready() readiness {
	cis := s.clusterInfos()
	r := readiness{Clusters: make([]clusterInfo, 0, len(cis)), Upstreams: s.upstreamInfos(cis)}
	if s.draining.Load() {
		r.NotReady = append(r.NotReady, "the sidecar is shutting down")
	}
	if s.pausedFlag.Load() {
		r.NotReady = append(r.NotReady, "delivery is paused (hot upgrade in progress)")
	}
	if h := s.cfg.Health; h != nil {
		if err := h(); err != nil {
			r.NotReady = append(r.NotReady, err.Error())
		}
	}
	for _, ci := range cis {
		r.Clusters = append(r.Clusters, ci)
	}
	sort.Slice(r.Clusters, func(i, j int) bool { return r.Clusters[i].Name < r.Clusters[j].Name })
	for _, ci := range r.Clusters {
		if !ci.Up {
			r.NotReady = append(r.NotReady, fmt.Sprintf("cluster %s: %s", ci.Name, ci.Error))
		}
	}
	for _, u := range r.Upstreams {
		switch u.State {
		case stateRunning, stateBrokerDown, statePaused: // the last two are said above
		case stateErroring:
			r.NotReady = append(r.NotReady, fmt.Sprintf("upstream %s/%s on cluster %s: erroring: %s", u.Group, u.Topic, u.Cluster, u.LastError))
		case stateFailed:
			r.NotReady = append(r.NotReady, fmt.Sprintf("upstream %s/%s on cluster %s: failed to start: %s", u.Group, u.Topic, u.Cluster, u.Error))
		default:
			r.NotReady = append(r.NotReady, fmt.Sprintf("upstream %s/%s on cluster %s: %s", u.Group, u.Topic, u.Cluster, u.State))
		}
	}
	r.Status = "ready"
	if len(r.NotReady) > 0 {
		r.Status = "not_ready"
	}
	return r
}

// handleReady is GET /readyz: 200 when ready, 503 when not, with the
// report either way.
func (s *Sidecar) handleReady(w http.ResponseWriter, r *http.Request) {
	rep := s.ready()
	status := http.StatusOK
	if rep.Status != "ready" {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, rep)
}

// healthReport is the readiness as the metrics gauges show it.
func (s *Sidecar) healthReport() observe.HealthReport {
	rep := s.ready()
	h := observe.HealthReport{Ready: rep.Status == "ready"}
	for _, c := range rep.Clusters {
		h.Clusters = append(h.Clusters, observe.ClusterHealth{Name: c.Name, Up: c.Up})
	}
	for _, u := range rep.Upstreams {
		h.Upstreams = append(h.Upstreams, observe.UpstreamHealth{Topic: u.Topic, Group: u.Group, Ready: u.Ready})
	}
	return h
}

// GroupLag is how far one consumer group is behind on one topic, for the
// upstream consumers whose broker says it cheaply (broker.Lagger).
type GroupLag struct {
	Group, Topic string
	// Lag is the messages of the topic the group has not acked.
	Lag int64
}

// lagTimeout bounds each upstream's lag query.
const lagTimeout = 2 * time.Second

// ConsumerLag asks each upstream consumer whose broker supports it how far
// its group is behind. It lists the upstreams under reconcileMu and asks
// the brokers after releasing it, one round trip each (each bounded by
// lagTimeout and ctx); upstreams that cannot say are left out. While a
// reconciliation holds reconcileMu (it may wait on a slow broker) it
// returns nothing rather than wait: its caller, the lease renewal, must
// not be held up.
func (s *Sidecar) ConsumerLag(ctx context.Context) []GroupLag {
	type one struct {
		k upstreamKey
		l broker.Lagger
	}
	var ls []one
	if !s.reconcileMu.TryLock() {
		return nil
	}
	for k, u := range s.upstreams {
		if l, ok := u.consumer.(broker.Lagger); ok {
			ls = append(ls, one{k, l})
		}
	}
	s.reconcileMu.Unlock()
	out := make([]GroupLag, 0, len(ls))
	for _, o := range ls {
		lctx, cancel := context.WithTimeout(ctx, lagTimeout)
		n, err := o.l.Lag(lctx)
		cancel()
		if err != nil {
			s.log.Debug("consumer lag unknown", "group", o.k.group, "topic", o.k.topic, "err", err)
			continue
		}
		out = append(out, GroupLag{Group: o.k.group, Topic: o.k.topic, Lag: n})
	}
	return out
}
