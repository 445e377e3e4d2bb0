package msgmesh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/msgmesh/forward"
	"github.com/msgmesh/msgmesh/observe"
	"github.com/msgmesh/msgmesh/scheduler"
)

// Forwarder sends a delivery to a sibling sidecar of the same app
// (msgmesh/forward.Forwarder). A nil error means the sibling took it and
// the forwarder now settles d upstream when the sibling's app answers; an
// error means d is untouched and still the caller's.
type Forwarder interface {
	Forward(ctx context.Context, sibling, group, topic string, d broker.Delivery) error
	// Outstanding counts forwarded deliveries not yet answered.
	Outstanding() int
}

// Forwarding turns on weight-based forwarding between the sidecars of one
// app (docs/design.md flows 7 and 8). The scheduler holds the weights the
// control plane pushes; the forwarder reaches siblings. Deliveries that
// come from a sibling arrive through Sidecar.DeliverFromSibling and are
// never forwarded again.
type Forwarding struct {
	// App is the app whose sidecars these are: only the consumer groups
	// of its registration are forwarded to siblings, and siblings (whose
	// certificates must name it) may deliver only into them. Required.
	App       string
	Scheduler *scheduler.Scheduler
	Forwarder Forwarder
	// SiblingWait bounds how long a delivery from a sibling waits for room
	// on a local connection before it is refused, so a full node pushes
	// back on its siblings instead of stalling them. Zero: 5s.
	SiblingWait time.Duration
}

// stats are the sidecar's delivery counters (GET /v1/stats, and the
// traffic reports a sidecar with --ctrlplane sends with its lease).
// Plain atomics rather than reads of the OpenTelemetry instruments: those
// are per topic and group and cannot be read back cheaply.
type stats struct {
	fromBroker   atomic.Uint64 // deliveries taken from upstream consumers
	forwarded    atomic.Uint64 // of those, taken by a sibling
	fallbacks    atomic.Uint64 // forward attempts a sibling refused or missed
	fromSiblings atomic.Uint64 // deliveries taken from siblings
	delivered    atomic.Uint64 // deliveries sent to a local app connection
	acked        atomic.Uint64 // of those, acked by the app
	nacked       atomic.Uint64 // nacked (or answered ERROR) by the app
	timedOut     atomic.Uint64 // not answered within the delivery timeout
	errors       atomic.Uint64 // acks/nacks the broker failed to take, and failed publishes
	published    atomic.Uint64 // publishes the broker acknowledged
}

// Stats is a snapshot of the delivery counters, each counted since this
// Sidecar was created. The counters are api.TrafficCounters, the shape a
// sidecar with --ctrlplane reports them in with its lease renewals
// (docs/http-api.md, GET /v1/stats, lists what each counts).
type Stats struct {
	api.TrafficCounters
	// InFlight is the deliveries in flight now: sent to local apps or
	// to siblings, not yet settled.
	InFlight int `json:"in_flight"`
	// Weight is this node's weight as last pushed; -1 without forwarding.
	Weight int `json:"weight"`
	// Rules are the routing rules' counters (docs/routing.md), by rule
	// name, for every rule that matched a delivery since start; absent
	// when none did.
	Rules map[string]api.RuleCounters `json:"rules,omitempty"`
	// RulesInForce names the routing rules of the last push, sorted;
	// absent when there are none.
	RulesInForce []string `json:"rules_in_force,omitempty"`
}

// ruleStats are one routing rule's counters (Stats.Rules).
type ruleStats struct{ matched, applied, fellBack, held atomic.Uint64 }

// routed counts a delivery routing rule dec.Rule matched, once its fate
// is known (applied, fell back, or held), in the stats and the metrics.
func (s *Sidecar) routed(dec scheduler.Decision) {
	if dec.Rule == "" {
		return
	}
	v, ok := s.ruleStats.Load(dec.Rule)
	if !ok {
		v, _ = s.ruleStats.LoadOrStore(dec.Rule, &ruleStats{})
	}
	rs := v.(*ruleStats)
	rs.matched.Add(1)
	outcome := observe.RoutingApplied
	switch {
	case dec.Hold > 0:
		rs.held.Add(1)
		outcome = observe.RoutingHeld
	case dec.Fallback:
		rs.fellBack.Add(1)
		outcome = observe.RoutingFallback
	default:
		rs.applied.Add(1)
	}
	s.metrics().Routed(context.Background(), dec.Rule, outcome)
}

// minHoldRetry is the shortest a held delivery waits at the broker before
// it is offered again (docs/routing.md, fallback "hold").
const minHoldRetry = time.Second

// hold hands d back to the broker to be offered again later, for a routing
// rule whose targets cannot take it now (fallback "hold"), and reports
// whether it did. A hold is an attempt to the broker, counted against the
// group's max_attempts, so the holds are spread over what is left of the
// bound: with n holds left (the group's attempts less two, kept for
// delivering it) it waits left/n, at least a second. It does not hold
// when the message was stored dec.Hold ago or longer (or the broker gives
// no timestamp), or no hold is left: the caller then delivers it anywhere.
func (s *Sidecar) hold(k routeKey, d broker.Delivery, dec scheduler.Decision) bool {
	stored := d.Timestamp()
	if stored.IsZero() {
		return false
	}
	left := dec.Hold - time.Since(stored)
	holds := s.policyOf(k).maxAttempts - 2 - d.Redelivered()
	if left <= 0 || holds <= 0 {
		return false
	}
	delay := min(max(left/time.Duration(holds), minHoldRetry), left)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Nack(ctx, delay); err != nil {
		// The broker offers it again after its ack wait.
		s.log.Debug("handing a held delivery back failed", "group", k.group, "topic", k.topic, "rule", dec.Rule, "err", err)
	}
	return true
}

// ruleCounters snapshots the routing rules' counters; nil when no rule
// matched yet.
func (s *Sidecar) ruleCounters() map[string]api.RuleCounters {
	var out map[string]api.RuleCounters
	s.ruleStats.Range(func(k, v any) bool {
		if out == nil {
			out = map[string]api.RuleCounters{}
		}
		rs := v.(*ruleStats)
		out[k.(string)] = api.RuleCounters{Matched: rs.matched.Load(), Applied: rs.applied.Load(), FellBack: rs.fellBack.Load(), Held: rs.held.Load()}
		return true
	})
	return out
}

// Stats returns the delivery counters since start.
func (s *Sidecar) Stats() Stats {
	st := Stats{TrafficCounters: api.TrafficCounters{FromBroker: s.stats.fromBroker.Load(), Forwarded: s.stats.forwarded.Load(),
		Fallbacks: s.stats.fallbacks.Load(), FromSiblings: s.stats.fromSiblings.Load(),
		Delivered: s.stats.delivered.Load(), Acked: s.stats.acked.Load(), Nacked: s.stats.nacked.Load(),
		TimedOut: s.stats.timedOut.Load(), Errors: s.stats.errors.Load(), Published: s.stats.published.Load()},
		InFlight: s.InflightDeliveries(), Weight: -1, Rules: s.ruleCounters()}
	if f := s.cfg.Forwarding; f != nil {
		st.Weight = f.Scheduler.Weight()
		if names := f.Scheduler.Rules(); len(names) > 0 {
			st.RulesInForce = names
		}
	}
	return st
}

func (s *Sidecar) handleStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

// forwardingChanged is closed when the forwarding weights change; nil
// without forwarding.
func (s *Sidecar) forwardingChanged() <-chan struct{} {
	if f := s.cfg.Forwarding; f != nil {
		return f.Scheduler.Changed()
	}
	return nil
}

// forwards reports whether broker deliveries of k may currently go to
// siblings, so the dispatcher need not wait for local room first. Only the
// forwarding app's own groups ever leave the sidecar.
func (s *Sidecar) forwards(k routeKey) bool {
	f := s.cfg.Forwarding
	return f != nil && f.Scheduler.Forwarding() && s.snap.Load().consumes(f.App, k)
}

// tryForward offers a broker delivery to the siblings the scheduler picks
// by the routing rules and the weights (the message's colour and group
// decide which rule applies, docs/routing.md). It returns true when a
// sibling took it, or a rule's fallback "hold" handed it back to the
// broker; false means deliver it locally (the rules or weights say so,
// every sibling tried refused or was unreachable, or k is not a group of
// the forwarding app: another app's messages never go to this app's
// siblings).
func (s *Sidecar) tryForward(ctx context.Context, k routeKey, d broker.Delivery) bool {
	f := s.cfg.Forwarding
	if f == nil || !s.snap.Load().consumes(f.App, k) {
		return false
	}
	dec := f.Scheduler.Route(false, scheduler.Msg{Group: k.group, Colour: broker.ColourOf(d.Message())})
	var tried map[string]bool
	for !dec.Local {
		if dec.Hold > 0 {
			if s.hold(k, d, dec) {
				s.routed(dec)
				return true
			}
			dec = f.Scheduler.Anywhere(dec)
			continue
		}
		fd := s.cfg.Telemetry.Forward(d, k.group, dec.Sibling) // the forward span
		if dec.Rule != "" {
			observe.MarkRouted(fd, dec.Rule, dec.Fallback)
		}
		err := f.Forwarder.Forward(ctx, dec.Sibling, k.group, k.topic, fd)
		if err == nil {
			s.stats.forwarded.Add(1)
			s.routed(dec)
			return true
		}
		// "unavailable": unreachable, silent or marked down (its breaker
		// is open, so this failed at once); "refused": it said no.
		outcome := "refused"
		if errors.Is(err, forward.ErrUnavailable) {
			outcome = "unavailable"
		}
		observe.ForwardFailed(fd, outcome, err)
		s.stats.fallbacks.Add(1)
		s.log.Debug("forward failed; trying the next choice", "sibling", dec.Sibling, "group", k.group, "topic", k.topic, "outcome", outcome, "err", err)
		if tried == nil {
			tried = map[string]bool{}
		}
		tried[dec.Sibling] = true
		dec = f.Scheduler.Retry(dec, tried)
	}
	s.routed(dec)
	return false
}

// DeliverFromSibling takes a delivery a sibling of app (the app its
// certificate names) forwarded and hands it to a local connection of its
// group; it is never forwarded again. The group must be in app's
// registration here: a sibling of one app cannot inject into another app's
// groups on a sidecar that serves both (FORBIDDEN). It returns once a
// connection took it; the app's answer settles d (which answers the
// sibling). A typed *mesh.Error tells the sibling why it was refused, so it
// can deliver elsewhere.
func (s *Sidecar) DeliverFromSibling(ctx context.Context, app, group, topic string, d broker.Delivery) error {
	if s.draining.Load() || s.pausedFlag.Load() {
		return &mesh.Error{Code: mesh.CodeUnavailable, Message: "this sidecar is paused or stopping"}
	}
	k := routeKey{group: group, topic: topic}
	if snap := s.snap.Load(); !snap.consumes(app, k) {
		if snap.consume[k] {
			return &mesh.Error{Code: mesh.CodeForbidden, Message: fmt.Sprintf("group %q on topic %q is not in the registration of app %q, the app of the sibling's certificate", group, topic, app)}
		}
		return &mesh.Error{Code: mesh.CodeNotRegistered, Message: fmt.Sprintf("app %q's group %q does not consume %q here", app, group, topic)}
	}
	wait := 5 * time.Second
	if f := s.cfg.Forwarding; f != nil && f.SiblingWait > 0 {
		wait = f.SiblingWait
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	r := s.acquireRoute(k)
	defer s.releaseRoute(r)
	for {
		t, err := r.acquire(ctx)
		if err != nil {
			return &mesh.Error{Code: mesh.CodeUnavailable, Message: fmt.Sprintf("no room on a local connection of %s:%s within %s", group, topic, wait)}
		}
		if t.deliver(k, d) {
			s.stats.fromSiblings.Add(1)
			return nil
		}
	}
}

var (
	_ forward.Deliverer = (*Sidecar)(nil)
	_ Forwarder         = (*forward.Forwarder)(nil)
)
