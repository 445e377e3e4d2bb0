package api

import (
	"time"
)

// TrafficReport is what a sidecar says about its traffic with each lease
// renewal (LeaseRequest.Traffic): its counters, cumulative since the
// sidecar started, and a summary of the registrations it serves. The
// control plane keeps the reports in memory only (docs/ctrlplane.md,
// "Traffic reports") and turns consecutive ones into rates.
type TrafficReport struct {
	// Boot identifies this run of the sidecar (random, new at every
	// start): counters of different boots are not subtracted from each
	// other. Required, at most MaxBootLen bytes.
	Boot string `json:"boot"`
	// Started is when the counters started, by the sidecar's clock.
	Started  time.Time       `json:"started,omitzero"`
	Counters TrafficCounters `json:"counters"`
	// InFlight is the deliveries in flight at the report: a gauge.
	InFlight int `json:"in_flight"`
	// Apps are the registrations on the sidecar, sorted by app; at most
	// MaxReportBindings bindings in all.
	Apps []AppBindings `json:"apps,omitempty"`
	// Rules are the routing rules' counters since the sidecar started, by
	// rule name (docs/routing.md); at most MaxReportRules.
	Rules map[string]RuleCounters `json:"rules,omitempty"`
}

// TrafficCounters are a sidecar's delivery counters (msgmesh.Stats;
// docs/http-api.md, GET /v1/stats). Kept, the broker deliveries this
// sidecar delivered itself, is FromBroker minus Forwarded.
type TrafficCounters struct {
	FromBroker   uint64 `json:"from_broker"`       // deliveries taken from the broker
	Forwarded    uint64 `json:"forwarded"`         // of those, taken by a sibling
	Fallbacks    uint64 `json:"forward_fallbacks"` // forward attempts a sibling refused or missed
	FromSiblings uint64 `json:"from_siblings"`     // deliveries taken from siblings
	// Delivered counts deliveries sent to a local app connection (from
	// the broker or from siblings); Acked, Nacked and TimedOut how they
	// ended. A delivery handed back without a verdict (its connection
	// closed) is in none of the three.
	Delivered uint64 `json:"delivered"`
	Acked     uint64 `json:"acked"`
	Nacked    uint64 `json:"nacked"`
	TimedOut  uint64 `json:"timed_out"`
	// Errors counts settles the broker refused (the message comes again)
	// and publishes that failed at the broker; Published the publishes
	// the broker acknowledged.
	Errors    uint64 `json:"errors"`
	Published uint64 `json:"published"`
}

// RuleCounters count the deliveries one routing rule matched at a sidecar
// (docs/routing.md): Matched is Applied (delivered as the rule says, to
// one of its targets) plus FellBack (none of its targets could take it;
// delivered anywhere) plus Held (none could take it; handed back to the
// broker to be offered again, fallback "hold"). A held message that comes
// back is matched again.
type RuleCounters struct {
	Matched  uint64 `json:"matched"`
	Applied  uint64 `json:"applied"`
	FellBack uint64 `json:"fell_back"`
	Held     uint64 `json:"held"`
}

// Kept is the broker deliveries the sidecar did not forward.
func (c TrafficCounters) Kept() uint64 {
	if c.Forwarded > c.FromBroker {
		return 0
	}
	return c.FromBroker - c.Forwarded
}

// AppBindings is one app's registration on a sidecar, with each topic's
// cluster as that sidecar's routes resolve it.
type AppBindings struct {
	App      string         `json:"app"`
	Produces []TopicCluster `json:"produces,omitempty"`
	Consumes []GroupBinding `json:"consumes,omitempty"`
}

// TopicCluster is a topic and the broker cluster it lives on.
type TopicCluster struct {
	Topic   string `json:"topic"`
	Cluster string `json:"cluster"`
}

// GroupBinding is a consumer group on a topic.
type GroupBinding struct {
	Group   string `json:"group"`
	Topic   string `json:"topic"`
	Cluster string `json:"cluster"`
	// Lag is the messages of the topic the group has not acked, where the
	// broker says it cheaply (NATS JetStream); absent elsewhere, and when
	// the sidecar could not ask.
	Lag *int64 `json:"lag,omitempty"`
}

// Bounds of a TrafficReport.
const (
	MaxBootLen        = 64
	MaxReportBindings = 1024
	MaxReportRules    = 256
	maxReportName     = 256
)

// Validate checks a traffic report's sizes: the control plane keeps it in
// memory, so a sidecar cannot make it hold much.
func (r *TrafficReport) Validate() error {
	if r.Boot == "" || len(r.Boot) > MaxBootLen {
		return Invalid("traffic.boot", "must be 1 to %d bytes", MaxBootLen)
	}
	if r.InFlight < 0 {
		return Invalid("traffic.in_flight", "%d is negative", r.InFlight)
	}
	n := 0
	long := func(ss ...string) bool {
		for _, s := range ss {
			if len(s) > maxReportName {
				return true
			}
		}
		return false
	}
	for _, a := range r.Apps {
		n += len(a.Produces) + len(a.Consumes) + 1
		if long(a.App) {
			return Invalid("traffic.apps", "an app name is longer than %d bytes", maxReportName)
		}
		for _, p := range a.Produces {
			if long(p.Topic, p.Cluster) {
				return Invalid("traffic.apps", "app %q: a name is longer than %d bytes", a.App, maxReportName)
			}
		}
		for _, c := range a.Consumes {
			if long(c.Group, c.Topic, c.Cluster) {
				return Invalid("traffic.apps", "app %q: a name is longer than %d bytes", a.App, maxReportName)
			}
		}
	}
	if n > MaxReportBindings {
		return Invalid("traffic.apps", "%d apps and bindings; at most %d are kept", n, MaxReportBindings)
	}
	if len(r.Rules) > MaxReportRules {
		return Invalid("traffic.rules", "%d rules; at most %d are kept", len(r.Rules), MaxReportRules)
	}
	for name := range r.Rules {
		if err := checkRuleName(name); err != nil {
			return Invalid("traffic.rules", "%v", err)
		}
	}
	return nil
}

// AppTraffic answers GET /v1/apps/{app}/traffic: per instance its recent
// traffic as the control plane replica that answers saw it reported, and
// the app's topology as its sidecars last reported it.
type AppTraffic struct {
	App string `json:"app"`
	// Window is how far back Series go, Step the shortest interval
	// between two samples, as Go durations.
	Window        string            `json:"window"`
	WindowSeconds float64           `json:"window_seconds"`
	Step          string            `json:"step"`
	Now           time.Time         `json:"now"`
	Instances     []InstanceTraffic `json:"instances"`
	Topology      []TopicView       `json:"topology"`
}

// InstanceTraffic is one instance's traffic. Instances that never sent
// a report to this replica have only ID, State and Weight.
type InstanceTraffic struct {
	ID     string `json:"id"`
	State  string `json:"state"` // Instance.State
	Weight int    `json:"weight"`
	// LastReport is when the newest report came (by the control plane's
	// clock); Boot and Started are that report's.
	LastReport time.Time `json:"last_report,omitzero"`
	Boot       string    `json:"boot,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	// Totals are the newest report's counters (since Started), InFlight
	// its gauge.
	Totals   TrafficCounters `json:"totals"`
	InFlight int             `json:"in_flight"`
	// LastMinute are the rates over the samples of the last minute; nil
	// with fewer than two samples in it.
	LastMinute *TrafficRates `json:"last_minute,omitempty"`
	// Series is one point per interval between consecutive samples,
	// oldest first, over Window.
	Series []TrafficPoint `json:"series,omitempty"`
	// Rules are the newest report's routing rule counters (since Started),
	// by rule name; absent when it had none.
	Rules map[string]RuleCounters `json:"rules,omitempty"`
}

// TrafficRates are per-second rates over an interval, with KeptShare
// the share (0..1) of the broker deliveries in it that the instance kept
// rather than forwarded (-1: none came).
type TrafficRates struct {
	Seconds      float64 `json:"seconds"`
	FromBroker   float64 `json:"from_broker"`
	Kept         float64 `json:"kept"`
	Forwarded    float64 `json:"forwarded"`
	FromSiblings float64 `json:"from_siblings"`
	Delivered    float64 `json:"delivered"`
	Acked        float64 `json:"acked"`
	Nacked       float64 `json:"nacked"`
	TimedOut     float64 `json:"timed_out"`
	Errors       float64 `json:"errors"`
	Published    float64 `json:"published"`
	KeptShare    float64 `json:"kept_share"`
}

// TrafficPoint is the rates of one interval, ending At, and the in-flight
// gauge at its end.
type TrafficPoint struct {
	At       time.Time    `json:"at"`
	Rates    TrafficRates `json:"rates"`
	InFlight int          `json:"in_flight"`
}

// TopicView is one topic of an app's topology: its cluster, and who
// produces to it and consumes from it, on the app's sidecars.
type TopicView struct {
	Topic     string         `json:"topic"`
	Cluster   string         `json:"cluster"`
	Producers []string       `json:"producers,omitempty"`
	Consumers []ConsumerView `json:"consumers,omitempty"`
	// Instances are the instances whose sidecars reported the topic.
	Instances []string `json:"instances"`
}

// ConsumerView is an app's consumer group on a topic.
type ConsumerView struct {
	App   string `json:"app"`
	Group string `json:"group"`
	// Lag is the largest lag the instances reported for the group on the
	// topic (they share the broker-side group, so they normally agree);
	// absent where the broker does not say (GroupBinding.Lag).
	Lag *int64 `json:"lag,omitempty"`
}
