package msgmesh_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// headerCase is one set of message headers the sidecar's header rule
// (docs/protocol.md §5.3) refuses, and the code it refuses them with.
type headerCase struct {
	name    string
	headers []mesh.HeaderField
	code    mesh.Code
}

func refusedHeaders() []headerCase {
	h := func(kv ...string) []mesh.HeaderField {
		var hs []mesh.HeaderField
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, mesh.HeaderField{Key: kv[i], Value: kv[i+1]})
		}
		return hs
	}
	inv := mesh.CodeInvalid
	return []headerCase{
		// JetStream's own headers: dedup, optimistic concurrency, purge, TTL.
		{"Nats-Msg-Id", h("Nats-Msg-Id", "id-1"), inv},
		{"nats-expected-stream lower case", h("nats-expected-stream", "other"), inv},
		{"Nats-Rollup", h("Nats-Rollup", "all"), inv},
		{"Nats-TTL", h("Nats-TTL", "1s"), inv},
		// nats.go reads Status on an empty message as a server status.
		{"Status", h("Status", "404"), inv},
		// The sidecar's own namespace.
		{"Msgmesh-Key", h("Msgmesh-Key", "k2"), inv},
		{"Msgmesh-Key-B64", h("Msgmesh-Key-B64", "azI="), inv},
		{"msgmesh- lower case", h("msgmesh-dead-letter-reason", "x"), inv},
		// RocketMQ's system properties, in any case, and its "__" names.
		{"KEYS", h("KEYS", "k1 k2"), inv},
		{"TAGS", h("TAGS", "TagA"), inv},
		{"DELAY", h("DELAY", "3"), inv},
		{"keys lower case", h("keys", "k1"), inv},
		{"UNIQ_KEY", h("UNIQ_KEY", "abc"), inv},
		{"__STARTDELIVERTIME", h("__STARTDELIVERTIME", "1"), inv},
		// One name once, whatever its case.
		{"duplicate", h("X-Trace", "a", "x-trace", "b"), inv},
		{"duplicate same case", h("X-A", "a", "X-A", "b"), inv},
		// Names and values every broker can carry.
		{"empty name", h("", "v"), inv},
		{"space in name", h("X A", "v"), inv},
		{"colon in name", h("X:A", "v"), inv},
		{"non-ASCII name", h("X-Größe", "v"), inv},
		{"LF in value", h("X-A", "a\nb"), inv},
		{"CR in value", h("X-A", "a\rb"), inv},
		{"RocketMQ separator in value", h("X-A", "a\x01b"), inv},
		{"NUL in value", h("X-A", "a\x00b"), inv},
		// Over the header bytes bound (64 KB made RocketMQ fail before).
		{"70 KB of headers", h("X-Big", strings.Repeat("v", 70<<10)), mesh.CodeMessageTooBig},
	}
}

// TestHeaderRule: the sidecar applies one header rule before any broker
// sees a message, identically on every broker and on both publish paths
// (mesh PUBLISH and HTTP POST /v1/publish): reserved and duplicate names
// are refused with INVALID (a 400), too many header bytes with
// MESSAGE_TOO_BIG (a 413), never BROKER_ERROR or UNAVAILABLE. Nothing
// refused is stored, the connection that sent it goes on, and allowed
// headers (trace context included) arrive intact.
func TestHeaderRule(t *testing.T) {
	for _, kit := range sidecartest.BrokerKits() {
		t.Run(kit.Name, func(t *testing.T) {
			e := newEnvOn(t, kit.Start(t))
			e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
			var mu sync.Mutex
			var delivered []*client.Delivery
			if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
				mu.Lock()
				delivered = append(delivered, d)
				mu.Unlock()
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			pub := e.dial()
			ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
			defer cancel()
			// Every publish has the same key: one partition or queue, so
			// anything refused but stored would arrive before the last
			// allowed message.
			const key = "k"

			// Two different bodies with one Nats-Msg-Id: JetStream would
			// ack both and store only the first.
			for _, body := range []string{"refused-dedup-1", "refused-dedup-2"} {
				_, err := pub.Publish(ctx, &client.Message{Topic: topic, Key: key, Body: []byte(body),
					Headers: []mesh.HeaderField{{Key: "Nats-Msg-Id", Value: "same"}}})
				if client.CodeOf(err) != mesh.CodeInvalid {
					t.Errorf("publish %s with Nats-Msg-Id: %v, want INVALID", body, err)
				}
			}
			for _, tc := range refusedHeaders() {
				_, err := pub.Publish(ctx, &client.Message{Topic: topic, Key: key, Body: []byte("refused-" + tc.name), Headers: tc.headers})
				if client.CodeOf(err) != tc.code {
					t.Errorf("mesh publish with %s: %v, want %s", tc.name, err, tc.code)
				}
			}
			for _, tc := range httpRefusedHeaders() {
				status, code := httpPublish(t, e.http, topic, key, "refused-http-"+tc.name, tc.header)
				if status != tc.status || code != tc.code {
					t.Errorf("HTTP publish with %s: %d %s, want %d %s", tc.name, status, code, tc.status, tc.code)
				}
			}

			// The same connection, and HTTP, still publish; allowed
			// headers (trace context, a content type, a schema hint, an
			// app's own) arrive as sent.
			allowed := []mesh.HeaderField{
				{Key: "traceparent", Value: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
				{Key: "tracestate", Value: "vendor=1"},
				{Key: "Content-Type", Value: "text/plain"},
				{Key: "Msgmesh-Schema-Version", Value: "latest"},
				{Key: "X-Order", Value: "7 \t ü"},
			}
			if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Key: key, Body: []byte("allowed-mesh"), Headers: allowed}); err != nil {
				t.Fatalf("publish with allowed headers on the same connection: %v", err)
			}
			if status, code := httpPublish(t, e.http, topic, key, "allowed-http", http.Header{"Msgmesh-Header-X-Order": {"8"}}); status != http.StatusOK {
				t.Fatalf("HTTP publish with an allowed header: %d %s", status, code)
			}
			sidecartest.WaitFor(t, 30*time.Second, "the allowed messages", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(delivered) >= 2
			})
			mu.Lock()
			defer mu.Unlock()
			for _, d := range delivered {
				if strings.HasPrefix(string(d.Body), "refused-") {
					t.Errorf("a refused message was stored and delivered: %q %v", d.Body, d.Headers)
				}
			}
			for _, d := range delivered {
				switch string(d.Body) {
				case "allowed-mesh":
					if got, want := sortedHeaders(d.Headers), sortedHeaders(allowed); !slices.Equal(got, want) {
						t.Errorf("headers arrived as %v, want %v", got, want)
					}
				case "allowed-http":
					if got := sortedHeaders(d.Headers); !slices.Equal(got, []mesh.HeaderField{{Key: "x-order", Value: "8"}}) {
						t.Errorf("HTTP headers arrived as %v", got)
					}
				}
			}
		})
	}
}

// httpHeaderCase is a refused header set as the HTTP API receives it.
type httpHeaderCase struct {
	name   string
	header http.Header
	status int
	code   string
}

func httpRefusedHeaders() []httpHeaderCase {
	bad := func(name string, h http.Header) httpHeaderCase {
		return httpHeaderCase{name, h, http.StatusBadRequest, "INVALID"}
	}
	return []httpHeaderCase{
		bad("Nats-Msg-Id", http.Header{"Msgmesh-Header-Nats-Msg-Id": {"id-1"}}),
		bad("Nats-Expected-Last-Sequence", http.Header{"Msgmesh-Header-Nats-Expected-Last-Sequence": {"0"}}),
		bad("Msgmesh-Key", http.Header{"Msgmesh-Header-Msgmesh-Key": {"k"}}),
		bad("Keys", http.Header{"Msgmesh-Header-Keys": {"k"}}),
		bad("Tags", http.Header{"Msgmesh-Header-Tags": {"TagA"}}),
		bad("Status", http.Header{"Msgmesh-Header-Status": {"404"}}),
		bad("two values", http.Header{"Msgmesh-Header-X-A": {"a", "b"}}),
		bad("empty name", http.Header{"Msgmesh-Header-": {"v"}}),
		{"70 KB of headers", http.Header{"Msgmesh-Header-X-Big": {strings.Repeat("v", 70<<10)}}, http.StatusRequestEntityTooLarge, "MESSAGE_TOO_BIG"},
	}
}

// httpPublish POSTs body to /v1/publish/{topic} with h and returns the
// status and, for an error, its code name.
func httpPublish(t testing.TB, addr, topic, key, body string, h http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/publish/"+topic, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	if key != "" {
		req.Header.Set("Msgmesh-Key", key)
	}
	return doPublish(t, req)
}

func doPublish(t testing.TB, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, ""
	}
	var eb struct{ Error, Message string }
	if err := json.Unmarshal(b, &eb); err != nil || eb.Message == "" {
		t.Errorf("HTTP %d error body %q is not {error, message}", resp.StatusCode, b)
	}
	return resp.StatusCode, eb.Error
}

// sortedHeaders orders headers by name: NATS does not keep the order of
// different names.
func sortedHeaders(hs []mesh.HeaderField) []mesh.HeaderField {
	out := slices.Clone(hs)
	slices.SortFunc(out, func(a, b mesh.HeaderField) int {
		return bytes.Compare([]byte(a.Key), []byte(b.Key))
	})
	return out
}
