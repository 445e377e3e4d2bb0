package msgmesh_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
)

// ceReceiver is a push receiver written with the CloudEvents Go SDK (an
// implementation nobody here wrote): every POST must parse and validate as
// a CloudEvent. It answers 503 with Retry-After to the first attempt of an
// event whose type is retryType, and 200 to everything else.
type ceReceiver struct {
	t   testing.TB
	srv *httptest.Server

	mu     sync.Mutex
	got    map[string][]receivedEvent // by path, in arrival order
	errors []string
}

type receivedEvent struct {
	ev      cloudevents.Event
	header  http.Header
	attempt int
}

const retryType = "com.example.retry-me"

func newCEReceiver(t testing.TB) *ceReceiver {
	r := &ceReceiver{t: t, got: map[string][]receivedEvent{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *ceReceiver) serve(w http.ResponseWriter, req *http.Request) {
	ev, err := binding.ToEvent(req.Context(), cehttp.NewMessageFromHttpRequest(req))
	if err == nil {
		err = ev.Validate()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errors = append(r.errors, fmt.Sprintf("%s: not a valid CloudEvent: %v", req.URL.Path, err))
		w.WriteHeader(http.StatusBadRequest) // a failed attempt; the test fails on r.errors
		return
	}
	attempt, _ := strconv.Atoi(req.Header.Get("Msgmesh-Attempt"))
	r.got[req.URL.Path] = append(r.got[req.URL.Path], receivedEvent{ev: *ev, header: req.Header.Clone(), attempt: attempt})
	if ev.Type() == retryType && attempt == 1 {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// byID returns the last delivery of each event id on path.
func (r *ceReceiver) byID(path string) map[string]receivedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]receivedEvent{}
	for _, e := range r.got[path] {
		out[e.ev.ID()] = e
	}
	return out
}

func (r *ceReceiver) checkErrors() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errors {
		r.t.Error(e)
	}
}

// TestHTTPPushCloudEvents, on every broker: CloudEvents published over
// HTTP with the CloudEvents SDK (binary and structured mode) and a plain
// HTTP publish are pushed to an SDK receiver, in binary mode to one
// subscription and structured mode to another; every delivery parses as a
// valid CloudEvent, an event keeps its id, source, type, subject, time
// and data end to end, a plain message gets the documented defaults, and
// an event answered 503 with Retry-After comes again with its attempt
// counted.
func TestHTTPPushCloudEvents(t *testing.T) {
	for _, kit := range sidecartest.BrokerKits() {
		t.Run(kit.Name, func(t *testing.T) { testHTTPPushCloudEvents(t, kit) })
	}
}

func testHTTPPushCloudEvents(t *testing.T, kit sidecartest.BrokerKit) {
	e := newEnvOn(t, kit.Start(t))
	rcv := newCEReceiver(t)
	e.register("orders", []string{"p1:" + topic}, []string{
		"g1:" + topic + ",push_url=" + rcv.srv.URL + "/binary,push_concurrency=4",
		"g2:" + topic + ",push_url=" + rcv.srv.URL + "/structured,push_mode=structured,push_timeout=5s",
	})

	// Publish with the SDK's own HTTP client to the sidecar's publish
	// endpoint, in both content modes.
	sdk, err := cloudevents.NewClientHTTP(cehttp.WithTarget("http://"+e.http+"/v1/publish/"+topic),
		cehttp.WithHeader("Msgmesh-App", "orders"))
	if err != nil {
		t.Fatal(err)
	}
	when := time.Date(2026, 12, 6, 10, 0, 0, 123456789, time.UTC)
	type sent struct {
		ev         cloudevents.Event
		structured bool
	}
	var events []sent
	mk := func(id, typ, ct string, data any, structured bool) {
		ev := cloudevents.NewEvent()
		ev.SetID(id)
		ev.SetSource("/orders/service")
		ev.SetType(typ)
		ev.SetSubject("order-" + id)
		ev.SetTime(when)
		ev.SetExtension("tenant", "eu1")
		if err := ev.SetData(ct, data); err != nil {
			t.Fatal(err)
		}
		events = append(events, sent{ev, structured})
	}
	mk("e1", "com.example.order.created", cloudevents.ApplicationJSON, map[string]any{"order": 1, "total": 9.5}, false)
	mk("e2", "com.example.order.created", cloudevents.ApplicationJSON, map[string]any{"order": 2}, true)
	mk("e3", "com.example.order.note", "text/plain", "plain text, ünïcode", false)
	mk("e4", "com.example.order.note", "application/octet-stream", []byte{0, 1, 2, 0xff}, true)
	mk("e5", retryType, cloudevents.ApplicationJSON, map[string]any{"retry": true}, false)
	for _, s := range events {
		ctx := context.Background()
		if s.structured {
			ctx = cloudevents.WithEncodingStructured(ctx)
		}
		if res := sdk.Send(ctx, s.ev); !cloudevents.IsACK(res) {
			t.Fatalf("publish %s with the SDK: %v", s.ev.ID(), res)
		}
	}
	// A plain message: pushed as an event with the documented defaults.
	a := e.httpApp("orders", "")
	a.publish(topic, []byte("raw"), "Msgmesh-Key", "k-raw", "Msgmesh-Header-X-Trace-Id", "abc")

	want := len(events) + 1
	for _, path := range []string{"/binary", "/structured"} {
		sidecartest.WaitFor(t, sidecartest.Scaled(60*time.Second), "every event pushed to "+path, func() bool {
			got := rcv.byID(path)
			return len(got) == want && got["e5"].attempt == 2
		})
	}
	rcv.checkErrors()

	for _, path := range []string{"/binary", "/structured"} {
		got := rcv.byID(path)
		for _, s := range events {
			g, ok := got[s.ev.ID()]
			if !ok {
				t.Fatalf("%s: event %s not received", path, s.ev.ID())
			}
			ev := g.ev
			if ev.Source() != s.ev.Source() || ev.Type() != s.ev.Type() || ev.Subject() != s.ev.Subject() || !ev.Time().Equal(when) {
				t.Errorf("%s: event %s arrived as source %q type %q subject %q time %v; sent %q %q %q %v",
					path, s.ev.ID(), ev.Source(), ev.Type(), ev.Subject(), ev.Time(), s.ev.Source(), s.ev.Type(), s.ev.Subject(), when)
			}
			if ev.Extensions()["tenant"] != "eu1" {
				t.Errorf("%s: event %s: extension tenant = %v, want eu1", path, s.ev.ID(), ev.Extensions()["tenant"])
			}
			if !sameData(ev, s.ev) {
				t.Errorf("%s: event %s data %q (%s), sent %q (%s)", path, s.ev.ID(), ev.Data(), ev.DataContentType(), s.ev.Data(), s.ev.DataContentType())
			}
			if h := g.header; h.Get("Msgmesh-Group") == "" || h.Get("Msgmesh-Topic") != topic || h.Get("Msgmesh-Delivery-Id") == "" {
				t.Errorf("%s: event %s without its group, topic and delivery id headers: %v", path, s.ev.ID(), h)
			}
		}
		if got["e5"].attempt != 2 {
			t.Errorf("%s: the event answered 503 came with attempt %d, want 2", path, got["e5"].attempt)
		}
		var raw *receivedEvent
		for _, g := range got {
			if string(g.ev.Data()) == "raw" {
				raw = &g
			}
		}
		if raw == nil {
			t.Fatalf("%s: the plain message was not pushed", path)
		}
		if raw.ev.Type() != "msgmesh.message" || raw.ev.Source() != "msgmesh://default/"+topic || raw.ev.Subject() != "k-raw" ||
			raw.ev.ID() != raw.header.Get("Msgmesh-Message-Id") || raw.ev.ID() == "" || raw.ev.Time().IsZero() {
			t.Errorf("%s: the plain message arrived as id %q source %q type %q subject %q time %v; want the defaults (message id %q)",
				path, raw.ev.ID(), raw.ev.Source(), raw.ev.Type(), raw.ev.Subject(), raw.ev.Time(), raw.header.Get("Msgmesh-Message-Id"))
		}
		if v := raw.header.Get("Msgmesh-Header-X-Trace-Id"); v != "abc" || raw.header.Get("Msgmesh-Key") != "k-raw" {
			t.Errorf("%s: the plain message's header and key arrived as %q and %q", path, v, raw.header.Get("Msgmesh-Key"))
		}
	}
	// The receiver has every POST; the sidecar counts each answer once it
	// is back, a moment later.
	sidecartest.WaitUntil(10*time.Second, func() bool { st := e.sc.Stats(); return st.Acked >= uint64(2*want) && st.Nacked >= 2 })
	if st := e.sc.Stats(); st.Acked < uint64(2*want) || st.Nacked < 2 {
		t.Errorf("stats after the pushes: %+v; want at least %d acked and 2 nacked", st, 2*want)
	}
}

// sameData compares an event's data as its content type says: JSON by
// value, anything else byte for byte.
func sameData(got, sent cloudevents.Event) bool {
	if strings.Contains(sent.DataContentType(), "json") {
		var a, b any
		return json.Unmarshal(got.Data(), &a) == nil && json.Unmarshal(sent.Data(), &b) == nil && fmt.Sprint(a) == fmt.Sprint(b)
	}
	return string(got.Data()) == string(sent.Data()) && got.DataContentType() == sent.DataContentType()
}

// TestCloudEventsPublishRefusals: an event without a required attribute
// is a typed 400, a reserved message header is refused as for any
// publish, a batch with one bad event is refused whole, and nothing
// reaches the broker.
func TestCloudEventsPublishRefusals(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	a := e.httpApp("orders", "")
	base := []string{"Ce-Specversion", "1.0", "Ce-Id", "x1", "Ce-Source", "/s", "Ce-Type", "t"}
	const (
		batchType = "application/cloudevents-batch+json"
		okEvent   = `{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1}`
	)
	without := func(name string) []string {
		var out []string
		for i := 0; i < len(base); i += 2 {
			if base[i] != name {
				out = append(out, base[i], base[i+1])
			}
		}
		return out
	}
	tests := []struct {
		name   string
		ctype  string
		extra  []string
		body   string
		status int
		code   string
	}{
		{"binary without id", "application/json", without("Ce-Id"), "{}", 400, "INVALID"},
		{"binary without type", "application/json", without("Ce-Type"), "{}", 400, "INVALID"},
		{"binary without specversion", "application/json", without("Ce-Specversion"), "{}", 400, "INVALID"},
		{"binary, version 0.3", "application/json", append(without("Ce-Specversion"), "Ce-Specversion", "0.3"), "{}", 400, "INVALID"},
		{"binary, bad time", "application/json", append(base, "Ce-Time", "yesterday"), "{}", 400, "INVALID"},
		{"binary, bad attribute name", "application/json", append(base, "Ce-Tenant_Id", "a"), "{}", 400, "INVALID"},
		{"binary, reserved message header", "application/json", append(base, "Msgmesh-Header-Nats-Msg-Id", "1"), "{}", 400, "INVALID"},
		{"binary, attribute also as a message header", "application/json", append(base, "Msgmesh-Header-Ce_id", "2"), "{}", 400, "INVALID"},
		{"structured without source", "application/cloudevents+json", nil, `{"specversion":"1.0","id":"1","type":"t"}`, 400, "INVALID"},
		{"structured, not an object", "application/cloudevents+json", nil, `[1]`, 400, "INVALID"},
		{"structured, data and data_base64", "application/cloudevents+json", nil, `{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"AA=="}`, 400, "INVALID"},
		{"structured, object attribute", "application/cloudevents+json", nil, `{"specversion":"1.0","id":"1","source":"/s","type":"t","tenant":{"a":1}}`, 400, "INVALID"},
		{"batch, not an array", batchType, nil, `{}`, 400, "INVALID"},
		{"batch, data after the array", batchType, nil, `[] []`, 400, "INVALID"},
		{"batch, an invalid event among valid ones", batchType, nil, `[` + okEvent + `,{"specversion":"1.0","id":"2","type":"t"},` + okEvent + `]`, 400, "INVALID"},
		{"batch, an event that is not an object", batchType, nil, `[` + okEvent + `,1]`, 400, "INVALID"},
		{"batch, a null event", batchType, nil, `[` + okEvent + `,null]`, 400, "INVALID"},
		{"batch, too many events", batchType, nil, `[` + strings.Repeat(okEvent+",", 1000) + okEvent + `]`, 400, "INVALID"},
		{"batch with a key", batchType, []string{"Msgmesh-Key", "k"}, `[` + okEvent + `]`, 400, "INVALID"},
		{"batch with a null body", batchType, []string{"Msgmesh-Null-Body", "true"}, `[` + okEvent + `]`, 400, "INVALID"},
		{"batch, reserved message header", batchType, []string{"Msgmesh-Header-Nats-Msg-Id", "1"}, `[` + okEvent + `]`, 400, "INVALID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := a.headers(append([]string{"Content-Type", tt.ctype}, tt.extra...)...)
			status, body := sidecartest.HTTPDoHeader(t, http.MethodPost, a.base+"/v1/publish/"+topic, h, []byte(tt.body))
			wantHTTPError(t, tt.name, status, body, tt.status, tt.code)
		})
	}
	// Data over the size limit is 413 in either mode, and a structured
	// envelope may be larger than the limit when its data is not.
	big := strings.Repeat("x", msgmesh.DefaultMaxMessageSize+1)
	h0 := a.headers(append([]string{"Content-Type", "application/octet-stream"}, base...)...)
	status, body := sidecartest.HTTPDoHeader(t, http.MethodPost, a.base+"/v1/publish/"+topic, h0, []byte(big))
	wantHTTPError(t, "binary event over the limit", status, body, http.StatusRequestEntityTooLarge, "MESSAGE_TOO_BIG")
	doc := `{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"` + big + `"}`
	status, body = sidecartest.HTTPDoHeader(t, http.MethodPost, a.base+"/v1/publish/"+topic, a.headers("Content-Type", "application/cloudevents+json"), []byte(doc))
	wantHTTPError(t, "structured event over the limit", status, body, http.StatusRequestEntityTooLarge, "MESSAGE_TOO_BIG")
	status, body = sidecartest.HTTPDoHeader(t, http.MethodPost, a.base+"/v1/publish/"+topic, a.headers("Content-Type", batchType), []byte("["+okEvent+","+doc+"]"))
	wantHTTPError(t, "a batch with an event over the limit", status, body, http.StatusRequestEntityTooLarge, "MESSAGE_TOO_BIG")
	if st := e.sc.Stats(); st.Published != 0 {
		t.Errorf("%d refused events reached the broker", st.Published)
	}
	// An empty batch (the format allows one) publishes nothing.
	if status, body := sidecartest.HTTPDoHeader(t, http.MethodPost, a.base+"/v1/publish/"+topic, a.headers("Content-Type", batchType), []byte(`[]`)); status != http.StatusOK || string(body) != "{\"results\":[]}\n" {
		t.Fatalf("an empty batch: %d %s", status, body)
	}
	fits := base64.StdEncoding.EncodeToString([]byte(big[:900<<10]))
	doc = `{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"` + fits + `"}`
	if status, body := sidecartest.HTTPDoHeader(t, http.MethodPost, a.base+"/v1/publish/"+topic, a.headers("Content-Type", "application/cloudevents+json"), []byte(doc)); status != http.StatusOK {
		t.Fatalf("a structured event whose envelope is over the limit and its data under it: %d %s", status, body)
	}
	// A binary event may be text/plain (its ce- headers are no request a
	// web page sends without asking), unlike a plain publish.
	h := a.headers(append([]string{"Content-Type", "text/plain"}, base...)...)
	if status, body := sidecartest.HTTPDoHeader(t, http.MethodPost, a.base+"/v1/publish/"+topic, h, []byte("hi")); status != http.StatusOK {
		t.Fatalf("text/plain event: %d %s", status, body)
	}
}

// TestPushURLHosts: a push URL off the host is refused unless the sidecar
// allows its host; the sidecar's own HTTP API and a timeout not below the
// delivery timeout are refused too.
func TestPushURLHosts(t *testing.T) {
	e := newEnv(t)
	allowed := newEnv(t, func(c *msgmesh.Config) { c.PushAllowHosts = []string{"receiver.internal", "10.1.0.0/16"} })
	tests := []struct {
		name string
		e    *env
		url  string
		opts string
		ok   bool
	}{
		{"loopback v4", e, "http://127.0.0.1:9/x", "", true},
		{"loopback v6", e, "http://[::1]:9/x", "", true},
		{"localhost", e, "http://localhost:9/x", "", true},
		{"other host", e, "http://example.com/x", "", false},
		{"private address", e, "http://10.1.2.3:8080/x", "", false},
		{"metadata address", e, "http://169.254.169.254/latest", "", false},
		{"allowed name", allowed, "https://receiver.internal/x", "", true},
		{"allowed prefix", allowed, "http://10.1.2.3:8080/x", "", true},
		{"outside the allowed prefix", allowed, "http://10.2.0.1/x", "", false},
		{"the sidecar itself", e, "http://" + e.http + "/v1/publish/" + topic, "", false},
		{"timeout at the delivery timeout", e, "http://127.0.0.1:9/x", ",push_timeout=30s", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := sidecartest.Register(t, tt.e.http, "orders", nil, []string{"g1:" + topic + ",push_url=" + tt.url + tt.opts})
			if tt.ok {
				if status != http.StatusCreated {
					t.Fatalf("register push_url %s: %d %s", tt.url, status, body)
				}
				return
			}
			wantHTTPError(t, "register push_url "+tt.url, status, body, http.StatusBadRequest, "INVALID")
		})
	}
}

// scriptedReceiver is a loopback push receiver whose answers the test
// controls: status is what it answers (after hold, when set, is closed or
// the request is cancelled); it records bodies by path.
type scriptedReceiver struct {
	srv *httptest.Server

	mu      sync.Mutex
	status  int
	hold    chan struct{} // non-nil: requests wait for it
	bodies  map[string][]string
	started int // requests that arrived
}

func newScriptedReceiver(t testing.TB, status int) *scriptedReceiver {
	r := &scriptedReceiver{status: status, bodies: map[string][]string{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.started++
		hold, status := r.hold, r.status
		r.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-req.Context().Done():
				return
			}
		}
		r.mu.Lock()
		r.bodies[req.URL.Path] = append(r.bodies[req.URL.Path], string(b))
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *scriptedReceiver) got(path string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.bodies[path])
}

func (r *scriptedReceiver) arrived() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started
}

// TestPushSubscriptionFollowsRegistration: a push subscription starts
// with the registration, moves to a new URL when the registration
// changes, and stops when the binding goes (the group's messages then
// wait for another consumer: an HTTP pull gets them).
func TestPushSubscriptionFollowsRegistration(t *testing.T) {
	e := newEnv(t)
	rcv := newScriptedReceiver(t, http.StatusOK)
	a := e.httpApp("orders", "")
	reg := func(consume string) { e.register("orders", []string{"p1:" + topic}, []string{consume}) }

	reg("g1:" + topic + ",push_url=" + rcv.srv.URL + "/a")
	a.publish(topic, []byte("one"))
	sidecartest.WaitFor(t, sidecartest.Scaled(10*time.Second), "one pushed to /a", func() bool { return len(rcv.got("/a")) == 1 })

	reg("g1:" + topic + ",push_url=" + rcv.srv.URL + "/b,push_concurrency=2")
	a.publish(topic, []byte("two"))
	sidecartest.WaitFor(t, sidecartest.Scaled(10*time.Second), "two pushed to /b", func() bool { return len(rcv.got("/b")) == 1 })

	reg("g1:" + topic) // no push any more
	a.publish(topic, []byte("three"))
	ps := a.pullUntil("g1", topic, 1)
	if ps[0].body() != "three" {
		t.Fatalf("pulled %q, want three", ps[0].body())
	}
	a.mustAnswer("ack", ps[0].DeliveryID)
	if got := append(rcv.got("/a"), rcv.got("/b")...); !slices.Equal(got, []string{"one", "two"}) {
		t.Errorf("pushed %v, want [one two]", got)
	}
}

// TestPushDeadLetter: a receiver that always fails makes every POST a
// failed attempt; after the group's max_attempts the message is on its
// dead-letter topic, through the ordinary nack path.
func TestPushDeadLetter(t *testing.T) {
	e := newEnv(t)
	rcv := newScriptedReceiver(t, http.StatusInternalServerError)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic + ",max_attempts=2,push_url=" + rcv.srv.URL + "/in"})
	e.register("ops", nil, []string{"audit:" + dlqTopic})
	e.httpApp("orders", "").publish(topic, []byte("poison"))
	ops := e.httpApp("ops", "")
	ps := ops.pullUntil("audit", dlqTopic, 1)
	if ps[0].body() != "poison" {
		t.Fatalf("dead letter %q, want poison", ps[0].body())
	}
	ops.mustAnswer("ack", ps[0].DeliveryID)
	if n := len(rcv.got("/in")); n != 2 {
		t.Errorf("the receiver got %d POSTs, want max_attempts = 2", n)
	}
}

// TestPushShutdown: Shutdown lets POSTs in progress finish and their acks
// count; a POST cut short by the shutdown's deadline is handed back, not
// a failed attempt, and the next sidecar on the same data directory
// pushes it again.
func TestPushShutdown(t *testing.T) {
	cluster := sidecartest.NATSCluster(t)
	dir := t.TempDir()
	open := func() *env {
		b, err := brokers.Open(context.Background(), cluster, sidecartest.Logger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return newEnvWith(t, b, func(c *msgmesh.Config) { c.DataDir = dir })
	}
	rcv := newScriptedReceiver(t, http.StatusOK)
	rcv.hold = make(chan struct{})
	e := open()
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic + ",push_url=" + rcv.srv.URL + "/in,push_concurrency=2,push_timeout=20s"})
	a := e.httpApp("orders", "")
	a.publish(topic, []byte("m1"))
	a.publish(topic, []byte("m2"))
	sidecartest.WaitFor(t, sidecartest.Scaled(10*time.Second), "two POSTs in progress", func() bool { return rcv.arrived() == 2 })

	// The POSTs in progress finish during the shutdown and count.
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(20*time.Second))
		defer cancel()
		stopped <- e.sc.Shutdown(ctx)
	}()
	sidecartest.WaitFor(t, sidecartest.Scaled(10*time.Second), "the sidecar to stop taking requests", func() bool { return !sidecartest.Healthy(e.http) })
	rcv.mu.Lock()
	close(rcv.hold)
	rcv.hold = make(chan struct{}) // the next ones wait again
	rcv.mu.Unlock()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if st := e.sc.Stats(); st.Acked != 2 || st.Nacked != 0 {
		t.Fatalf("after shutdown: %d acked, %d nacked; want the 2 POSTs in progress acked", st.Acked, st.Nacked)
	}

	// A POST still running at the shutdown's deadline is cut short and
	// handed back without a failed attempt.
	b, err := brokers.Open(context.Background(), cluster, sidecartest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	// Not newEnvWith: its cleanup would fail on this shutdown's
	// deadline, which Shutdown returns again.
	sc2, err := msgmesh.New(msgmesh.Config{DataDir: dir, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Broker: b, Logger: sidecartest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e2 := &env{t: t, sc: sc2, addr: sc2.Addr().String(), http: sc2.HTTPAddr().String()}
	e2.httpApp("orders", "").publish(topic, []byte("m3"))
	sidecartest.WaitFor(t, sidecartest.Scaled(10*time.Second), "the third POST in progress", func() bool { return rcv.arrived() == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(300*time.Millisecond))
	defer cancel()
	if err := e2.sc.Shutdown(ctx); err != nil {
		t.Logf("shutdown at its deadline: %v", err)
	}
	if st := e2.sc.Stats(); st.Acked != 0 || st.Nacked != 0 {
		t.Fatalf("after a shutdown that cut a POST short: %d acked, %d nacked; want neither", st.Acked, st.Nacked)
	}
	rcv.mu.Lock()
	close(rcv.hold)
	rcv.hold = nil
	rcv.mu.Unlock()
	open() // pushes m3 again
	sidecartest.WaitFor(t, sidecartest.Scaled(30*time.Second), "m3 pushed again by the next sidecar", func() bool { return slices.Contains(rcv.got("/in"), "m3") })
	if got := rcv.got("/in"); !slices.Equal(got[:2], []string{"m1", "m2"}) && !slices.Equal(got[:2], []string{"m2", "m1"}) {
		t.Errorf("answered POSTs %v; want m1 and m2 first", got)
	}
}
