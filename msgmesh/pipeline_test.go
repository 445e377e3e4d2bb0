package msgmesh_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/flowctl"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/observe"
	"github.com/msgmesh/msgmesh/pipeline"
	"github.com/msgmesh/msgmesh/schema"
)

// stageLog records, in order, the hook calls of the plugin stages of a
// test, as "<stage>.<event> <topic>[ <outcome>]".
type stageLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *stageLog) add(format string, args ...any) {
	l.mu.Lock()
	l.calls = append(l.calls, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// of returns the calls that mention topic, in order.
func (l *stageLog) of(topic string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, c := range l.calls {
		if strings.Contains(c, " "+topic) {
			out = append(out, c)
		}
	}
	return out
}

// pluginRefusal is the typed error the refusing plugin answers with: a
// wire code (codeOf reads Code) and a metrics reason (observe.ReasonOf).
type pluginRefusal struct{ topic string }

func (e *pluginRefusal) Error() string   { return "plugin refuses " + e.topic }
func (e *pluginRefusal) Code() mesh.Code { return mesh.CodeForbidden }
func (e *pluginRefusal) Reason() string  { return "forbidden" }

// recordingStage is a plugin stage that logs every publish, fetch and
// delivery it sees, and refuses publishes to one topic when told to.
type recordingStage struct {
	name   string
	log    *stageLog
	refuse string // topic whose publishes it refuses
	flow   *flowctl.Controller
}

func (s *recordingStage) OnPublish(ctx context.Context, p *pipeline.Publish) (context.Context, error) {
	s.log.add("%s.publish %s", s.name, p.Msg.Topic)
	if p.Msg.Topic == s.refuse {
		return ctx, &pluginRefusal{topic: p.Msg.Topic}
	}
	return ctx, nil
}

func (s *recordingStage) OnPublished(_ context.Context, p *pipeline.Publish) {
	outcome := "ok"
	var lim *flowctl.LimitError
	var ref *pluginRefusal
	switch {
	case errors.As(p.Err, &lim):
		outcome = "rate_limited"
	case errors.As(p.Err, &ref):
		outcome = "refused"
	case p.Err != nil:
		outcome = "err"
	}
	s.log.add("%s.published %s %s sent=%v", s.name, p.Msg.Topic, outcome, p.Sent)
}

func (s *recordingStage) OnFetch(_ context.Context, group, topic string) (pipeline.Hold, error) {
	s.log.add("%s.fetch %s", s.name, topic)
	return nil, nil
}

func (s *recordingStage) OnDeliver(d broker.Delivery, group string) broker.Delivery {
	s.log.add("%s.deliver %s", s.name, d.Message().Topic)
	return &recordedDelivery{Delivery: d, s: s, group: group}
}

// recordedDelivery logs its ack, and how many in-flight slots of its
// group flow control freed while the ack passed inward.
type recordedDelivery struct {
	broker.Delivery
	s     *recordingStage
	group string
}

func (d *recordedDelivery) Ack(ctx context.Context) error {
	topic := d.Message().Topic
	before, _ := d.s.flow.Inflight(d.group, topic)
	err := d.Delivery.Ack(ctx)
	after, _ := d.s.flow.Inflight(d.group, topic)
	d.s.log.add("%s.ack %s freed %d", d.s.name, topic, before-after)
	return err
}

// TestPipelineStageOrder: the stages meet every publish and delivery in
// the documented order (msgmesh.New): metrics, schema validation, the
// plugins of Config.Stages in their order, tracing, flow control. A plugin
// never sees a publish the schema refused; it sees the flow control's
// refusal from the inside (its after hook, nothing sent); a plugin that
// refuses stops the chain with its own typed error, which the app gets as
// its code and metrics count by its reason, and the stages after it see
// nothing. A delivery is wrapped plugin{flow control{adapter}}: the
// in-flight slot is freed inside the plugin's ack.
func TestPipelineStageOrder(t *testing.T) {
	ctx := context.Background()
	const (
		okTopic      = "pipe.ok"
		schemaTopic  = "pipe.schema"
		limitedTopic = "pipe.limited"
		refusedTopic = "pipe.refused"
	)
	flow, err := flowctl.New(flowctl.Config{
		Topics: map[string]flowctl.TopicLimits{limitedTopic: {PublishRate: 1, Burst: 1, OnLimit: flowctl.OnLimitReject}},
		Groups: map[string]flowctl.GroupLimits{"g1": {MaxInflight: 4}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tel, err := observe.New(ctx, observe.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	log := &stageLog{}
	first := &recordingStage{name: "first", log: log, flow: flow}
	refuser := &recordingStage{name: "refuser", log: log, refuse: refusedTopic, flow: flow}
	last := &recordingStage{name: "last", log: log, flow: flow}
	e := newEnv(t, func(c *msgmesh.Config) {
		c.Flow, c.Telemetry = flow, tel
		c.Stages = []pipeline.Stage{first, refuser, last}
	})
	reg, err := schema.New(ctx, schema.NewMemoryStore(), schema.RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Register(ctx, schemaTopic, orderV1); err != nil {
		t.Fatal(err)
	}
	ts, err := reg.TopicSchemas(schemaTopic)
	if err != nil {
		t.Fatal(err)
	}
	e.sc.SetSchemas(map[string]msgmesh.TopicSchema{schemaTopic: {Schemas: ts, Policy: schema.PolicyEnforce}})
	e.register("orders", []string{"p1:" + okTopic, "p1:" + schemaTopic, "p1:" + limitedTopic, "p1:" + refusedTopic},
		[]string{"g1:" + okTopic})

	c := e.dial()
	publish := func(topic, body string) error {
		_, err := c.Publish(ctx, &client.Message{Topic: topic, Body: []byte(body)})
		return err
	}
	if err := publish(okTopic, "m1"); err != nil {
		t.Fatalf("publish through every stage: %v", err)
	}
	if err := publish(schemaTopic, "not an order"); client.CodeOf(err) != mesh.CodeSchemaInvalid {
		t.Fatalf("publish the schema refuses: %v, want SCHEMA_INVALID", err)
	}
	if err := publish(limitedTopic, "1"); err != nil {
		t.Fatalf("first publish within the rate: %v", err)
	}
	if err := publish(limitedTopic, "2"); client.CodeOf(err) != mesh.CodeRateLimited {
		t.Fatalf("publish over the rate: %v, want RATE_LIMITED", err)
	}
	err = publish(refusedTopic, "x")
	if client.CodeOf(err) != mesh.CodeForbidden || !strings.Contains(err.Error(), "plugin refuses "+refusedTopic) {
		t.Fatalf("publish a plugin refuses: %v, want FORBIDDEN with the plugin's message", err)
	}

	for _, tc := range []struct {
		topic string
		want  []string
	}{
		{okTopic, []string{ // every plugin in order, then back out once the broker answered
			"first.publish", "refuser.publish", "last.publish",
			"last.published ok sent=true", "refuser.published ok sent=true", "first.published ok sent=true"}},
		{schemaTopic, nil}, // schema validation comes before the plugins
		{limitedTopic, []string{
			"first.publish", "refuser.publish", "last.publish",
			"last.published ok sent=true", "refuser.published ok sent=true", "first.published ok sent=true",
			// flow control comes after the plugins: they see its refusal
			"first.publish", "refuser.publish", "last.publish",
			"last.published rate_limited sent=false", "refuser.published rate_limited sent=false", "first.published rate_limited sent=false"}},
		{refusedTopic, []string{ // the refusal stops the chain; only the stage before it hears of it
			"first.publish", "refuser.publish", "first.published refused sent=false"}},
	} {
		var got []string
		for _, call := range log.of(tc.topic) {
			got = append(got, strings.Replace(call, " "+tc.topic, "", 1))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: stage calls\n  %q\nwant\n  %q", tc.topic, got, tc.want)
		}
	}

	// Metrics are outermost: they count the refusals of every later stage.
	m := scrape(t, e.http)
	for series, want := range map[string]int{
		fmt.Sprintf(`msgmesh_messages_in_total{topic=%q}`, okTopic):                          1,
		fmt.Sprintf(`msgmesh_rejected_total{reason="schema_invalid",topic=%q}`, schemaTopic): 1,
		fmt.Sprintf(`msgmesh_rejected_total{reason="rate_limited",topic=%q}`, limitedTopic):  1,
		fmt.Sprintf(`msgmesh_rejected_total{reason="forbidden",topic=%q}`, refusedTopic):     1,
	} {
		if m[series] != want {
			t.Errorf("%s = %d, want %d", series, m[series], want)
		}
	}

	// Deliveries: every plugin's fetch hook runs before a message is
	// taken, and its wrapper is outside flow control's: the group's slot
	// is still held when the ack enters the plugin and free when it
	// comes back out.
	got := sidecartest.NewTally()
	sidecartest.Subscribe(t, e.dial(), "g1", okTopic, "c", got)
	sidecartest.WaitFor(t, 10*time.Second, "the delivery to be acked through the stages", func() bool {
		acks := 0
		for _, call := range log.of(okTopic) {
			if strings.Contains(call, ".ack ") {
				acks++
			}
		}
		return got.Count() == 1 && acks == 3
	})
	var deliveries []string
	for _, call := range log.of(okTopic)[6:] {
		deliveries = append(deliveries, strings.Replace(call, " "+okTopic, "", 1))
	}
	fetches := 0
	for fetches < len(deliveries) && strings.HasSuffix(deliveries[fetches], ".fetch") {
		fetches++
	}
	if fetches < 3 || fetches%3 != 0 || !slices.Equal(deliveries[:3], []string{"first.fetch", "refuser.fetch", "last.fetch"}) {
		t.Fatalf("fetch hooks: %q, want first, refuser, last before each broker read", deliveries)
	}
	rest := slices.DeleteFunc(deliveries[fetches:], func(s string) bool { return strings.HasSuffix(s, ".fetch") })
	want := []string{"last.deliver", "refuser.deliver", "first.deliver", // the first stage's wrapper is outermost
		"last.ack freed 1", "refuser.ack freed 1", "first.ack freed 1"}
	if !slices.Equal(rest, want) {
		t.Fatalf("delivery hooks: %q, want %q", rest, want)
	}
}
