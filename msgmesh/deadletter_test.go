package msgmesh_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// dlqTopic is the default dead-letter topic of group g1 on topic.
var dlqTopic = registry.DefaultDeadLetterTopic("g1", topic)

// deadWatch is how long the dead-letter cases watch for a delivery that
// must not come (a redelivery of a dead-lettered message, a dead letter of
// a message that was acked). Absence can only be watched for a while; it
// is longer than the slowest broker's shortest redelivery delay
// (RocketMQ's 1 s level).
const deadWatch = 1500 * time.Millisecond

// attempt is one delivery a test handler saw.
type attempt struct {
	body        string
	redelivered int
	messageID   string
}

// recorder records deliveries, in order.
type recorder struct {
	mu   sync.Mutex
	seen []attempt
	dead []*client.Delivery
}

func (r *recorder) add(d *client.Delivery) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, attempt{body: string(d.Body), redelivered: d.Redelivered, messageID: d.MessageID})
	n := 0
	for _, a := range r.seen {
		if a.body == string(d.Body) {
			n++
		}
	}
	return n
}

func (r *recorder) of(body string) []attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []attempt
	for _, a := range r.seen {
		if a.body == body {
			out = append(out, a)
		}
	}
	return out
}

func (r *recorder) addDead(d *client.Delivery) {
	r.mu.Lock()
	r.dead = append(r.dead, d)
	r.mu.Unlock()
}

func (r *recorder) deadCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.dead)
}

// watchDLQ registers app "ops" consuming the dead-letter topic with group
// "audit" and records what arrives there.
func watchDLQ(t *testing.T, e *env, rec *recorder) {
	t.Helper()
	e.register("ops", nil, []string{"audit:" + dlqTopic})
	if _, err := e.dial(client.WithApp("ops")).Subscribe(context.Background(), "audit", dlqTopic, func(_ context.Context, d *client.Delivery) error {
		rec.addDead(d)
		return nil
	}); err != nil {
		t.Fatalf("subscribe to the dead-letter topic: %v", err)
	}
}

// firstDead is the first message the dead-letter consumer got.
func (r *recorder) firstDead() *client.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dead[0]
}

// wantHeaders fails unless d has each header of want (names compared
// without case) with its value.
func wantHeaders(t *testing.T, d *client.Delivery, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got, ok := header(d, k); !ok || got != v {
			t.Errorf("dead letter header %s = %q (present %v), want %q; headers %v", k, got, ok, v, d.Headers)
		}
	}
}

func header(d *client.Delivery, name string) (string, bool) {
	for _, h := range d.Headers {
		if strings.EqualFold(h.Key, name) {
			return h.Value, true
		}
	}
	return "", false
}

// contractDeadLetter: a message the app always nacks is delivered exactly
// max_attempts (3) times, with the attempt count visible on each delivery,
// then appears once on the dead-letter topic with its key, headers and body
// and the sidecar's headers, and is not delivered again; a message acked on
// its second attempt is not dead-lettered.
func contractDeadLetter(t *testing.T, kit sidecartest.BrokerKit) {
	e := newEnvOn(t, kit.Start(t))
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic + ",max_attempts=3"})
	rec, dead := &recorder{}, &recorder{}
	watchDLQ(t, e, dead)
	if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		n := rec.add(d)
		switch body := string(d.Body); {
		case body == "poison":
			return errors.New("cannot process this one")
		case body == "flaky" && n == 1:
			return errors.New("not yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pub := e.dial()
	ctx := context.Background()
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Key: "k1", Body: []byte("poison"),
		Headers: []mesh.HeaderField{{Key: "Tenant", Value: "acme"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Key: "k2", Body: []byte("flaky")}); err != nil {
		t.Fatal(err)
	}
	sidecartest.WaitFor(t, 90*time.Second, "the poison message on the dead-letter topic", func() bool { return dead.deadCount() >= 1 })
	sidecartest.WaitFor(t, 60*time.Second, "the flaky message to be acked on its second attempt", func() bool { return len(rec.of("flaky")) >= 2 })

	// Nothing more comes: no redelivery of the dead-lettered original, no
	// dead letter for the acked one, and no second copy.
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	sidecartest.WaitFor(t, 60*time.Second, "a message published afterwards", func() bool { return len(rec.of("after")) == 1 })
	for end := time.Now().Add(deadWatch); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if n := len(rec.of("poison")); n != 3 {
			t.Fatalf("the poison message was delivered %d times, want exactly 3 (max_attempts)", n)
		}
		if n := dead.deadCount(); n != 1 {
			t.Fatalf("%d messages on the dead-letter topic, want exactly the poison one", n)
		}
	}
	if n := len(rec.of("flaky")); n != 2 {
		t.Fatalf("the flaky message was delivered %d times, want 2 (acked on the second)", n)
	}

	poison := rec.of("poison")
	for i, a := range poison {
		if a.redelivered != i {
			t.Errorf("attempt %d of the poison message had redelivered=%d, want %d (attempts = redelivered + 1)", i+1, a.redelivered, i)
		}
	}
	d := dead.firstDead()
	if string(d.Body) != "poison" || d.Key != "k1" {
		t.Fatalf("dead letter body %q key %q, want poison and k1", d.Body, d.Key)
	}
	wantHeaders(t, d, map[string]string{
		"Tenant":                       "acme",
		mesh.HeaderDeadLetterTopic:     topic,
		mesh.HeaderDeadLetterGroup:     "g1",
		mesh.HeaderDeadLetterMessageID: poison[0].messageID,
		mesh.HeaderDeadLetterAttempts:  "3",
		mesh.HeaderDeadLetterReason:    mesh.DeadLetterNack,
	})
	at, _ := header(d, mesh.HeaderDeadLetterTime)
	if ts, err := time.Parse(time.RFC3339Nano, at); err != nil || time.Since(ts) > time.Hour || time.Since(ts) < 0 {
		t.Errorf("dead letter header %s = %q: want the time of the move", mesh.HeaderDeadLetterTime, at)
	}
}

// contractDeadLetterTimeout: an attempt the app lets time out counts like a
// nack; the dead letter says "timeout".
func contractDeadLetterTimeout(t *testing.T, kit sidecartest.BrokerKit) {
	e := newEnvOn(t, kit.Start(t), func(c *msgmesh.Config) { c.DeliveryTimeout = 300 * time.Millisecond })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic + ",max_attempts=2"})
	dead := &recorder{}
	watchDLQ(t, e, dead)
	if _, err := e.dial().Publish(context.Background(), &client.Message{Topic: topic, Body: []byte("slow")}); err != nil {
		t.Fatal(err)
	}
	// Pull and never answer: each delivery times out at the sidecar.
	app := e.dial()
	var got []attempt
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(90*time.Second))
	defer cancel()
	for dead.deadCount() == 0 && ctx.Err() == nil {
		pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		ds, err := app.Pull(pctx, "g1", topic, 10)
		pcancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("pull: %v", err)
		}
		for _, d := range ds {
			got = append(got, attempt{body: string(d.Body), redelivered: d.Redelivered})
		}
	}
	sidecartest.WaitFor(t, 30*time.Second, "the timed-out message on the dead-letter topic", func() bool { return dead.deadCount() == 1 })
	if len(got) != 2 || got[0].redelivered != 0 || got[1].redelivered != 1 {
		t.Fatalf("deliveries %+v, want exactly two (redelivered 0 then 1)", got)
	}
	wantHeaders(t, dead.firstDead(), map[string]string{mesh.HeaderDeadLetterReason: mesh.DeadLetterTimeout, mesh.HeaderDeadLetterAttempts: "2"})
}

// contractDeadLetterLostAttempt: when the connection of the last allowed
// attempt drops before the app answers, the message goes back to the
// broker, and the sidecar dead-letters it when the broker offers it again,
// without a further delivery ("redelivered"): another app connection of
// the group, which keeps the route open (the sidecar reads the broker only
// while some connection has room), never sees it.
func contractDeadLetterLostAttempt(t *testing.T, kit sidecartest.BrokerKit) {
	e := newEnvOn(t, kit.Start(t))
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic + ",max_attempts=2"})
	dead := &recorder{}
	watchDLQ(t, e, dead)
	raw := dialRaw(t, e.addr)
	raw.hello(mesh.Subscription{Group: "g1", Topic: topic, Mode: mesh.ModePush})
	if _, err := e.dial().Publish(context.Background(), &client.Message{Topic: topic, Body: []byte("crasher")}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		f := raw.read()
		for f.Kind != mesh.KindDeliver {
			f = raw.read()
		}
		var m mesh.Message
		if err := m.Decode(f.Payload); err != nil {
			t.Fatal(err)
		}
		if int(m.Redelivered) != i {
			t.Fatalf("delivery %d has redelivered=%d", i+1, m.Redelivered)
		}
		if i == 0 {
			raw.send(mesh.KindNack, mesh.FlagResponse, f.ID, &mesh.Nack{})
		}
	}
	other := &recorder{}
	if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		other.add(d)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_ = raw.c.Close() // the app "crashes" holding its last allowed attempt
	sidecartest.WaitFor(t, 90*time.Second, "the message on the dead-letter topic", func() bool { return dead.deadCount() == 1 })
	wantHeaders(t, dead.firstDead(), map[string]string{mesh.HeaderDeadLetterReason: mesh.DeadLetterRedelivered, mesh.HeaderDeadLetterAttempts: "2"})
	if got := other.of("crasher"); len(got) != 0 {
		t.Errorf("the group's other connection got the message after its last attempt: %+v", got)
	}
}

// contractNackDelayBounded: a NACK asking for 2^32-1 ms is redelivered
// within the sidecar's MaxNackDelay, on every broker.
func contractNackDelayBounded(t *testing.T, kit sidecartest.BrokerKit) {
	e := newEnvOn(t, kit.Start(t), func(c *msgmesh.Config) { c.MaxNackDelay = time.Second })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	rec := &recorder{}
	if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		if rec.add(d) == 1 {
			return &client.RetryAfter{Delay: math.MaxUint32 * time.Millisecond}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dial().Publish(context.Background(), &client.Message{Topic: topic, Body: []byte("later")}); err != nil {
		t.Fatal(err)
	}
	// Without the bound this waits 49.7 days (2 h on RocketMQ, its
	// longest level).
	sidecartest.WaitFor(t, 60*time.Second, "the message nacked with a 2^32-1 ms delay to come back", func() bool { return len(rec.of("later")) == 2 })
}

// TestDeadLetterPolicyPerGroup: a (group, topic) has one dead-letter
// policy whichever app registers it; GET /v1/upstreams shows the
// effective one.
func TestDeadLetterPolicyPerGroup(t *testing.T) {
	e := newEnv(t)
	e.register("a1", nil, []string{"g:t,max_attempts=3"})
	status, body := sidecartest.Register(t, e.http, "a2", nil, []string{"g:t,max_attempts=5"})
	var eb struct{ Error, Message string }
	_ = json.Unmarshal([]byte(body), &eb)
	if status != http.StatusBadRequest || eb.Error != "INVALID" || !strings.Contains(eb.Message, `"a1"`) || !strings.Contains(eb.Message, "max_attempts 3") {
		t.Fatalf("a second app registering g:t with another policy: %d %s; want 400 INVALID naming a1 and its max_attempts", status, body)
	}
	e.register("a2", nil, []string{"g:t,max_attempts=3,dead_letter_topic=" + registry.DefaultDeadLetterTopic("g", "t")})
	// The sidecar default (10) written out equals leaving it out.
	e.register("a3", nil, []string{"g2:t"})
	e.register("a4", nil, []string{"g2:t,max_attempts=10"})
	if status, body := sidecartest.Register(t, e.http, "a1", nil, []string{"g:t,max_attempts=4"}); status != http.StatusBadRequest {
		t.Fatalf("a1 changing the policy a2 shares: %d %s; want 400", status, body)
	}

	status, body = sidecartest.HTTPDo(t, http.MethodGet, "http://"+e.http+"/v1/upstreams", "", nil)
	var ups []struct {
		Group, Topic    string
		MaxAttempts     int    `json:"max_attempts"`
		DeadLetterTopic string `json:"dead_letter_topic"`
	}
	if err := json.Unmarshal([]byte(body), &ups); status != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/upstreams: %d %s %v", status, body, err)
	}
	want := map[string]string{"g": "3 t.g.dlq", "g2": "10 t.g2.dlq"}
	for _, u := range ups {
		if got := strconv.Itoa(u.MaxAttempts) + " " + u.DeadLetterTopic; got != want[u.Group] {
			t.Errorf("upstream %s:%s policy %q, want %q", u.Group, u.Topic, got, want[u.Group])
		}
		delete(want, u.Group)
	}
	if len(want) != 0 {
		t.Errorf("upstreams missing: %v (got %+v)", want, ups)
	}
}

// TestRocketMQReconsumeLimitAboveSidecar: RocketMQ's own dead-letter
// queue must never take a message before the sidecar's policy would.
func TestRocketMQReconsumeLimitAboveSidecar(t *testing.T) {
	if rocketmqbroker.MaxReconsumeTimes <= registry.MaxAttemptsLimit {
		t.Fatalf("rocketmqbroker.MaxReconsumeTimes %d is not above registry.MaxAttemptsLimit %d",
			rocketmqbroker.MaxReconsumeTimes, registry.MaxAttemptsLimit)
	}
}

// TestDeadLetterTwice: a dead letter that its own consumer gives up on
// moves on to that group's dead-letter topic, with the sidecar's headers
// describing the latest move only (replaced, not repeated), and the app's
// headers kept.
func TestDeadLetterTwice(t *testing.T) {
	e := newEnv(t)
	second := registry.DefaultDeadLetterTopic("audit", dlqTopic)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic + ",max_attempts=1", "audit:" + dlqTopic + ",max_attempts=1", "last:" + second})
	nack := func(_ context.Context, d *client.Delivery) error { return errors.New("no") }
	for _, g := range []struct{ group, topic string }{{"g1", topic}, {"audit", dlqTopic}} {
		if _, err := e.dial().Subscribe(context.Background(), g.group, g.topic, nack); err != nil {
			t.Fatal(err)
		}
	}
	got := &recorder{}
	if _, err := e.dial().Subscribe(context.Background(), "last", second, func(_ context.Context, d *client.Delivery) error {
		got.addDead(d)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dial().Publish(context.Background(), &client.Message{Topic: topic, Key: "k", Body: []byte("b"),
		Headers: []mesh.HeaderField{{Key: "Tenant", Value: "acme"}}}); err != nil {
		t.Fatal(err)
	}
	sidecartest.WaitFor(t, 30*time.Second, "the message on the second dead-letter topic", func() bool { return got.deadCount() == 1 })
	d := got.firstDead()
	counts := map[string]int{}
	for _, h := range d.Headers {
		counts[strings.ToLower(h.Key)]++
	}
	for _, k := range []string{mesh.HeaderDeadLetterTopic, mesh.HeaderDeadLetterGroup, mesh.HeaderDeadLetterAttempts, "Tenant"} {
		if counts[strings.ToLower(k)] != 1 {
			t.Errorf("header %s appears %d times, want once: %v", k, counts[strings.ToLower(k)], d.Headers)
		}
	}
	wantHeaders(t, d, map[string]string{mesh.HeaderDeadLetterTopic: dlqTopic, mesh.HeaderDeadLetterGroup: "audit"})
	if string(d.Body) != "b" || d.Key != "k" {
		t.Errorf("body %q key %q, want b and k", d.Body, d.Key)
	}
}
