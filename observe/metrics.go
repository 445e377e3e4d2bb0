package observe

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Label keys of the sidecar's metrics.
const (
	LabelTopic   = attribute.Key("topic")
	LabelGroup   = attribute.Key("group")
	LabelCluster = attribute.Key("cluster")
	LabelReason  = attribute.Key("reason")
	LabelOutcome = attribute.Key("outcome")
	LabelRule    = attribute.Key("rule")
)

// Outcomes of a routing rule's decision (label outcome of
// msgmesh_routing_total, docs/routing.md): every delivery a rule matched
// counts "matched", and then "applied" (delivered as the rule says: to one
// of its targets), "fallback" (none of its targets could take it;
// delivered anywhere) or "held" (none could; handed back to the broker to
// be offered again).
const (
	RoutingMatched  = "matched"
	RoutingApplied  = "applied"
	RoutingFallback = "fallback"
	RoutingHeld     = "held"
)

// Settle outcomes of a delivery (label outcome of
// msgmesh_deliveries_settled_total).
const (
	OutcomeAck     = "ack"
	OutcomeNack    = "nack"
	OutcomeTimeout = "timeout"
	// OutcomeDeadLetter: the delivery's last allowed attempt failed and
	// the sidecar moved the message to its dead-letter topic.
	OutcomeDeadLetter = "dead_letter"
	// OutcomeHandedOver: a hot upgrade passed the delivery, unanswered,
	// to the successor process, which settles it (broker.Detacher).
	OutcomeHandedOver = "handed_over"
)

// LatencyBuckets are the bucket bounds, in seconds, of the publish and
// delivery latency histograms: 100µs to 30s.
var LatencyBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
	0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
}

// Metrics are the sidecar's instruments, created once. Every method is safe
// for concurrent use and records with pre-built attribute sets, so it
// allocates nothing once a label set has been seen. A nil *Metrics records
// nothing, so code paths can call it unconditionally.
//
// Label values must come from registrations and configuration, never from
// free input: pass only registered topics and groups, configured clusters,
// and the fixed reason and outcome words documented on each method. As a
// second guard each instrument family keeps at most WithMaxSeries distinct
// label sets (default 1000) and folds further values into "other".
//
// The instruments, with their Prometheus names (as served by
// Telemetry.MetricsHandler):
//
//	msgmesh_messages_in_total{topic}               publishes the broker acknowledged
//	msgmesh_in_bytes_total{topic}                  their body bytes
//	msgmesh_publish_duration_seconds{topic}        app PUBLISH read → broker ack, acknowledged publishes
//	msgmesh_publish_errors_total{topic}            publishes the broker failed (not acknowledged)
//	msgmesh_rejected_total{topic,reason}           publishes refused before the broker (size, rate, breaker, ...)
//	msgmesh_messages_out_total{topic,group}        deliveries handed to apps (push or pull)
//	msgmesh_out_bytes_total{topic,group}           their body bytes
//	msgmesh_delivery_duration_seconds{topic,group} delivery handed over → settled (ack, nack or timeout)
//	msgmesh_deliveries_inflight{topic,group}       deliveries handed over and not settled yet
//	msgmesh_deliveries_settled_total{topic,group,outcome}  outcome: ack, nack, timeout, dead_letter
//	msgmesh_redelivered_total{topic,group}         deliveries the broker had delivered before
//	msgmesh_forwarded_total{topic,group,outcome}   deliveries forwarded to a sibling, by outcome
//	msgmesh_pushed_total{topic,group,outcome}      POSTs of HTTP push subscriptions, by outcome
//	msgmesh_routing_total{rule,outcome}            deliveries a routing rule matched: matched, applied, fallback, held
//	msgmesh_broker_errors_total{cluster}           failed broker calls
//	msgmesh_apps_connected                         app connections open now
//	msgmesh_ready                                  1 when the sidecar is ready, else 0 (SetHealthSource)
//	msgmesh_broker_up{cluster}                     1 when the cluster passed its last check, else 0
//	msgmesh_upstream_ready{topic,group}            1 when the upstream consumer runs and is ready, else 0
//
// The four recorded for every delivery (messages out, bytes out, in flight,
// settled) and the two counters of every publish (messages in, bytes in)
// are observable instruments whose values the sidecar keeps in atomic
// counters by label set and reports at each collection (family.counted):
// the same metrics, series and values, read at a collection, as the
// synchronous instruments they were, for a tenth of the CPU per recording.
// (The publish latency stays a histogram the SDK records.)
type Metrics struct {
	messagesIn   metric.Int64ObservableCounter
	bytesIn      metric.Int64ObservableCounter
	publishDur   metric.Float64Histogram
	publishErrs  metric.Int64Counter
	rejected     metric.Int64Counter
	messagesOut  metric.Int64ObservableCounter
	bytesOut     metric.Int64ObservableCounter
	deliveryDur  metric.Float64Histogram
	inflight     metric.Int64ObservableUpDownCounter
	settled      metric.Int64ObservableCounter
	redelivered  metric.Int64Counter
	forwarded    metric.Int64Counter
	pushed       metric.Int64Counter
	routed       metric.Int64Counter
	brokerErrors metric.Int64Counter
	connected    metric.Int64Gauge
	health       health // health.go

	byTopic   *family // topic
	byGroup   *family // topic, group
	bySettle  *family // topic, group, outcome
	byForward *family // topic, group, outcome
	byPush    *family // topic, group, outcome
	byReject  *family // topic, reason
	byCluster *family // cluster
	byRule    *family // rule, outcome
}

// MetricsOption configures NewMetrics.
type MetricsOption interface{ apply(*metricsConfig) }

type metricsConfig struct{ maxSeries int }

type metricsOptionFunc func(*metricsConfig)

func (f metricsOptionFunc) apply(c *metricsConfig) { f(c) }

// WithMaxSeries caps the distinct label sets each instrument family keeps;
// label values past it are recorded as "other". Default DefaultMaxSeries
// (1000). It must be at least 1.
func WithMaxSeries(n int) MetricsOption {
	return metricsOptionFunc(func(c *metricsConfig) { c.maxSeries = n })
}

// NewMetrics creates the sidecar's instruments on m.
func NewMetrics(m metric.Meter, opts ...MetricsOption) (*Metrics, error) {
	cfg := metricsConfig{maxSeries: DefaultMaxSeries}
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.maxSeries < 1 {
		return nil, fmt.Errorf("observe: WithMaxSeries(%d): must be at least 1", cfg.maxSeries)
	}
	var (
		x    Metrics
		errs []error
	)
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	counted := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	histogram := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(LatencyBuckets...))
		errs = append(errs, err)
		return h
	}
	x.messagesIn = counted("msgmesh.messages.in", "{message}", "Messages published by apps and acknowledged by the broker.")
	x.bytesIn = counted("msgmesh.in", "By", "Body bytes of messages published by apps and acknowledged by the broker.")
	x.publishDur = histogram("msgmesh.publish.duration", "Time from reading an app's publish to the broker's acknowledgement.")
	x.publishErrs = counter("msgmesh.publish.errors", "{message}", "Publishes the broker failed or did not acknowledge in time.")
	x.rejected = counter("msgmesh.rejected", "{message}", "Publishes the sidecar refused before sending them to the broker, by reason.")
	x.messagesOut = counted("msgmesh.messages.out", "{message}", "Deliveries handed to apps, pushed or pulled.")
	x.bytesOut = counted("msgmesh.out", "By", "Body bytes of deliveries handed to apps.")
	x.deliveryDur = histogram("msgmesh.delivery.duration", "Time from handing a delivery over to its settlement (ack, nack or timeout).")
	var err error
	x.inflight, err = m.Int64ObservableUpDownCounter("msgmesh.deliveries.inflight", metric.WithUnit("{delivery}"),
		metric.WithDescription("Deliveries handed over and not settled yet."))
	errs = append(errs, err)
	x.settled = counted("msgmesh.deliveries.settled", "{delivery}", "Deliveries settled, by outcome: ack, nack or timeout.")
	x.redelivered = counter("msgmesh.redelivered", "{delivery}", "Deliveries of messages the broker had delivered before.")
	x.forwarded = counter("msgmesh.forwarded", "{delivery}", "Deliveries forwarded to a sibling sidecar, by outcome.")
	x.pushed = counter("msgmesh.pushed", "{request}", "POSTs of HTTP push subscriptions, by outcome.")
	x.routed = counter("msgmesh.routing", "{delivery}", "Deliveries a routing rule matched, by rule and outcome: matched, then applied or fallback.")
	x.brokerErrors = counter("msgmesh.broker.errors", "{error}", "Failed calls to a broker cluster.")
	x.connected, err = m.Int64Gauge("msgmesh.apps.connected", metric.WithUnit("{connection}"),
		metric.WithDescription("App connections open now."))
	errs = append(errs, err)
	errs = append(errs, x.newHealth(m))
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("observe: creating instruments: %w", err)
	}
	n := cfg.maxSeries
	x.byTopic = newFamily(n, LabelTopic)
	x.byTopic.counted = []metric.Int64Observable{countIn: x.messagesIn, countInBytes: x.bytesIn}
	x.byGroup = newFamily(n, LabelTopic, LabelGroup)
	x.byGroup.counted = []metric.Int64Observable{countOut: x.messagesOut, countOutBytes: x.bytesOut, countInflight: x.inflight}
	x.bySettle = newFamily(n, LabelTopic, LabelGroup, LabelOutcome).enumerated(LabelOutcome)
	x.bySettle.counted = []metric.Int64Observable{countSettled: x.settled}
	x.byForward = newFamily(n, LabelTopic, LabelGroup, LabelOutcome).enumerated(LabelOutcome)
	x.byPush = newFamily(n, LabelTopic, LabelGroup, LabelOutcome).enumerated(LabelOutcome)
	x.byReject = newFamily(n, LabelTopic, LabelReason).enumerated(LabelReason)
	x.byCluster = newFamily(n, LabelCluster)
	x.byRule = newFamily(n, LabelRule, LabelOutcome).enumerated(LabelOutcome)
	if _, err := m.RegisterCallback(x.observeCounts, x.messagesIn, x.bytesIn, x.messagesOut, x.bytesOut, x.inflight, x.settled); err != nil {
		return nil, fmt.Errorf("observe: registering the publish and delivery counters: %w", err)
	}
	return &x, nil
}

// The counted instruments of byTopic, byGroup and bySettle
// (family.counted).
const (
	countIn       = 0 // byTopic: messagesIn
	countInBytes  = 1 // byTopic: bytesIn
	countOut      = 0 // byGroup: messagesOut
	countOutBytes = 1 // byGroup: bytesOut
	countInflight = 2 // byGroup: inflight
	countSettled  = 0 // bySettle: settled
)

// observeCounts reports the counted instruments at a collection.
func (m *Metrics) observeCounts(_ context.Context, o metric.Observer) error {
	m.byTopic.observe(o)
	m.byGroup.observe(o)
	m.bySettle.observe(o)
	return nil
}

// Published records the outcome of one publish of bytes body bytes that
// took d from reading the app's request to the broker's answer. err nil:
// messages in, bytes in and the latency histogram. An err that says why the
// sidecar refused the publish (a Reason() string method, as the flowctl
// errors have): msgmesh_rejected_total with that reason. Any other err: a
// broker failure, msgmesh_publish_errors_total (call BrokerError too, with
// the cluster).
func (m *Metrics) Published(ctx context.Context, topic string, bytes int, d time.Duration, err error) {
	if m == nil {
		return
	}
	if err != nil {
		if reason := ReasonOf(err); reason != "" {
			m.Rejected(ctx, topic, reason)
			return
		}
		m.publishErrs.Add(ctx, 1, m.byTopic.get(labels{topic}).add...)
		return
	}
	o := m.byTopic.get(labels{topic})
	o.count(countIn, 1)
	o.count(countInBytes, int64(bytes))
	m.publishDur.Record(ctx, d.Seconds(), o.rec...)
}

// Rejected counts a publish refused before it reached the broker. reason is
// a short fixed word: the flowctl reasons ("rate_limited",
// "message_too_big", "breaker_open") or the sidecar's own checks
// ("not_registered", "forbidden", "unauthorized", "schema_invalid",
// "invalid", "shutting_down"). Pass topic "" when the topic is not
// registered (so free input never becomes a label).
func (m *Metrics) Rejected(ctx context.Context, topic, reason string) {
	if m == nil {
		return
	}
	m.rejected.Add(ctx, 1, m.byReject.get(labels{topic, reason}).add...)
}

// Delivered counts a delivery of bytes body bytes handed to an app (pushed,
// or put in a PULL answer).
func (m *Metrics) Delivered(ctx context.Context, topic, group string, bytes int) {
	if m == nil {
		return
	}
	m.byGroup.get(labels{topic, group}).delivered(bytes)
}

// delivered counts one delivery of bytes body bytes of o's (topic, group).
func (o *seriesOpts) delivered(bytes int) {
	o.count(countOut, 1)
	o.count(countOutBytes, int64(bytes))
}

// Acked counts a delivery the app acked.
func (m *Metrics) Acked(ctx context.Context, topic, group string) {
	m.Settled(ctx, topic, group, OutcomeAck)
}

// Nacked counts a delivery the app nacked (or could not take).
func (m *Metrics) Nacked(ctx context.Context, topic, group string) {
	m.Settled(ctx, topic, group, OutcomeNack)
}

// TimedOut counts a delivery the app did not answer in time, handed back to
// the broker.
func (m *Metrics) TimedOut(ctx context.Context, topic, group string) {
	m.Settled(ctx, topic, group, OutcomeTimeout)
}

// Settled counts a settled delivery; outcome is OutcomeAck, OutcomeNack,
// OutcomeTimeout or OutcomeDeadLetter.
func (m *Metrics) Settled(ctx context.Context, topic, group, outcome string) {
	if m == nil {
		return
	}
	m.bySettle.get(labels{topic, group, outcome}).count(countSettled, 1)
}

// Redelivered counts a delivery of a message the broker had delivered
// before (broker.Delivery.Redelivered() > 0).
func (m *Metrics) Redelivered(ctx context.Context, topic, group string) {
	if m == nil {
		return
	}
	m.redelivered.Add(ctx, 1, m.byGroup.get(labels{topic, group}).add...)
}

// DeliveryLatency records the time from handing a delivery over to its
// settlement.
func (m *Metrics) DeliveryLatency(ctx context.Context, topic, group string, d time.Duration) {
	if m == nil {
		return
	}
	m.deliveryDur.Record(ctx, d.Seconds(), m.byGroup.get(labels{topic, group}).rec...)
}

// InflightAdd adds n (negative to remove) to the deliveries in flight of
// (topic, group).
func (m *Metrics) InflightAdd(topic, group string, n int) {
	if m == nil {
		return
	}
	m.byGroup.get(labels{topic, group}).count(countInflight, int64(n))
}

// Forwarded counts a delivery forwarded to a sibling sidecar. outcome is a
// fixed word; suggested: "ack" and "nack" (the sibling's app answered),
// "lost" (connection or timeout: handed back to the broker), "refused" and
// "unavailable" (Forward failed; delivered locally instead).
func (m *Metrics) Forwarded(ctx context.Context, topic, group, outcome string) {
	if m == nil {
		return
	}
	m.forwarded.Add(ctx, 1, m.byForward.get(labels{topic, group, outcome}).add...)
}

// Pushed counts one POST of an HTTP push subscription. outcome is a fixed
// word: "ack" (2xx), "retry_after" (429 or 503 with Retry-After), "status"
// (another answer), "timeout", "error" (connection failed), "lost" (the
// delivery was no longer in flight to be answered).
func (m *Metrics) Pushed(ctx context.Context, topic, group, outcome string) {
	if m == nil {
		return
	}
	m.pushed.Add(ctx, 1, m.byPush.get(labels{topic, group, outcome}).add...)
}

// Routed counts a delivery a routing rule matched: "matched", and outcome
// (RoutingApplied, RoutingFallback or RoutingHeld).
func (m *Metrics) Routed(ctx context.Context, rule, outcome string) {
	if m == nil {
		return
	}
	m.routed.Add(ctx, 1, m.byRule.get(labels{rule, RoutingMatched}).add...)
	m.routed.Add(ctx, 1, m.byRule.get(labels{rule, outcome}).add...)
}

// BrokerError counts a failed call to the broker cluster (publish, consume,
// ack or nack).
func (m *Metrics) BrokerError(ctx context.Context, cluster string) {
	if m == nil {
		return
	}
	m.brokerErrors.Add(ctx, 1, m.byCluster.get(labels{cluster}).add...)
}

// ConnectedApps records how many app connections are open now.
func (m *Metrics) ConnectedApps(n int) {
	if m == nil {
		return
	}
	m.connected.Record(context.Background(), int64(n))
}

// ReasonOf returns the rejection reason err carries (its own or a wrapped
// error's Reason() string method), or "" when it carries none.
func ReasonOf(err error) string {
	var r interface{ Reason() string }
	if errors.As(err, &r) {
		return r.Reason()
	}
	return ""
}

// TopicRejectReasons are the reasons a publish to a registered topic can
// be refused for (label reason of msgmesh_rejected_total), the series
// Known creates for each produced topic.
var TopicRejectReasons = []string{"message_too_big", "invalid_header", "schema_invalid", "rate_limited", "breaker_open"}

// Known creates, at zero, the series of what the sidecar knows exists, so
// that a rate() or increase() over an error counter reads 0 on a healthy
// sidecar instead of nothing (an alert on "no data" would fire, or never
// fire): for each produced topic its publishes, publish errors and
// rejections (TopicRejectReasons); for each consumed (topic, group) its
// deliveries, every settle outcome and redeliveries; for each cluster its
// broker errors. Series already counting are left as they are (adding 0
// changes nothing). The sidecar calls it whenever the registrations change.
func (m *Metrics) Known(produced []string, consumed [][2]string, clusters []string) {
	if m == nil {
		return
	}
	ctx := context.Background()
	for _, topic := range produced {
		o := m.byTopic.get(labels{topic})
		o.count(countIn, 0)
		o.count(countInBytes, 0)
		m.publishErrs.Add(ctx, 0, o.add...)
		for _, reason := range TopicRejectReasons {
			m.rejected.Add(ctx, 0, m.byReject.get(labels{topic, reason}).add...)
		}
	}
	for _, tg := range consumed {
		o := m.byGroup.get(labels{tg[0], tg[1]})
		o.count(countOut, 0)
		o.count(countOutBytes, 0)
		m.redelivered.Add(ctx, 0, o.add...)
		o.count(countInflight, 0)
		for _, outcome := range []string{OutcomeAck, OutcomeNack, OutcomeTimeout, OutcomeDeadLetter} {
			m.bySettle.get(labels{tg[0], tg[1], outcome}).count(countSettled, 0)
		}
	}
	for _, c := range clusters {
		m.brokerErrors.Add(ctx, 0, m.byCluster.get(labels{c}).add...)
	}
}
