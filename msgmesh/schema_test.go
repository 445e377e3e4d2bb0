package msgmesh_test

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/schema"
)

const orderV1 = `{"type":"record","name":"Order","namespace":"com.acme","fields":[
 {"name":"id","type":"string"},
 {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
 {"name":"items","type":{"type":"array","items":{"type":"record","name":"Item","fields":[
   {"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}}]}`

// orderV2 adds a field with a default: BACKWARD compatible.
const orderV2 = `{"type":"record","name":"Order","namespace":"com.acme","fields":[
 {"name":"id","type":"string"},
 {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
 {"name":"items","type":{"type":"array","items":{"type":"record","name":"Item","fields":[
   {"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}},
 {"name":"note","type":"string","default":""}]}`

type item struct {
	SKU string `avro:"sku"`
	Qty int    `avro:"qty"`
}
type order struct {
	ID     string `avro:"id"`
	Status string `avro:"status"`
	Items  []item `avro:"items"`
}

// confluent frames an Avro body with the schema id.
func confluent(t *testing.T, id int, schemaText string, v any) []byte {
	t.Helper()
	b, err := avro.Marshal(avro.MustParse(schemaText), v)
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(id)), b...)
}

// TestSchemaValidation: publishes on a topic with a schema are validated
// before the broker sees them; a new version pushed at run time takes
// effect without a restart.
func TestSchemaValidation(t *testing.T) {
	ctx := context.Background()
	reg, err := schema.New(ctx, schema.NewMemoryStore(), schema.RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v1, err := reg.Register(ctx, topic, orderV1)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	push := func(p schema.Policy) {
		ts, err := reg.TopicSchemas(topic)
		if err != nil {
			t.Fatal(err)
		}
		e.sc.SetSchemas(map[string]msgmesh.TopicSchema{topic: {Schemas: ts, Policy: p}})
	}
	push(schema.PolicyEnforce)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	got := sidecartest.NewTally()
	subscribe(t, e.dial(), "g1", "c", got)
	pub := e.dial()

	good := order{ID: "o-1", Status: "NEW", Items: []item{{SKU: "a", Qty: 1}}}
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: confluent(t, v1.ID, orderV1, good)}); err != nil {
		t.Fatalf("valid Avro refused: %v", err)
	}
	for name, c := range map[string]struct {
		body    []byte
		headers []mesh.HeaderField
		path    string
	}{
		"bad enum":      {body: []byte(`{"id":"o","status":"LOST","items":[]}`), headers: jsonCT, path: "status"},
		"wrong type":    {body: []byte(`{"id":"o","status":"NEW","items":[{"sku":"a","qty":"two"}]}`), headers: jsonCT, path: "items[0].qty"},
		"missing field": {body: []byte(`{"id":"o","items":[]}`), headers: jsonCT, path: "status"},
		"truncated":     {body: confluent(t, v1.ID, orderV1, good)[:9], path: ""},
		"unknown id":    {body: confluent(t, 9999, orderV1, good), path: ""},
	} {
		_, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: c.body, Headers: c.headers})
		if client.CodeOf(err) != mesh.CodeSchemaInvalid {
			t.Errorf("%s: publish error %v, want SCHEMA_INVALID", name, err)
			continue
		}
		if c.path != "" && !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: error %q does not name the field %s", name, err, c.path)
		}
	}
	// JSON that matches is encoded to Avro for consumers.
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Headers: jsonCT,
		Body: []byte(`{"id":"o-json","status":"PAID","items":[{"sku":"b","qty":2}]}`)}); err != nil {
		t.Fatalf("valid JSON refused: %v", err)
	}
	sidecartest.WaitFor(t, 10*time.Second, "the two valid messages", func() bool { return got.Count() >= 2 })
	if got.Count() != 2 {
		t.Fatalf("%d messages reached the consumer; invalid ones must not reach the broker", got.Count())
	}
	for body := range got.Bodies() {
		if body[0] != 0 || binary.BigEndian.Uint32([]byte(body[1:5])) != uint32(v1.ID) {
			t.Errorf("consumer got a body not in the Confluent wire format of schema %d: %q", v1.ID, body)
		}
	}

	// A new version, pushed while running, is accepted at once.
	v2, err := reg.Register(ctx, topic, orderV2)
	if err != nil {
		t.Fatal(err)
	}
	body2 := confluent(t, v2.ID, orderV2, map[string]any{"id": "o-2", "status": "NEW", "items": []any{}, "note": "hi"})
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: body2}); client.CodeOf(err) != mesh.CodeSchemaInvalid {
		t.Fatalf("a body of a version the sidecar has not been told about: %v, want SCHEMA_INVALID", err)
	}
	push(schema.PolicyEnforce)
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: body2}); err != nil {
		t.Fatalf("after the new version was pushed: %v", err)
	}
	// Warn-only publishes what does not match.
	push(schema.PolicyWarn)
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: []byte("not avro")}); err != nil {
		t.Fatalf("policy warn refused a publish: %v", err)
	}
	sidecartest.WaitFor(t, 10*time.Second, "the messages published after the push", func() bool { return got.Count() >= 4 })
}

var jsonCT = []mesh.HeaderField{{Key: schema.HeaderContentType, Value: schema.ContentTypeJSON}}
