package msgmesh_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/flowctl"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/observe"
)

// pulled is one delivery of POST /v1/pull as a client decodes it; Key and
// Body are pointers so that null and "" stay apart.
type pulled struct {
	DeliveryID string  `json:"delivery_id"`
	Group      string  `json:"group"`
	Topic      string  `json:"topic"`
	MessageID  string  `json:"message_id"`
	Key        *string `json:"key"`
	KeyBase64  string  `json:"key_base64"`
	Body       *[]byte `json:"body"`
	Headers    []struct {
		Key, Value  string
		ValueBase64 string `json:"value_base64"`
	} `json:"headers"`
	Tag         string `json:"tag"`
	Colour      string `json:"colour"`
	Redelivered int    `json:"redelivered"`
	Timestamp   string `json:"timestamp"`
}

func (p pulled) body() string {
	if p.Body == nil {
		return "<null>"
	}
	return string(*p.Body)
}

func (p pulled) header(name string) (string, bool) {
	for _, h := range p.Headers {
		if strings.EqualFold(h.Key, name) {
			return h.Value, true
		}
	}
	return "", false
}

// httpApp is an app using the HTTP API only, with its secret if any.
type httpApp struct {
	t      testing.TB
	base   string
	app    string
	secret string
}

func (e *env) httpApp(app, secret string) *httpApp {
	return &httpApp{t: e.t, base: "http://" + e.http, app: app, secret: secret}
}

func (a *httpApp) headers(extra ...string) http.Header {
	h := http.Header{}
	if a.app != "" {
		h.Set("Msgmesh-App", a.app)
	}
	if a.secret != "" {
		h.Set("Authorization", "Bearer "+a.secret)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		h.Set(extra[i], extra[i+1])
	}
	return h
}

// pullRaw sends POST /v1/pull/{group}/{topic}?query and returns status and body.
func (a *httpApp) pullRaw(group, topic, query string, extra ...string) (int, string) {
	a.t.Helper()
	return sidecartest.HTTPDoHeader(a.t, http.MethodPost, a.base+"/v1/pull/"+group+"/"+topic+"?"+query, a.headers(extra...), nil)
}

// pull pulls and fails the test unless it is answered 200.
func (a *httpApp) pull(group, topic string, max int, wait string) []pulled {
	a.t.Helper()
	status, body := a.pullRaw(group, topic, fmt.Sprintf("max=%d&wait=%s", max, wait))
	if status != http.StatusOK {
		a.t.Fatalf("pull %s/%s as %s: %d %s", group, topic, a.app, status, body)
	}
	var res struct{ Messages []pulled }
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		a.t.Fatalf("pull answer %s: %v", body, err)
	}
	if res.Messages == nil {
		a.t.Fatalf("pull answer %s: messages is not a list", body)
	}
	return res.Messages
}

// pullUntil pulls until n deliveries came (or the deadline passes).
func (a *httpApp) pullUntil(group, topic string, n int) []pulled {
	a.t.Helper()
	var got []pulled
	sidecartest.WaitFor(a.t, 60*time.Second, fmt.Sprintf("%d deliveries pulled over HTTP", n), func() bool {
		got = append(got, a.pull(group, topic, n-len(got), "2s")...)
		return len(got) >= n
	})
	return got
}

// answer acks (verb "ack") or nacks ("nack?delay=...") a delivery.
func (a *httpApp) answer(verb, id string) (int, string) {
	a.t.Helper()
	path, query, _ := strings.Cut(verb, "?")
	return sidecartest.HTTPDoHeader(a.t, http.MethodPost, a.base+"/v1/"+path+"/"+id+"?"+query, a.headers(), nil)
}

func (a *httpApp) mustAnswer(verb, id string) {
	a.t.Helper()
	if status, body := a.answer(verb, id); status != http.StatusNoContent {
		a.t.Fatalf("%s %s: %d %s", verb, id, status, body)
	}
}

// publish publishes body over HTTP with the given extra headers.
func (a *httpApp) publish(topic string, body []byte, extra ...string) {
	a.t.Helper()
	h := a.headers(append([]string{"Content-Type", "application/octet-stream"}, extra...)...)
	if status, resp := sidecartest.HTTPDoHeader(a.t, http.MethodPost, a.base+"/v1/publish/"+topic, h, body); status != http.StatusOK {
		a.t.Fatalf("publish to %s: %d %s", topic, status, resp)
	}
}

// wantHTTPError fails unless an answer is status with error code code.
func wantHTTPError(t testing.TB, what string, status int, body string, wantStatus int, code string) {
	t.Helper()
	var eb struct{ Error, Message string }
	if err := json.Unmarshal([]byte(body), &eb); err != nil || status != wantStatus || eb.Error != code || eb.Message == "" {
		t.Fatalf("%s: %d %s; want %d %s with a message", what, status, body, wantStatus, code)
	}
}

// TestHTTPPull: on every broker, messages published with a key, headers, a
// tag, a null body, an empty body and key, and binary bytes come back from
// an HTTP pull as they went in, each with a delivery id, message id and
// timestamp; acked ones are gone, a nacked one comes again with its
// redelivered count up, after the nack's delay.
func TestHTTPPull(t *testing.T) {
	for _, kit := range sidecartest.BrokerKits() {
		t.Run(kit.Name, func(t *testing.T) {
			e := newEnvOn(t, kit.Start(t))
			e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
			a := e.httpApp("orders", "")
			binary := make([]byte, 256)
			for i := range binary {
				binary[i] = byte(i)
			}
			a.publish(topic, []byte("first"), "Msgmesh-Key", "k1", "Msgmesh-Header-Tenant", "acme", "Msgmesh-Tag", "blue", "Msgmesh-Colour", "green")
			want := 3
			if kit.Name == "kafka" { // only Kafka stores null bodies (tombstones)
				a.publish(topic, nil, "Msgmesh-Null-Body", "true", "Msgmesh-Key", "tomb")
				want++
			}
			emptyKey := kit.Name != "rocketmq" // RocketMQ keeps no empty key
			if emptyKey {
				a.publish(topic, nil, "Msgmesh-Key", "")
			} else {
				a.publish(topic, nil)
			}
			a.publish(topic, binary)

			got := a.pullUntil("g1", topic, want)
			if len(got) != want {
				t.Fatalf("pulled %d deliveries, want %d", len(got), want)
			}
			byBody := map[string]pulled{}
			ids := map[string]bool{}
			for _, p := range got {
				if p.DeliveryID == "" || ids[p.DeliveryID] || p.Group != "g1" || p.Topic != topic || p.Redelivered != 0 {
					t.Fatalf("delivery %+v: want a fresh delivery id, group g1, topic %s, redelivered 0", p, topic)
				}
				if _, err := time.Parse(time.RFC3339Nano, p.Timestamp); err != nil {
					t.Errorf("delivery %s: timestamp %q: %v", p.body(), p.Timestamp, err)
				}
				ids[p.DeliveryID] = true
				byBody[p.body()] = p
			}
			first := byBody["first"]
			if first.Key == nil || *first.Key != "k1" || first.Tag != "blue" || first.MessageID == "" {
				t.Errorf("first: key %v tag %q message id %q; want k1, blue and a message id", first.Key, first.Tag, first.MessageID)
			}
			if v, ok := first.header("Msgmesh-Colour"); first.Colour != "green" || !ok || v != "green" {
				t.Errorf("first: colour %q, header Msgmesh-Colour %q %v; want green in both (an HTTP app passes the header on)", first.Colour, v, ok)
			}
			if v, ok := first.header("Tenant"); !ok || v != "acme" {
				t.Errorf("first: header Tenant = %q %v, want acme; headers %+v", v, ok, first.Headers)
			}
			if tomb, ok := byBody["<null>"]; kit.Name == "kafka" && (!ok || tomb.Key == nil || *tomb.Key != "tomb") {
				t.Errorf("the null body did not come back as body null with key tomb: %+v", got)
			}
			if empty, ok := byBody[""]; !ok || (empty.Key == nil) == emptyKey || emptyKey && *empty.Key != "" {
				t.Errorf("the empty body with an empty key did not come back as body \"\" and key \"\": %+v", got)
			}
			if bin, ok := byBody[string(binary)]; !ok || bin.Key != nil {
				t.Errorf("the binary body did not come back byte for byte, without a key (key null)")
			}

			// Ack all but the binary one, nack that one with a delay.
			for body, p := range byBody {
				if body == string(binary) {
					a.mustAnswer("nack?delay=200ms", p.DeliveryID)
					continue
				}
				a.mustAnswer("ack", p.DeliveryID)
			}
			again := a.pullUntil("g1", topic, 1)
			if again[0].body() != string(binary) || again[0].Redelivered < 1 || again[0].DeliveryID == byBody[string(binary)].DeliveryID {
				t.Fatalf("after the nack: got %q redelivered %d id %s; want the binary body again, redelivered >= 1, a new delivery id",
					again[0].body(), again[0].Redelivered, again[0].DeliveryID)
			}
			a.mustAnswer("ack", again[0].DeliveryID)
			if left := a.pull("g1", topic, 10, "300ms"); len(left) != 0 {
				t.Fatalf("after acking everything, a pull returned %d deliveries: %+v", len(left), left)
			}
		})
	}
}

// TestHTTPPullTimeoutRedelivers: a delivery not answered within the
// delivery timeout goes back to the broker and is pulled again; the late
// ack of the first attempt is refused as unknown.
func TestHTTPPullTimeoutRedelivers(t *testing.T) {
	e := newEnv(t, func(c *msgmesh.Config) { c.DeliveryTimeout = 500 * time.Millisecond })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	a := e.httpApp("orders", "")
	a.publish(topic, []byte("slow"))
	first := a.pullUntil("g1", topic, 1)[0]
	second := a.pullUntil("g1", topic, 1)[0] // comes only once the first timed out
	if second.body() != "slow" || second.Redelivered < 1 || second.MessageID != first.MessageID {
		t.Fatalf("after the timeout: %q redelivered %d message id %s; want slow again, redelivered >= 1, message id %s",
			second.body(), second.Redelivered, second.MessageID, first.MessageID)
	}
	status, body := a.answer("ack", first.DeliveryID)
	wantHTTPError(t, "ack of the timed-out attempt", status, body, http.StatusNotFound, "UNKNOWN_REQUEST")
	a.mustAnswer("ack", second.DeliveryID)
}

// TestHTTPPullDeadLetter: with max_attempts=2, a message nacked twice over
// HTTP lands on the dead-letter topic (pulled over HTTP too) with reason
// nack, and is not pulled again.
func TestHTTPPullDeadLetter(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic + ",max_attempts=2"})
	e.register("ops", nil, []string{"audit:" + dlqTopic})
	a, ops := e.httpApp("orders", ""), e.httpApp("ops", "")
	a.publish(topic, []byte("poison"), "Msgmesh-Key", "p")
	for attempt := 0; attempt < 2; attempt++ {
		p := a.pullUntil("g1", topic, 1)[0]
		if p.body() != "poison" || p.Redelivered != attempt {
			t.Fatalf("attempt %d: %q redelivered %d", attempt+1, p.body(), p.Redelivered)
		}
		a.mustAnswer("nack", p.DeliveryID)
	}
	dead := ops.pullUntil("audit", dlqTopic, 1)[0]
	if dead.body() != "poison" || dead.Key == nil || *dead.Key != "p" {
		t.Fatalf("dead letter %q key %v; want poison, key p", dead.body(), dead.Key)
	}
	if r, _ := dead.header(mesh.HeaderDeadLetterReason); r != mesh.DeadLetterNack {
		t.Fatalf("dead letter reason %q, want %s; headers %+v", r, mesh.DeadLetterNack, dead.Headers)
	}
	if n, _ := dead.header(mesh.HeaderDeadLetterAttempts); n != "2" {
		t.Fatalf("dead letter attempts %q, want 2", n)
	}
	ops.mustAnswer("ack", dead.DeliveryID)
	if left := a.pull("g1", topic, 1, "500ms"); len(left) != 0 {
		t.Fatalf("the dead-lettered message was pulled again: %+v", left)
	}
}

// TestHTTPPullIsolation: an app pulls only its own groups, proves its
// secret, answers only its own deliveries; browsers are refused.
func TestHTTPPullIsolation(t *testing.T) {
	e := newEnv(t)
	const secret = "orders-secret-0123456789"
	if status, body := sidecartest.RegisterAs(t, e.http, "orders", secret, []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	e.register("billing", nil, []string{"b1:" + topic})
	orders, billing := e.httpApp("orders", secret), e.httpApp("billing", "")

	status, body := billing.pullRaw("g1", topic, "max=1")
	wantHTTPError(t, "billing pulling orders' group", status, body, http.StatusForbidden, "FORBIDDEN")
	status, body = billing.pullRaw("nope", topic, "max=1")
	wantHTTPError(t, "a group no one registered", status, body, http.StatusNotFound, "NOT_REGISTERED")
	status, body = e.httpApp("orders", "").pullRaw("g1", topic, "max=1")
	wantHTTPError(t, "orders without its secret", status, body, http.StatusUnauthorized, "UNAUTHORIZED")
	status, body = e.httpApp("orders", "wrong-secret-0123456789").pullRaw("g1", topic, "max=1")
	wantHTTPError(t, "orders with a wrong secret", status, body, http.StatusUnauthorized, "UNAUTHORIZED")
	status, body = e.httpApp("", "").pullRaw("g1", topic, "max=1")
	wantHTTPError(t, "a pull naming no app", status, body, http.StatusBadRequest, "INVALID")
	status, body = orders.pullRaw("g1", topic, "max=1", "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site")
	wantHTTPError(t, "a pull from a web page", status, body, http.StatusForbidden, "FORBIDDEN")
	status, body = orders.pullRaw("g1", topic, "max=1", "Content-Type", "text/plain")
	if status != http.StatusUnsupportedMediaType {
		t.Fatalf("a text/plain pull (a form a page may send): %d %s, want 415", status, body)
	}

	orders.publish(topic, []byte("mine"))
	p := orders.pullUntil("g1", topic, 1)[0]
	// Another app cannot answer it, nor can a page.
	status, body = billing.answer("ack", p.DeliveryID)
	wantHTTPError(t, "billing acking orders' delivery", status, body, http.StatusNotFound, "UNKNOWN_REQUEST")
	status, body = sidecartest.HTTPDoHeader(t, http.MethodPost, orders.base+"/v1/ack/"+p.DeliveryID, orders.headers("Origin", "http://evil.example"), nil)
	wantHTTPError(t, "an ack from a web page", status, body, http.StatusForbidden, "FORBIDDEN")
	status, body = e.httpApp("orders", "").answer("ack", p.DeliveryID)
	wantHTTPError(t, "an ack without the secret", status, body, http.StatusUnauthorized, "UNAUTHORIZED")
	orders.mustAnswer("ack", p.DeliveryID)
}

// TestHTTPPullAtLeastOnce: every message published is pulled and acked,
// none lost, with several pullers of one group at once.
func TestHTTPPullAtLeastOnce(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	const n = 300
	sidecartest.PublishN(t, e.dial(), topic, "m", n, 64)
	got := sidecartest.NewTally()
	errs := make(chan error, 3)
	for w := 0; w < 3; w++ {
		a := e.httpApp("orders", "")
		who := fmt.Sprint("puller-", w)
		go func() {
			errs <- func() error {
				deadline := time.Now().Add(sidecartest.Scaled(90 * time.Second))
				for got.Distinct() < n && time.Now().Before(deadline) {
					req, _ := http.NewRequest(http.MethodPost, a.base+"/v1/pull/g1/"+topic+"?max=25&wait=1s", nil)
					req.Header = a.headers()
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						return err
					}
					var res struct{ Messages []pulled }
					err = json.NewDecoder(resp.Body).Decode(&res)
					resp.Body.Close()
					if err != nil || resp.StatusCode != http.StatusOK {
						return fmt.Errorf("pull: %d %v", resp.StatusCode, err)
					}
					for _, p := range res.Messages {
						got.Add(who, p.body())
						req, _ := http.NewRequest(http.MethodPost, a.base+"/v1/ack/"+p.DeliveryID, nil)
						req.Header = a.headers()
						resp, err := http.DefaultClient.Do(req)
						if err != nil {
							return err
						}
						resp.Body.Close()
						if resp.StatusCode != http.StatusNoContent {
							return fmt.Errorf("ack %s: %d", p.DeliveryID, resp.StatusCode)
						}
					}
				}
				return nil
			}()
		}()
	}
	for w := 0; w < 3; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if d := got.Distinct(); d != n {
		t.Fatalf("pulled %d distinct messages of %d", d, n)
	}
	if c := got.Count(); c < n {
		t.Fatalf("counted %d deliveries, fewer than the %d distinct messages", c, n)
	}
}

// TestHTTPPullLongPollWakes: a pull waiting for up to 5 minutes answers as
// soon as a message arrives.
func TestHTTPPullLongPollWakes(t *testing.T) {
	e := newEnv(t, func(c *msgmesh.Config) { c.HTTP.WriteTimeout = 20 * time.Minute })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	a := e.httpApp("orders", "")
	a.pull("g1", topic, 1, "0") // makes the app's HTTP session and joins the route
	res := make(chan []pulled, 1)
	go func() {
		status, body := a.pullRaw("g1", topic, "max=5&wait=5m")
		var r struct{ Messages []pulled }
		if status != http.StatusOK || json.Unmarshal([]byte(body), &r) != nil {
			r.Messages = nil
		}
		res <- r.Messages
	}()
	sidecartest.WaitFor(t, 30*time.Second, "the long poll to be waiting", func() bool { return e.sc.HTTPPullsWaiting() == 1 })
	a.publish(topic, []byte("wake up"))
	select {
	case got := <-res:
		if len(got) != 1 || got[0].body() != "wake up" {
			t.Fatalf("the long poll answered %+v, want the one message", got)
		}
		a.mustAnswer("ack", got[0].DeliveryID)
	case <-time.After(sidecartest.Scaled(60 * time.Second)):
		t.Fatal("a 5-minute long poll did not answer when a message arrived")
	}
}

// TestHTTPPullBadInput: malformed parameters and unknown delivery ids get
// typed 4xx answers, and the sidecar goes on serving.
func TestHTTPPullBadInput(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	a := e.httpApp("orders", "")
	for _, q := range []string{"max=0", "max=-1", "max=lots", "max=", "wait=-1s", "wait=soon", "max=1&wait=1e9"} {
		status, body := a.pullRaw("g1", topic, q)
		wantHTTPError(t, "pull ?"+q, status, body, http.StatusBadRequest, "INVALID")
	}
	a.publish(topic, []byte("x"))
	p := a.pullUntil("g1", topic, 1)[0]
	epoch, _, _ := strings.Cut(p.DeliveryID, "-")
	for _, id := range []string{"nope", "0", epoch + "-999999", "ffffffffffffffff-1", epoch + "-x"} {
		status, body := a.answer("ack", id)
		wantHTTPError(t, "ack "+id, status, body, http.StatusNotFound, "UNKNOWN_REQUEST")
		status, body = a.answer("nack", id)
		wantHTTPError(t, "nack "+id, status, body, http.StatusNotFound, "UNKNOWN_REQUEST")
	}
	status, body := a.answer("nack?delay=-5s", p.DeliveryID)
	wantHTTPError(t, "nack with a negative delay", status, body, http.StatusBadRequest, "INVALID")
	a.mustAnswer("ack", p.DeliveryID)
	status, body = a.answer("ack", p.DeliveryID)
	wantHTTPError(t, "a second ack", status, body, http.StatusNotFound, "UNKNOWN_REQUEST")
	status, body = a.answer("nack", p.DeliveryID)
	wantHTTPError(t, "a nack after the ack", status, body, http.StatusNotFound, "UNKNOWN_REQUEST")

	if status, body := sidecartest.HTTPDo(t, http.MethodGet, "http://"+e.http+"/healthz", "", nil); status != http.StatusOK {
		t.Fatalf("healthz after bad input: %d %s", status, body)
	}
	a.publish(topic, []byte("still"))
	got := a.pullUntil("g1", topic, 1)
	if got[0].body() != "still" {
		t.Fatalf("pulled %q after bad input, want still", got[0].body())
	}
	a.mustAnswer("ack", got[0].DeliveryID) // or Shutdown waits for it
}

// TestHTTPPullShutdown: Shutdown answers a pending long poll at once,
// refuses new pulls with 503 SHUTTING_DOWN, and still takes the ack of a
// delivery an HTTP client holds, which ends the wait for it.
func TestHTTPPullShutdown(t *testing.T) {
	e := newEnv(t, func(c *msgmesh.Config) { c.HTTP.WriteTimeout = 20 * time.Minute })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	a := e.httpApp("orders", "")
	a.publish(topic, []byte("held"))
	held := a.pullUntil("g1", topic, 1)[0]

	poll := make(chan int, 1)
	go func() {
		status, _ := a.pullRaw("g1", topic, "max=1&wait=5m")
		poll <- status
	}()
	sidecartest.WaitFor(t, 30*time.Second, "the long poll to be waiting", func() bool { return e.sc.HTTPPullsWaiting() == 1 })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(2*time.Minute))
		defer cancel()
		done <- e.sc.Shutdown(ctx)
	}()
	select {
	case status := <-poll:
		if status != http.StatusOK {
			t.Fatalf("the pending long poll was answered %d at shutdown, want 200 (with what it held)", status)
		}
	case <-time.After(sidecartest.Scaled(60 * time.Second)):
		t.Fatal("the pending long poll was not answered when shutdown began")
	}
	status, body := a.pullRaw("g1", topic, "max=1")
	wantHTTPError(t, "a pull during shutdown", status, body, http.StatusServiceUnavailable, "SHUTTING_DOWN")
	if e.sc.InflightDeliveries() != 1 {
		t.Fatalf("in flight during shutdown: %d, want the held delivery", e.sc.InflightDeliveries())
	}
	a.mustAnswer("ack", held.DeliveryID)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(sidecartest.Scaled(60 * time.Second)):
		t.Fatal("Shutdown did not end once the HTTP delivery was acked")
	}
}

// TestHTTPPullInflightBounds: HTTP-pulled deliveries count against the
// sidecar's in-flight bound (per app) and the group's flowctl bound; a
// pull returns nothing more until one is answered.
func TestHTTPPullInflightBounds(t *testing.T) {
	flow, err := flowctl.New(flowctl.Config{Groups: map[string]flowctl.GroupLimits{"g2": {MaxInflight: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *msgmesh.Config) { c.MaxInflight = 3; c.Flow = flow })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	e.register("billing", nil, []string{"g2:" + topic})
	orders := e.httpApp("orders", "")
	for i := 0; i < 6; i++ {
		orders.publish(topic, []byte(fmt.Sprint("m", i)))
	}
	for _, tc := range []struct {
		a      *httpApp
		group  string
		bound  int
		reason string
	}{
		{orders, "g1", 3, "the sidecar's max in-flight (3)"},
		{e.httpApp("billing", ""), "g2", 2, "the group's flowctl max_inflight (2)"},
	} {
		held := tc.a.pullUntil(tc.group, topic, tc.bound)
		if more := tc.a.pull(tc.group, topic, 10, "500ms"); len(more) != 0 || len(held) != tc.bound {
			t.Fatalf("%s: held %d, then pulled %d more; want %d held and none more under %s", tc.group, len(held), len(more), tc.bound, tc.reason)
		}
		tc.a.mustAnswer("ack", held[0].DeliveryID)
		next := tc.a.pullUntil(tc.group, topic, 1)
		if len(next) != 1 {
			t.Fatalf("%s: after an ack, pulled %d", tc.group, len(next))
		}
		for _, p := range append(held[1:], next...) {
			tc.a.mustAnswer("ack", p.DeliveryID) // or Shutdown waits for them
		}
	}
}

// TestHTTPPullHandoff: a hot upgrade refuses new HTTP pulls, takes the ack
// of an HTTP delivery while it waits for deliveries to settle, and the one
// left unanswered (here: timed out) comes again from the successor, where
// the old delivery id is unknown.
func TestHTTPPullHandoff(t *testing.T) {
	c := sidecartest.NATSCluster(t)
	dataDir := t.TempDir()
	tweak := func(c *msgmesh.Config) { c.DeliveryTimeout = sidecartest.Scaled(2 * time.Second) }
	sc := startOn(t, c, dataDir, nil, tweak)
	if status, body := sidecartest.Register(t, sc.HTTPAddr().String(), "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != 201 {
		t.Fatalf("register: %d %s", status, body)
	}
	a := &httpApp{t: t, base: "http://" + sc.HTTPAddr().String(), app: "orders"}
	a.publish(topic, []byte("acked"))
	a.publish(topic, []byte("left"))
	held := map[string]pulled{}
	for _, p := range a.pullUntil("g1", topic, 2) {
		held[p.body()] = p
	}
	type result struct {
		st  *msgmesh.HandoffState
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(2*time.Minute))
		defer cancel()
		st, err := sc.Handoff(ctx)
		done <- result{st, err}
	}()
	sidecartest.WaitFor(t, 30*time.Second, "new pulls to be refused during the handoff", func() bool {
		status, _ := a.pullRaw("g1", topic, "max=1")
		return status == http.StatusServiceUnavailable
	})
	a.mustAnswer("ack", held["acked"].DeliveryID)
	r := <-done // once "left" timed out back to the broker
	if r.err != nil {
		t.Fatalf("handoff: %v", r.err)
	}
	sc = startOn(t, c, dataDir, r.st, tweak)
	again := a.pullUntil("g1", topic, 1)[0]
	if again.body() != "left" || again.Redelivered < 1 {
		t.Fatalf("the successor delivered %q redelivered %d, want left, redelivered >= 1", again.body(), again.Redelivered)
	}
	status, body := a.answer("ack", held["left"].DeliveryID)
	wantHTTPError(t, "the predecessor's delivery id at the successor", status, body, http.StatusNotFound, "UNKNOWN_REQUEST")
	a.mustAnswer("ack", again.DeliveryID)
	if more := a.pull("g1", topic, 10, "500ms"); len(more) != 0 {
		t.Fatalf("after the handoff, %d more deliveries: %+v (the acked one came again?)", len(more), more)
	}
	_ = sc
}

// TestHTTPPullShutdownHandsBack: a delivery an HTTP client still holds
// when Shutdown's wait ends goes back to the broker, and the next sidecar
// delivers it again.
func TestHTTPPullShutdownHandsBack(t *testing.T) {
	c := sidecartest.NATSCluster(t)
	dataDir := t.TempDir()
	sc := startOn(t, c, dataDir, nil)
	if status, body := sidecartest.Register(t, sc.HTTPAddr().String(), "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != 201 {
		t.Fatalf("register: %d %s", status, body)
	}
	a := &httpApp{t: t, base: "http://" + sc.HTTPAddr().String(), app: "orders"}
	a.publish(topic, []byte("held"))
	held := a.pullUntil("g1", topic, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_ = sc.Shutdown(ctx) // the wait ends with ctx: the delivery is handed back
	cancel()
	if n := sc.InflightDeliveries(); n != 0 {
		t.Fatalf("%d deliveries in flight after Shutdown", n)
	}
	sc = startOn(t, c, dataDir, nil)
	a.base = "http://" + sc.HTTPAddr().String()
	again := a.pullUntil("g1", topic, 1)[0]
	if again.body() != "held" || again.MessageID != held.MessageID {
		t.Fatalf("the next sidecar delivered %q (message id %s), want held (%s)", again.body(), again.MessageID, held.MessageID)
	}
	a.mustAnswer("ack", again.DeliveryID)
}

// TestHTTPPullTrace: an HTTP-pulled message continues the producer's
// trace as a mesh delivery does: its traceparent header names the
// sidecar's "deliver" span (child of the send span), which the ack ends;
// the "pull" span continues the HTTP request's own traceparent and links
// to the delivery.
func TestHTTPPullTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tel, err := observe.New(context.Background(), observe.Config{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	e := newEnv(t, func(c *msgmesh.Config) { c.Telemetry = tel })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	if _, err := e.dial(client.WithTracerProvider(tp)).Publish(context.Background(), &client.Message{Topic: topic, Body: []byte("traced")}); err != nil {
		t.Fatal(err)
	}
	a := e.httpApp("orders", "")
	const callerTrace, callerSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	var got []pulled
	sidecartest.WaitFor(t, 30*time.Second, "the traced message", func() bool {
		status, body := a.pullRaw("g1", topic, "max=1&wait=1s", "Traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
		var res struct{ Messages []pulled }
		if status != http.StatusOK || json.Unmarshal([]byte(body), &res) != nil {
			t.Fatalf("pull: %d %s", status, body)
		}
		got = res.Messages
		return len(got) == 1
	})
	a.mustAnswer("ack", got[0].DeliveryID)

	byName := map[string]tracetest.SpanStub{}
	sidecartest.WaitFor(t, 10*time.Second, "the send, deliver and pull spans", func() bool {
		for _, s := range exp.GetSpans() {
			byName[s.Name] = s
		}
		return byName["send "+topic].Name != "" && byName["deliver "+topic].Name != "" && byName["pull "+topic].Name != ""
	})
	send, deliver, pull := byName["send "+topic], byName["deliver "+topic], byName["pull "+topic]
	if deliver.Parent.SpanID() != send.SpanContext.SpanID() || deliver.SpanContext.TraceID() != send.SpanContext.TraceID() {
		t.Errorf("the deliver span is not the send span's child")
	}
	tpHeader, _ := got[0].header("traceparent")
	if want := fmt.Sprintf("00-%s-%s-", deliver.SpanContext.TraceID(), deliver.SpanContext.SpanID()); !strings.HasPrefix(tpHeader, want) {
		t.Errorf("the pulled message's traceparent is %q, want the deliver span's %s..", tpHeader, want)
	}
	if pull.Parent.TraceID().String() != callerTrace || pull.Parent.SpanID().String() != callerSpan {
		t.Errorf("the pull span's parent is %s/%s, want the request's traceparent %s/%s", pull.Parent.TraceID(), pull.Parent.SpanID(), callerTrace, callerSpan)
	}
	linked := false
	for _, l := range pull.Links {
		linked = linked || l.SpanContext.SpanID() == deliver.SpanContext.SpanID()
	}
	if !linked {
		t.Errorf("the pull span does not link to the deliver span")
	}
}

// answerBatch posts a batch ack or nack and returns status and body.
func (a *httpApp) answerBatch(verb, body string) (int, string) {
	a.t.Helper()
	return sidecartest.HTTPDoHeader(a.t, http.MethodPost, a.base+"/v1/"+verb, a.headers("Content-Type", "application/json"), []byte(body))
}

// TestHTTPPullBatchAnswer: POST /v1/ack and /v1/nack answer several
// deliveries at once, list the ids that were not in flight, and refuse
// malformed batches without answering anything.
func TestHTTPPullBatchAnswer(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	a := e.httpApp("orders", "")
	for i := 0; i < 5; i++ {
		a.publish(topic, []byte(fmt.Sprint("m", i)))
	}
	got := a.pullUntil("g1", topic, 5)
	ids := func(ps []pulled) string {
		var q []string
		for _, p := range ps {
			q = append(q, fmt.Sprintf("%q", p.DeliveryID))
		}
		return strings.Join(q, ",")
	}
	for _, bad := range []struct{ verb, body string }{
		{"ack", `{"delivery_ids": []}`},
		{"ack", `{"delivery_ids": [` + ids(got[:1]) + `], "delay": "1s"}`},
		{"nack", `{"delivery_ids": [` + ids(got[:1]) + `], "delay": "-1s"}`},
		{"ack", `{"delivery_ids": [` + ids(got[:1]) + `], "extra": 1}`},
		{"ack", `{"delivery_ids": ` + ids(got[:1]) + `}`},
	} {
		status, body := a.answerBatch(bad.verb, bad.body)
		wantHTTPError(t, bad.verb+" "+bad.body, status, body, http.StatusBadRequest, "INVALID")
	}
	status, body := sidecartest.HTTPDoHeader(t, http.MethodPost, a.base+"/v1/ack", a.headers("Content-Type", "text/plain"), []byte(`{"delivery_ids": [`+ids(got)+`]}`))
	if status != http.StatusUnsupportedMediaType {
		t.Fatalf("a text/plain batch ack: %d %s, want 415", status, body)
	}

	var res struct {
		Answered int
		Unknown  []string
	}
	decode := func(status int, body string) {
		t.Helper()
		res.Answered, res.Unknown = 0, nil
		if status != http.StatusOK || json.Unmarshal([]byte(body), &res) != nil {
			t.Fatalf("batch answer: %d %s", status, body)
		}
	}
	decode(a.answerBatch("nack", `{"delivery_ids": [`+ids(got[:2])+`,"bogus"], "delay": "100ms"}`))
	if res.Answered != 2 || len(res.Unknown) != 1 || res.Unknown[0] != "bogus" {
		t.Fatalf("batch nack: %+v, want 2 answered and bogus unknown", res)
	}
	decode(a.answerBatch("ack", `{"delivery_ids": [`+ids(got[2:])+`]}`))
	if res.Answered != 3 || len(res.Unknown) != 0 {
		t.Fatalf("batch ack: %+v, want 3 answered", res)
	}
	again := a.pullUntil("g1", topic, 2)
	for _, p := range again {
		if p.Redelivered < 1 || (p.body() != got[0].body() && p.body() != got[1].body()) {
			t.Fatalf("after the batch nack: %q redelivered %d; want one of the two nacked, redelivered", p.body(), p.Redelivered)
		}
	}
	decode(a.answerBatch("ack", `{"delivery_ids": [`+ids(again)+`]}`))
	if res.Answered != 2 {
		t.Fatalf("batch ack of the redeliveries: %+v", res)
	}
	decode(a.answerBatch("ack", `{"delivery_ids": [`+ids(again)+`]}`))
	if res.Answered != 0 || len(res.Unknown) != 2 {
		t.Fatalf("a second batch ack: %+v, want both unknown", res)
	}
}
