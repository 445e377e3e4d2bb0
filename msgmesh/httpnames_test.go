package msgmesh_test

import (
	"context"
	"encoding/binary"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/schema"
)

// TestHTTPHeaderNames: message header names given over HTTP arrive in
// lower case whatever case the request used (HTTP names are
// case-insensitive and Go canonicalises them), or spelled exactly as
// Msgmesh-Header-Names lists them; a spelling for a header not sent is
// refused, nothing is stored.
func TestHTTPHeaderNames(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	var mu sync.Mutex
	got := map[string][]mesh.HeaderField{}
	if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		mu.Lock()
		got[string(d.Body)] = sortedHeaders(d.Headers)
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Raw header names, as a client that keeps case sends them; the
	// server side sees them canonicalised.
	raw := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h[kv[i]] = append(h[kv[i]], kv[i+1])
		}
		return h
	}
	cases := []struct {
		body string
		h    http.Header
		want []mesh.HeaderField
	}{
		{"lower", raw("Msgmesh-Header-traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "Msgmesh-Header-x-lower", "1"),
			[]mesh.HeaderField{{Key: "traceparent", Value: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, {Key: "x-lower", Value: "1"}}},
		{"canonical in, lower out", raw("Msgmesh-Header-X-Upper", "2"), []mesh.HeaderField{{Key: "x-upper", Value: "2"}}},
		{"spelled", raw("Msgmesh-Header-Names", "X-Upper, eventType", "Msgmesh-Header-x-upper", "3", "Msgmesh-Header-EVENTTYPE", "created", "Msgmesh-Header-Other", "o"),
			[]mesh.HeaderField{{Key: "X-Upper", Value: "3"}, {Key: "eventType", Value: "created"}, {Key: "other", Value: "o"}}},
	}
	for _, c := range cases {
		if status, code := httpPublish(t, e.http, topic, "", c.body, c.h); status != http.StatusOK {
			t.Fatalf("%s: HTTP publish %d %s", c.body, status, code)
		}
	}
	if status, code := httpPublish(t, e.http, topic, "", "typo", raw("Msgmesh-Header-Names", "X-Uper", "Msgmesh-Header-X-Upper", "4")); status != http.StatusBadRequest || code != "INVALID" {
		t.Errorf("a spelling for a header not sent: %d %s, want 400 INVALID", status, code)
	}
	sidecartest.WaitFor(t, 10*time.Second, "the published messages", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= len(cases)
	})
	mu.Lock()
	defer mu.Unlock()
	for _, c := range cases {
		if want := sortedHeaders(c.want); !slices.Equal(got[c.body], want) {
			t.Errorf("%s: headers arrived as %v, want %v", c.body, got[c.body], want)
		}
	}
	if _, ok := got["typo"]; ok {
		t.Errorf("the refused publish was stored")
	}
}

// TestHTTPContentTypeSchema: on a topic with a schema, an HTTP publish's own
// Content-Type says how its body is encoded: application/json is checked
// and re-encoded to the Confluent wire format, bad JSON is refused with
// SCHEMA_INVALID, and without a JSON content type the same body is not
// taken for JSON.
func TestHTTPContentTypeSchema(t *testing.T) {
	ctx := context.Background()
	reg, err := schema.New(ctx, schema.NewMemoryStore(), schema.RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v1, err := reg.Register(ctx, topic, orderV1)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := reg.TopicSchemas(topic)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.sc.SetSchemas(map[string]msgmesh.TopicSchema{topic: {Schemas: ts, Policy: schema.PolicyEnforce}})
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	got := sidecartest.NewTally()
	subscribe(t, e.dial(), "g1", "c", got)

	post := func(ctype, body string) (int, string) {
		req, err := http.NewRequest(http.MethodPost, "http://"+e.http+"/v1/publish/"+topic, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", ctype)
		return doPublish(t, req)
	}
	good := `{"id":"o-1","status":"NEW","items":[{"sku":"a","qty":1}]}`
	if status, code := post("application/json", good); status != http.StatusOK {
		t.Fatalf("valid JSON with Content-Type application/json: %d %s", status, code)
	}
	if status, code := post("application/json; charset=utf-8", `{"id":"o-2","status":"LOST","items":[]}`); status != http.StatusBadRequest || code != "SCHEMA_INVALID" {
		t.Errorf("invalid JSON: %d %s, want 400 SCHEMA_INVALID", status, code)
	}
	if status, code := post("application/octet-stream", good); status != http.StatusBadRequest || code != "SCHEMA_INVALID" {
		t.Errorf("JSON sent as application/octet-stream: %d %s, want 400 SCHEMA_INVALID (not the Confluent wire format)", status, code)
	}
	sidecartest.WaitFor(t, 10*time.Second, "the valid message", func() bool { return got.Count() >= 1 })
	for body := range got.Bodies() {
		if len(body) < 5 || body[0] != 0 || binary.BigEndian.Uint32([]byte(body[1:5])) != uint32(v1.ID) {
			t.Errorf("consumer got %q, not the Confluent wire format of schema %d", body, v1.ID)
		}
	}
}
