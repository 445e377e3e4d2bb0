package schema

import (
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"
)

// orderSchema is the nested schema most tests use: records in records, an
// array of records, a map, unions (nullable and three-way), an enum, a
// fixed, and the logical types uuid, timestamp-millis, date and decimal.
const orderSchema = `{
  "type": "record", "name": "Order", "namespace": "com.acme",
  "fields": [
    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "created", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"]}},
    {"name": "customer", "type": {"type": "record", "name": "Customer", "fields": [
      {"name": "name", "type": "string"},
      {"name": "email", "type": ["null", "string"], "default": null},
      {"name": "address", "type": ["null", {"type": "record", "name": "Address", "fields": [
        {"name": "street", "type": "string"},
        {"name": "zip", "type": "string"}
      ]}], "default": null}
    ]}},
    {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "Item", "fields": [
      {"name": "sku", "type": "string"},
      {"name": "qty", "type": "int"},
      {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}}
    ]}}},
    {"name": "attributes", "type": {"type": "map", "values": "string"}, "default": {}},
    {"name": "discount", "type": ["null", "double", {"type": "record", "name": "Coupon", "fields": [
      {"name": "code", "type": "string"},
      {"name": "percent", "type": "int"}
    ]}], "default": null},
    {"name": "checksum", "type": {"type": "fixed", "name": "MD5", "size": 16}},
    {"name": "note", "type": "string", "default": "none"}
  ]
}`

// orderJSON is a valid order in the natural JSON form.
const orderJSON = `{
  "id": "0f8fad5b-d9cb-469f-a165-70867728950e",
  "created": "2024-05-01T12:00:00.250Z",
  "day": "2024-05-01",
  "status": "PAID",
  "customer": {"name": "Ada", "email": "ada@example.com", "address": {"street": "1 Main St", "zip": "12345"}},
  "items": [
    {"sku": "A-1", "qty": 2, "price": 19.99},
    {"sku": "B-2", "qty": 1, "price": "5"},
    {"sku": "C-3", "qty": 10, "price": -0.5}
  ],
  "attributes": {"channel": "web", "gift": "no"},
  "discount": {"code": "SPRING", "percent": 10},
  "checksum": "0123456789abcdef"
}`

// listSchema is recursive: a linked list.
const listSchema = `{"type": "record", "name": "Node", "fields": [
  {"name": "value", "type": "int"},
  {"name": "next", "type": ["null", "Node"], "default": null}
]}`

func mustParse(t testing.TB, text string) avro.Schema {
	t.Helper()
	p, err := parseSchema(text)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return p.schema
}

// topic returns a schema set with the given schemas as versions 1..n and
// ids 10, 11, ...
func topic(subject string, schemas ...string) TopicSchemas {
	ts := TopicSchemas{Subject: subject}
	for i, s := range schemas {
		ts.Versions = append(ts.Versions, SchemaVersion{Subject: subject, Version: i + 1, ID: 10 + i, Schema: s})
	}
	return ts
}

// frame puts a datum in the Confluent wire format.
func frame(id int, datum []byte) []byte {
	b := []byte{0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(id))
	return append(b, datum...)
}

// jsonToBinary encodes a JSON document with the validator's JSON path and
// returns the raw Avro datum (without the Confluent header).
func jsonToBinary(t testing.TB, schemaText, doc string) []byte {
	t.Helper()
	v := NewValidator(ValidatorOptions{})
	res, err := v.Validate(topic("t", schemaText), []byte(doc), Hints{ContentType: "application/json"})
	if err != nil {
		t.Fatalf("Validate(JSON): %v", err)
	}
	return res.Body[5:]
}

var avroBinary = Hints{ContentType: ContentTypeAvro}

func jsonUnmarshal(s string, v any) error {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	return dec.Decode(v)
}

func jsonMarshal(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
