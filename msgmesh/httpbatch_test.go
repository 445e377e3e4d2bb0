package msgmesh_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/schema"
)

// batchAnswer is the answer to a CloudEvents batch publish.
type batchAnswer struct {
	Error, Message string
	Results        []struct {
		Stream    string `json:"stream"`
		Partition *int32 `json:"partition"`
		Offset    *int64 `json:"offset"`
		MessageID string `json:"message_id"`
		Error     string `json:"error"`
		Message   string `json:"message"`
	}
}

// sendBatch POSTs events as a batch built by the CloudEvents SDK's own
// batch request, as app, with extra request headers (name, value pairs).
func sendBatch(t *testing.T, e *env, app string, events []cloudevents.Event, extra ...string) (int, batchAnswer, string) {
	t.Helper()
	req, err := cehttp.NewHTTPRequestFromEvents(context.Background(), "http://"+e.http+"/v1/publish/"+topic, events)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Msgmesh-App", app)
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Add(extra[i], extra[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var ans batchAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		t.Fatalf("batch answer %d is not JSON: %v: %s", resp.StatusCode, err, raw)
	}
	return resp.StatusCode, ans, string(raw)
}

// newEvent is an event with the attributes every test event has.
func newEvent(t *testing.T, id, ct string, data any) cloudevents.Event {
	t.Helper()
	ev := cloudevents.NewEvent()
	ev.SetID(id)
	ev.SetSource("/orders/batcher")
	ev.SetType("com.example.order.created")
	if err := ev.SetData(ct, data); err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestCloudEventsBatchPublish: a batch sent by the CloudEvents SDK
// publishes each event as its own message on every broker, answered with
// one result per event in order; each arrives with its attributes, data,
// its partitionkey as key and the request's message header.
func TestCloudEventsBatchPublish(t *testing.T) {
	for _, kit := range sidecartest.BrokerKits() {
		t.Run(kit.Name, func(t *testing.T) {
			e := newEnvOn(t, kit.Start(t))
			e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
			const n = 40
			var events []cloudevents.Event
			for i := range n {
				var ev cloudevents.Event
				switch i % 3 {
				case 0:
					ev = newEvent(t, fmt.Sprintf("b%d", i), cloudevents.ApplicationJSON, map[string]any{"order": i})
				case 1:
					ev = newEvent(t, fmt.Sprintf("b%d", i), "text/plain", fmt.Sprintf("note %d", i))
				default:
					ev = newEvent(t, fmt.Sprintf("b%d", i), "application/octet-stream", []byte{byte(i), 0, 0xff})
					ev.SetExtension("partitionkey", fmt.Sprintf("k%d", i))
				}
				events = append(events, ev)
			}
			status, ans, raw := sendBatch(t, e, "orders", events, "Msgmesh-Header-X-Batch", "nightly")
			if status != http.StatusOK || len(ans.Results) != n || ans.Error != "" {
				t.Fatalf("batch: %d, %d results, want 200 and %d: %s", status, len(ans.Results), n, raw)
			}
			for i, r := range ans.Results {
				if r.Error != "" || r.Stream == "" || r.Partition == nil || r.Offset == nil {
					t.Errorf("result %d: %+v, want the stored place", i, r)
				}
			}
			if st := e.sc.Stats(); st.Published != n {
				t.Errorf("published %d, want %d", st.Published, n)
			}

			got := map[string]pulled{}
			a := e.httpApp("orders", "")
			for _, p := range a.pullUntil("g1", topic, n) {
				got[hv(p, "ce_id")] = p
				a.mustAnswer("ack", p.DeliveryID)
			}
			for i, ev := range events {
				p, ok := got[ev.ID()]
				if !ok {
					t.Fatalf("event %s not delivered (got %d)", ev.ID(), len(got))
				}
				if hv(p, "ce_source") != ev.Source() || hv(p, "ce_type") != ev.Type() || hv(p, "content-type") != ev.DataContentType() {
					t.Errorf("event %s arrived with headers %+v", ev.ID(), p.Headers)
				}
				if hv(p, "x-batch") != "nightly" {
					t.Errorf("event %s without the request's message header: %+v", ev.ID(), p.Headers)
				}
				if p.Body == nil || !sameJSONOrBytes(*p.Body, ev.Data()) {
					t.Errorf("event %s body %q, want %q", ev.ID(), deref(p.Body), ev.Data())
				}
				if i%3 == 2 && (p.Key == nil || *p.Key != fmt.Sprintf("k%d", i)) {
					t.Errorf("event %s key %v, want its partitionkey k%d", ev.ID(), p.Key, i)
				}
			}
		})
	}
}

// TestCloudEventsBatchPartialFailure: an event the schema stage refuses
// fails alone; the answer carries that event's error and status and
// every other event's place, and only the others reach the broker.
func TestCloudEventsBatchPartialFailure(t *testing.T) {
	ctx := context.Background()
	reg, err := schema.New(ctx, schema.NewMemoryStore(), schema.RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Register(ctx, topic, orderV1); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	ts, err := reg.TopicSchemas(topic)
	if err != nil {
		t.Fatal(err)
	}
	e.sc.SetSchemas(map[string]msgmesh.TopicSchema{topic: {Schemas: ts, Policy: schema.PolicyEnforce}})
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})

	good := map[string]any{"id": "o", "status": "NEW", "items": []any{}}
	events := []cloudevents.Event{
		newEvent(t, "ok1", cloudevents.ApplicationJSON, good),
		newEvent(t, "bad", cloudevents.ApplicationJSON, map[string]any{"id": "o", "status": "LOST", "items": []any{}}),
		newEvent(t, "ok2", cloudevents.ApplicationJSON, good),
	}
	status, ans, raw := sendBatch(t, e, "orders", events)
	if status != http.StatusBadRequest || ans.Error != "SCHEMA_INVALID" || !strings.Contains(ans.Message, "1 of 3 events") || len(ans.Results) != 3 {
		t.Fatalf("batch with one invalid event: %d %s; want 400 SCHEMA_INVALID naming 1 of 3 with 3 results", status, raw)
	}
	for i, r := range ans.Results {
		if failed := r.Error != ""; failed != (i == 1) {
			t.Errorf("result %d: %+v; want only event 1 failed", i, r)
		}
	}
	if ans.Results[1].Error != "SCHEMA_INVALID" || ans.Results[0].Offset == nil || ans.Results[2].Offset == nil {
		t.Errorf("results: %s", raw)
	}
	if st := e.sc.Stats(); st.Published != 2 {
		t.Errorf("published %d, want the 2 valid events", st.Published)
	}
	ids := map[string]bool{}
	a := e.httpApp("orders", "")
	for _, p := range a.pullUntil("g1", topic, 2) {
		ids[hv(p, "ce_id")] = true
		a.mustAnswer("ack", p.DeliveryID)
	}
	if !ids["ok1"] || !ids["ok2"] || len(ids) != 2 {
		t.Errorf("delivered %v, want ok1 and ok2", ids)
	}
}

// hv is the value of a pulled delivery's header name ("" if none).
func hv(p pulled, name string) string {
	v, _ := p.header(name)
	return v
}

// deref is *p, or the zero value for nil.
func deref[T any](p *T) T {
	var v T
	if p != nil {
		v = *p
	}
	return v
}

// sameJSONOrBytes compares two bodies as JSON values when both are JSON,
// otherwise byte for byte.
func sameJSONOrBytes(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil {
		return fmt.Sprint(x) == fmt.Sprint(y)
	}
	return string(a) == string(b)
}

// TestCloudEventsBatchKeyOrder: events with the same partitionkey reach
// the broker in the batch's order (the stream's order is the delivery
// order here), while events of other keys go side by side.
func TestCloudEventsBatchKeyOrder(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	const keys, perKey = 3, 30
	var events []cloudevents.Event
	for i := range keys * perKey {
		ev := newEvent(t, fmt.Sprintf("o%d", i), "text/plain", fmt.Sprint(i/keys))
		ev.SetExtension("partitionkey", fmt.Sprintf("k%d", i%keys))
		events = append(events, ev)
	}
	if status, _, raw := sendBatch(t, e, "orders", events); status != http.StatusOK {
		t.Fatalf("batch: %d %s", status, raw)
	}
	a := e.httpApp("orders", "")
	last := map[string]int{}
	for _, p := range a.pullUntil("g1", topic, keys*perKey) {
		a.mustAnswer("ack", p.DeliveryID)
		var n int
		if _, err := fmt.Sscan(p.body(), &n); err != nil {
			t.Fatalf("body %q: %v", p.body(), err)
		}
		k := deref(p.Key)
		if prev, ok := last[k]; ok && n != prev+1 {
			t.Errorf("key %s: event %d came after %d", k, n, prev)
		}
		last[k] = n
	}
	if len(last) != keys {
		t.Errorf("keys delivered: %v", last)
	}
}
