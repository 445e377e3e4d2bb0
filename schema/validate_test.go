package schema

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
)

// bin builds Avro binary by hand, for bodies hamba/avro would refuse to
// write.
type bin []byte

func (b bin) long(v int64) bin   { return appendLong(b, v) }
func (b bin) str(s string) bin   { return append(b.long(int64(len(s))), s...) }
func (b bin) raw(p ...byte) bin  { return append(b, p...) }
func (b bin) bytes(p []byte) bin { return append(b.long(int64(len(p))), p...) }

// orderParts are the fields of a valid Order, each already encoded; tests
// replace one with broken bytes.
type orderParts struct {
	id, created, day, status, customer, items, attributes, discount, checksum, note bin
}

func validOrderParts() orderParts {
	return orderParts{
		id:      bin{}.str("0f8fad5b-d9cb-469f-a165-70867728950e"),
		created: bin{}.long(1714564800250),
		day:     bin{}.long(19844),
		status:  bin{}.long(1),
		// name, email: branch 1 "ada@x", address: branch 1 {street, zip}
		customer: bin{}.str("Ada").long(1).str("ada@x").long(1).str("1 Main St").str("12345"),
		// two items: {"A-1", 2, 19.99}, {"B-2", 1, 5.00}
		items:      bin{}.long(2).str("A-1").long(2).bytes([]byte{0x07, 0xcf}).str("B-2").long(1).bytes([]byte{0x01, 0xf4}).long(0),
		attributes: bin{}.long(1).str("channel").str("web").long(0),
		discount:   bin{}.long(2).str("SPRING").long(10),
		checksum:   bin("0123456789abcdef"),
		note:       bin{}.str("x"),
	}
}

func (p orderParts) bytes() []byte {
	var b []byte
	for _, part := range []bin{p.id, p.created, p.day, p.status, p.customer, p.items, p.attributes, p.discount, p.checksum, p.note} {
		b = append(b, part...)
	}
	return b
}

// hambaOrder is a valid Order as hamba/avro's generic values.
func hambaOrder() map[string]any {
	return map[string]any{
		"id":       "0f8fad5b-d9cb-469f-a165-70867728950e",
		"created":  time.UnixMilli(1714564800250).UTC(),
		"day":      time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC),
		"status":   "PAID",
		"customer": map[string]any{"name": "Ada", "email": map[string]any{"string": "ada@example.com"}, "address": map[string]any{"com.acme.Address": map[string]any{"street": "1 Main St", "zip": "12345"}}},
		"items": []any{
			map[string]any{"sku": "A-1", "qty": 2, "price": big.NewRat(1999, 100)},
			map[string]any{"sku": "B-2", "qty": 1, "price": big.NewRat(-1, 2)},
		},
		"attributes": map[string]any{"channel": "web"},
		"discount":   map[string]any{"double": 0.5},
		"checksum":   [16]byte{1, 2, 3},
		"note":       "x",
	}
}

func TestValidateBinaryAccepts(t *testing.T) {
	v := NewValidator(ValidatorOptions{})
	ts := topic("orders", listSchema, orderSchema) // order is version 2, id 11
	datum, err := avro.Marshal(mustParse(t, orderSchema), hambaOrder())
	if err != nil {
		t.Fatal(err)
	}
	for _, datum := range [][]byte{datum, validOrderParts().bytes()} {
		tests := []struct {
			name string
			body []byte
			h    Hints
			enc  Encoding
		}{
			{"confluent", frame(11, datum), Hints{}, EncodingConfluent},
			{"confluent, other content type", frame(11, datum), Hints{ContentType: "application/octet-stream"}, EncodingConfluent},
			{"avro, latest", datum, avroBinary, EncodingAvro},
			{"avro, application/avro", datum, Hints{ContentType: "application/avro"}, EncodingAvro},
			{"avro, version header", datum, Hints{SchemaVersion: "2"}, EncodingAvro},
			{"avro, version latest", datum, Hints{SchemaVersion: "latest"}, EncodingAvro},
			{"avro, id header", datum, Hints{SchemaID: "11"}, EncodingAvro},
			{"avro, both headers", datum, Hints{SchemaID: "11", SchemaVersion: "2"}, EncodingAvro},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res, err := v.Validate(ts, tt.body, tt.h)
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				want := Result{Body: tt.body, SchemaID: 11, Version: 2, Encoding: tt.enc}
				if !reflect.DeepEqual(res, want) {
					t.Fatalf("Validate = %+v, want %+v", res, want)
				}
				if &res.Body[0] != &tt.body[0] {
					t.Error("Validate copied a binary body")
				}
			})
		}
	}
	// The older version, by header.
	list := bin{}.long(1).long(1).long(2).long(0)
	if res, err := v.Validate(ts, list, Hints{SchemaVersion: "1"}); err != nil || res.SchemaID != 10 {
		t.Fatalf("Validate(version 1) = %+v, %v", res, err)
	}
	if res, err := v.Validate(ts, frame(10, list), Hints{}); err != nil || res.Version != 1 {
		t.Fatalf("Validate(confluent id 10) = %+v, %v", res, err)
	}
}

// normalize turns hamba/avro's decoded values into comparable ones.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case *big.Rat:
		return "rat:" + x.RatString()
	case time.Time:
		return "time:" + x.UTC().Format(time.RFC3339Nano)
	case [16]byte:
		return "fixed:" + string(x[:])
	}
	return v
}

func TestJSONRoundTrip(t *testing.T) {
	s := mustParse(t, orderSchema)
	want := map[string]any{
		"id":       "0f8fad5b-d9cb-469f-a165-70867728950e",
		"created":  "time:2024-05-01T12:00:00.25Z",
		"day":      "time:2024-05-01T00:00:00Z",
		"status":   "PAID",
		"customer": map[string]any{"name": "Ada", "email": "ada@example.com", "address": map[string]any{"com.acme.Address": map[string]any{"street": "1 Main St", "zip": "12345"}}},
		"items": []any{
			map[string]any{"sku": "A-1", "qty": 2, "price": "rat:1999/100"},
			map[string]any{"sku": "B-2", "qty": 1, "price": "rat:5"},
			map[string]any{"sku": "C-3", "qty": 10, "price": "rat:-1/2"},
		},
		"attributes": map[string]any{"channel": "web", "gift": "no"},
		"discount":   map[string]any{"com.acme.Coupon": map[string]any{"code": "SPRING", "percent": 10}},
		"checksum":   "fixed:0123456789abcdef",
		"note":       "none", // the default
	}

	v := NewValidator(ValidatorOptions{})
	ts := topic("orders", orderSchema)
	res, err := v.Validate(ts, []byte(orderJSON), Hints{ContentType: "application/json; charset=utf-8"})
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if !res.Reencoded || res.Encoding != EncodingJSON || res.SchemaID != 10 || res.Version != 1 {
		t.Fatalf("Validate = %+v", res)
	}
	if !bytes.Equal(res.Body[:5], []byte{0, 0, 0, 0, 10}) {
		t.Fatalf("Confluent header % x, want 00 00 00 00 0a", res.Body[:5])
	}
	var got any
	if err := avro.Unmarshal(s, res.Body[5:], &got); err != nil {
		t.Fatalf("hamba/avro cannot decode the re-encoded body: %v", err)
	}
	if !reflect.DeepEqual(normalize(got), want) {
		t.Fatalf("decoded\n%#v\nwant\n%#v", normalize(got), want)
	}
	// The re-encoded body is a valid Confluent-framed body, and the same
	// JSON always gives the same bytes (maps are written sorted).
	if _, err := v.ValidateDelivery(ts, res.Body, Hints{}); err != nil {
		t.Fatalf("ValidateDelivery(re-encoded): %v", err)
	}
	again, _ := v.Validate(ts, []byte(orderJSON), Hints{ContentType: "application/json"})
	if !bytes.Equal(again.Body, res.Body) {
		t.Error("two encodings of one JSON document differ")
	}

	// ValidateDelivery checks JSON but does not re-encode it.
	del, err := v.ValidateDelivery(ts, []byte(orderJSON), Hints{ContentType: "application/json"})
	if err != nil || del.Reencoded || string(del.Body) != orderJSON {
		t.Fatalf("ValidateDelivery(JSON) = %+v, %v", del, err)
	}
}

// TestJSONForms checks the other JSON spellings a value may have.
func TestJSONForms(t *testing.T) {
	s := mustParse(t, orderSchema)
	base := func(overrides string) string {
		return `{"id": "0F8FAD5B-D9CB-469F-A165-70867728950E", "created": 1714564800250, "day": 19844, "status": "NEW",
			"customer": {"name": "Bo"}, "items": [], "checksum": "\u0000\u00ff23456789abcdef"` + overrides + `}`
	}
	tests := []struct {
		name  string
		doc   string
		field string
		want  any
	}{
		{"defaults fill missing fields", base(""), "customer", map[string]any{"name": "Bo", "email": nil, "address": nil}},
		{"default map", base(""), "attributes", map[string]any{}},
		{"number timestamp", base(""), "created", "time:2024-05-01T12:00:00.25Z"},
		{"number date", base(""), "day", "time:2024-05-01T00:00:00Z"},
		{"bytes as code points", base(""), "checksum", "fixed:\x00\xff23456789abcdef"},
		{"wrapped union, named", base(`, "discount": {"com.acme.Coupon": {"code": "C", "percent": 5}}`), "discount", map[string]any{"com.acme.Coupon": map[string]any{"code": "C", "percent": 5}}},
		{"wrapped union, short name", base(`, "discount": {"Coupon": {"code": "C", "percent": 5}}`), "discount", map[string]any{"com.acme.Coupon": map[string]any{"code": "C", "percent": 5}}},
		{"wrapped union, primitive", base(`, "discount": {"double": 0.25}`), "discount", map[string]any{"double": 0.25}},
		{"natural union, number", base(`, "discount": 0.25`), "discount", map[string]any{"double": 0.25}},
		{"natural union, integer to double", base(`, "discount": 1`), "discount", map[string]any{"double": 1.0}},
		{"natural union, null", base(`, "discount": null`), "discount", nil},
		{"wrapped nullable string", base(`, "customer": {"name": "Bo", "email": {"string": "b@x"}}`), "customer", map[string]any{"name": "Bo", "email": "b@x", "address": nil}},
		{"decimal exponent", base(`, "items": [{"sku": "s", "qty": 1, "price": 1.5e2}]`), "items", []any{map[string]any{"sku": "s", "qty": 1, "price": "rat:150"}}},
		{"decimal trailing zeros", base(`, "items": [{"sku": "s", "qty": 1, "price": "0.100"}]`), "items", []any{map[string]any{"sku": "s", "qty": 1, "price": "rat:1/10"}}},
		{"decimal -128 cents", base(`, "items": [{"sku": "s", "qty": 1, "price": -1.28}]`), "items", []any{map[string]any{"sku": "s", "qty": 1, "price": "rat:-32/25"}}},
		{"decimal max", base(`, "items": [{"sku": "s", "qty": 1, "price": -9999999.99}]`), "items", []any{map[string]any{"sku": "s", "qty": 1, "price": "rat:-999999999/100"}}},
		{"integral float as int", base(`, "items": [{"sku": "s", "qty": 2.0, "price": 0}]`), "items", []any{map[string]any{"sku": "s", "qty": 2, "price": "rat:0"}}},
		{"timestamp with offset", base(`, "created": "2024-05-01T14:00:00.25+02:00"`), "created", "time:2024-05-01T12:00:00.25Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got map[string]any
			if err := avro.Unmarshal(s, jsonToBinary(t, orderSchema, tt.doc), &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if g := normalize(got[tt.field]); !reflect.DeepEqual(g, tt.want) {
				t.Fatalf("%s = %#v, want %#v", tt.field, g, tt.want)
			}
		})
	}
}

// TestJSONLogicalTypes covers the logical types the order schema lacks.
func TestJSONLogicalTypes(t *testing.T) {
	const sch = `{"type": "record", "name": "L", "fields": [
		{"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
		{"name": "tu", "type": {"type": "long", "logicalType": "time-micros"}},
		{"name": "su", "type": {"type": "long", "logicalType": "timestamp-micros"}},
		{"name": "lm", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
		{"name": "fd", "type": {"type": "fixed", "name": "F", "size": 4, "logicalType": "decimal", "precision": 9, "scale": 3}},
		{"name": "f", "type": "float"},
		{"name": "d", "type": "double"},
		{"name": "b", "type": "boolean"}
	]}`
	doc := `{"tm": "01:02:03.004", "tu": "00:00:01.000002", "su": "1970-01-01T00:00:01.000002Z", "lm": "1970-01-02T00:00:00.001",
		"fd": -1.5, "f": 1.5, "d": "-Infinity", "b": true}`
	b := jsonToBinary(t, sch, doc)
	want := bin{}.long(3723004).long(1000002).long(1000002).long(86400001).
		raw(0xff, 0xff, 0xfa, 0x24). // -1500, sign-extended to 4 bytes
		raw(0, 0, 0xc0, 0x3f).raw(0, 0, 0, 0, 0, 0, 0xf0, 0xff).raw(1)
	if !bytes.Equal(b, want) {
		t.Fatalf("encoded % x\nwant    % x", b, []byte(want))
	}
	v := NewValidator(ValidatorOptions{})
	if _, err := v.Validate(topic("t", sch), b, avroBinary); err != nil {
		t.Fatalf("binary of the encoding: %v", err)
	}
}

// checkErr asserts err is a *ValidationError with that path and a reason
// containing every one of reasons.
func checkErr(t *testing.T, err error, path string, reasons ...string) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) || !errors.Is(err, ErrSchemaInvalid) {
		t.Fatalf("error %v (%T), want a *ValidationError", err, err)
	}
	if ve.Path != path {
		t.Errorf("Path = %q, want %q (reason: %s)", ve.Path, path, ve.Reason)
	}
	for _, r := range reasons {
		if !strings.Contains(ve.Reason, r) {
			t.Errorf("Reason = %q, want it to contain %q", ve.Reason, r)
		}
	}
	if t.Failed() {
		return
	}
	if want := "schema: message does not match the schema: "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Error() = %q", err.Error())
	}
}

func TestValidateBinaryRejects(t *testing.T) {
	valid := validOrderParts()
	// cut returns the valid body cut n bytes before the end of part.
	cut := func(part *bin, n int) []byte {
		end := 0
		for _, p := range []*bin{&valid.id, &valid.created, &valid.day, &valid.status, &valid.customer, &valid.items, &valid.attributes, &valid.discount, &valid.checksum, &valid.note} {
			end += len(*p)
			if p == part {
				break
			}
		}
		return valid.bytes()[:end-n]
	}
	mutate := func(f func(p *orderParts)) []byte {
		p := validOrderParts()
		f(&p)
		return p.bytes()
	}
	tests := []struct {
		name    string
		body    []byte
		path    string
		reasons []string
	}{
		{"trailing bytes", append(valid.bytes(), 0, 1, 2), "", []string{"3 bytes after the end of the datum", "from byte 134", "com.acme.Order"}},
		{"empty", nil, "id", []string{"truncated: the body ends at byte 0 while reading the length of a string"}},
		{"truncated in a nested record", cut(&valid.customer, 3), "customer.address.zip", []string{"truncated: a string at byte 69 says 5 bytes, but only 2 remain", "union branch 1, com.acme.Address"}},
		{"truncated in an array item", cut(&valid.items, 2), "items[1].price", []string{"truncated: a bytes value at byte 89 says 2 bytes, but only 1 remain"}},
		{"truncated in a map", cut(&valid.attributes, 2), `attributes["channel"]`, []string{"truncated"}},
		{"truncated fixed", cut(&valid.checksum, 1), "checksum", []string{"truncated", "fixed com.acme.MD5 (16 bytes)"}},
		{"bad uuid", mutate(func(p *orderParts) { p.id = bin{}.str("not-a-uuid") }), "id", []string{`uuid "not-a-uuid" at byte 0 is not a UUID`}},
		{"enum index out of range", mutate(func(p *orderParts) { p.status = bin{}.long(7) }), "status", []string{"enum index 7", "com.acme.Status has 3 symbols (NEW, PAID, SHIPPED)"}},
		{"negative enum index", mutate(func(p *orderParts) { p.status = bin{}.long(-1) }), "status", []string{"enum index -1"}},
		{"union index out of range", mutate(func(p *orderParts) { p.discount = bin{}.long(3) }), "discount", []string{"union branch index 3", "[null, double, com.acme.Coupon] has 3 branches"}},
		{"inside a union branch", mutate(func(p *orderParts) { p.discount = bin{}.long(2).str("C").long(1 << 33) }), "discount.percent", []string{"does not fit in an int", "union branch 2, com.acme.Coupon"}},
		{"decimal precision", mutate(func(p *orderParts) {
			p.items = bin{}.long(1).str("A").long(1).bytes([]byte{0x02, 0x54, 0x0b, 0xe4, 0x00}).long(0) // 10000000000
		}), "items[0].price", []string{"decimal at byte", "has 11 digits; bytes(decimal(9,2)) allows 9 (precision)"}},
		{"decimal without bytes", mutate(func(p *orderParts) { p.items = bin{}.long(1).str("A").long(1).bytes(nil).long(0) }), "items[0].price", []string{"no bytes"}},
		{"array count beyond the body", mutate(func(p *orderParts) { p.items = bin{}.long(1 << 40) }), "items", []string{"truncated: the array block", "has 1099511627776 items"}},
		{"error in a second block", mutate(func(p *orderParts) {
			p.items = bin{}.long(1).str("A").long(1).bytes([]byte{1}).long(1).str("B").long(1 << 33).bytes([]byte{1}).long(0)
		}), "items[1].qty", []string{"does not fit in an int"}},
		{"negative string length", mutate(func(p *orderParts) { p.note = bin{}.long(-5) }), "note", []string{"negative length -5"}},
		{"invalid UTF-8", mutate(func(p *orderParts) { p.customer = bin{}.str("\xff\xfe").long(0).long(0) }), "customer.name", []string{"not valid UTF-8"}},
		{"invalid UTF-8 map key", mutate(func(p *orderParts) { p.attributes = bin{}.long(1).str("\xff").str("v").long(0) }), "attributes", []string{"map key at byte", "not valid UTF-8"}},
		{"varint too long", mutate(func(p *orderParts) { p.created = bin{}.raw(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02) }), "created", []string{"not a valid long"}},
		{"block size mismatch", mutate(func(p *orderParts) {
			p.attributes = bin{}.long(-1).long(9).str("k").str("v").long(0)
		}), "attributes", []string{"says its items take", "but they take"}},
	}
	v := NewValidator(ValidatorOptions{})
	ts := topic("orders", orderSchema)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Validate(ts, tt.body, avroBinary)
			checkErr(t, err, tt.path, tt.reasons...)
			// The same datum, Confluent-framed, gives the same problem
			// (its offsets count the 5-byte header).
			_, err = v.Validate(ts, frame(10, tt.body), Hints{})
			checkErr(t, err, tt.path)
		})
	}
}

func TestValidateConfluentOffsets(t *testing.T) {
	p := validOrderParts()
	p.status = bin{}.long(7)
	_, err := NewValidator(ValidatorOptions{}).Validate(topic("orders", orderSchema), frame(10, p.bytes()), Hints{})
	checkErr(t, err, "status", "enum index 7 at byte 51 is out of range")
	_, err = NewValidator(ValidatorOptions{}).Validate(topic("orders", orderSchema), frame(10, append(validOrderParts().bytes(), 1)), Hints{})
	checkErr(t, err, "", "1 bytes after the end of the datum, from byte 139")
}

func TestValidateBinaryPrimitives(t *testing.T) {
	const sch = `{"type": "record", "name": "P", "fields": [
		{"name": "b", "type": "boolean"},
		{"name": "f", "type": "float"},
		{"name": "t", "type": {"type": "int", "logicalType": "time-millis"}},
		{"name": "m", "type": {"type": "map", "values": {"type": "array", "items": "long"}}}
	]}`
	ok := bin{}.raw(1).raw(0, 0, 0, 0).long(5).long(1).str("k").long(1).long(7).long(0).long(0)
	v := NewValidator(ValidatorOptions{})
	ts := topic("p", sch)
	if _, err := v.Validate(ts, ok, avroBinary); err != nil {
		t.Fatalf("valid: %v", err)
	}
	tests := []struct {
		name    string
		body    bin
		path    string
		reasons []string
	}{
		{"bad boolean", bin{}.raw(2), "b", []string{"expected a boolean, found byte 0x02 at byte 0"}},
		{"short float", bin{}.raw(0, 1, 2), "f", []string{"truncated", "a float (4 bytes)"}},
		{"time of day", bin{}.raw(0).raw(0, 0, 0, 0).long(-1), "t", []string{"time-millis -1 at byte 5 is not a time of day"}},
		{"int overflow", bin{}.raw(0).raw(0, 0, 0, 0).raw(0xff, 0xff, 0xff, 0xff, 0x1f), "t", []string{"does not fit in an int"}},
		{"int too long", bin{}.raw(0).raw(0, 0, 0, 0).raw(0xff, 0xff, 0xff, 0xff, 0xff, 0x01), "t", []string{"longer than 5 bytes"}},
		{"nested path", bin{}.raw(0).raw(0, 0, 0, 0).long(0).long(1).str("key").long(2).long(1).raw(0x80), `m["key"][1]`, []string{"truncated: the body ends at byte 14 while reading a long"}},
		{"count beyond the bytes", bin{}.raw(0).raw(0, 0, 0, 0).long(0).long(1).str("key").long(2).long(1), `m["key"]`, []string{"truncated: the array block at byte 11 has 2 items, but the 1 bytes left hold at most 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Validate(ts, tt.body, avroBinary)
			checkErr(t, err, tt.path, tt.reasons...)
		})
	}
}

func TestValidateJSONRejects(t *testing.T) {
	// with replaces the value of one top-level key of orderJSON (or adds it).
	with := func(kv ...string) string {
		var m map[string]any
		if err := jsonUnmarshal(orderJSON, &m); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
				continue
			}
			var v any
			if err := jsonUnmarshal(kv[i+1], &v); err != nil {
				t.Fatalf("%s: %v", kv[i+1], err)
			}
			m[kv[i]] = v
		}
		return jsonMarshal(m)
	}
	tests := []struct {
		name    string
		doc     string
		path    string
		reasons []string
	}{
		{"missing required field", with("customer", `{"email": null}`), "customer.name", []string{"required field missing (string, no default)"}},
		{"missing top-level field", with("status", ""), "status", []string{"required field missing (com.acme.Status, no default)"}},
		{"wrong type in an array item", with("items", `[{"sku": "A", "qty": 1, "price": 1}, {"sku": "B", "qty": "two", "price": 1}]`), "items[1].qty", []string{`expected an integer (int), got the string "two"`}},
		{"null for a string", with("customer", `{"name": null}`), "customer.name", []string{"expected a string, got null"}},
		{"enum symbol", with("status", `"LOST"`), "status", []string{`"LOST" is not a symbol of enum com.acme.Status; allowed: NEW, PAID, SHIPPED`}},
		{"union, no branch", with("discount", `true`), "discount", []string{"no branch of union [null, double, com.acme.Coupon] accepts the boolean true", "tried null: does not take the boolean true; double: does not take", "com.acme.Coupon: does not take"}},
		{"union, deep in the only branch", with("discount", `{"code": "X", "percent": "ten"}`), "discount.percent", []string{`expected an integer (int), got the string "ten"`, "only branch com.acme.Coupon takes an object"}},
		{"union, string to a number union", with("discount", `"half"`), "discount", []string{`no branch of union [null, double, com.acme.Coupon] accepts the string "half"`}},
		{"union, wrapped form refused", with("discount", `{"com.acme.Coupon": {"code": 1, "percent": 1}}`), "discount", []string{`com.acme.Coupon: at ["com.acme.Coupon"].code: expected a string, got the number 1`, "com.acme.Coupon: at code: required field missing"}},
		{"map value", with("attributes", `{"a": "x", "b": 1}`), `attributes["b"]`, []string{"expected a string, got the number 1"}},
		{"decimal scale", with("items", `[{"sku": "A", "qty": 1, "price": 1.234}]`), "items[0].price", []string{`"1.234" has more decimal places than bytes(decimal(9,2)) allows (scale 2)`}},
		{"decimal precision", with("items", `[{"sku": "A", "qty": 1, "price": "12345678.9"}]`), "items[0].price", []string{"more digits than bytes(decimal(9,2)) allows (precision 9, scale 2)"}},
		{"decimal text", with("items", `[{"sku": "A", "qty": 1, "price": "1,5"}]`), "items[0].price", []string{`"1,5" is not a decimal number`}},
		{"decimal huge exponent", with("items", `[{"sku": "A", "qty": 1, "price": 1e999999999}]`), "items[0].price", []string{"more digits"}},
		{"timestamp", with("created", `"yesterday"`), "created", []string{`long(timestamp-millis) "yesterday" is not an RFC 3339 time`}},
		{"timestamp precision", with("created", `"2024-05-01T12:00:00.0001Z"`), "created", []string{"more than millisecond precision"}},
		{"date", with("day", `"2024-13-01"`), "day", []string{`date "2024-13-01" is not a date like 2006-01-02`}},
		{"uuid", with("id", `"0f8fad5b"`), "id", []string{`"0f8fad5b" is not a UUID`}},
		{"unknown field", with("customer", `{"name": "A", "phone": "1"}`), "customer.phone", []string{"unknown field; record com.acme.Customer has fields name, email, address"}},
		{"unknown fields", with("x", `1`, "y", `2`), "", []string{`unknown fields "x", "y"; record com.acme.Order has fields id, created`}},
		{"fixed length", with("checksum", `"abc"`), "checksum", []string{"expected 16 bytes for fixed com.acme.MD5, got a string of 3"}},
		{"bytes beyond 255", with("checksum", `"0123456789abcde€"`), "checksum", []string{"is not a byte"}},
		{"int overflow", with("items", `[{"sku": "A", "qty": 3000000000, "price": 1}]`), "items[0].qty", []string{"3000000000 does not fit in int (32 bits)"}},
		{"fraction for an int", with("items", `[{"sku": "A", "qty": 1.5, "price": 1}]`), "items[0].qty", []string{"expected an integer (int), got 1.5"}},
		{"array expected", with("items", `{}`), "items", []string{"expected an array (array<com.acme.Item>), got an object"}},
		{"top level", `[1, 2]`, "", []string{"expected an object (record com.acme.Order), got an array"}},
		{"trailing data", orderJSON + ` {}`, "", []string{"unexpected data after the JSON value"}},
		{"malformed", `{"id": }`, "", []string{"malformed JSON near byte offset 8"}},
		{"truncated", `{"id": "x"`, "", []string{"malformed JSON: the body ends before the value does"}},
		{"empty", ``, "", []string{"empty body"}},
	}
	v := NewValidator(ValidatorOptions{})
	ts := topic("orders", orderSchema)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Validate(ts, []byte(tt.doc), Hints{ContentType: "application/json"})
			checkErr(t, err, tt.path, tt.reasons...)
		})
	}
}

func TestValidateFraming(t *testing.T) {
	v := NewValidator(ValidatorOptions{})
	list := bin{}.long(1).long(0)
	ts := topic("orders", listSchema, listSchema+" ")
	tests := []struct {
		name    string
		body    []byte
		h       Hints
		reasons []string
	}{
		{"no magic byte", bin{}.long(1).long(1).long(2).long(1).long(3).long(0), Hints{}, []string{"starts with byte 0x02, not the Confluent wire format's magic byte 0", "Msgmesh-Schema-Version"}},
		{"no magic byte, content type named", bin{}.raw(7, 0, 0, 0, 0), Hints{ContentType: "text/plain"}, []string{`this message's content type is "text/plain"`}},
		{"too short", []byte{0, 0, 0}, Hints{}, []string{"the body is 3 bytes, too short for the Confluent wire format"}},
		{"unknown id", frame(99, list), Hints{}, []string{`schema id 99 (from the Confluent header) is not a version of subject "orders"; its schema ids are 10, 11`}},
		{"unknown id header", list, Hints{SchemaID: "99"}, []string{"schema id 99 (from the header Msgmesh-Schema-Id)"}},
		{"bad id header", list, Hints{SchemaID: "ten"}, []string{`header Msgmesh-Schema-Id: "ten" is not a schema id`}},
		{"bad version header", list, Hints{SchemaVersion: "0"}, []string{`header Msgmesh-Schema-Version: "0" is not a version`}},
		{"version out of range", list, Hints{SchemaVersion: "3"}, []string{`subject "orders" has no version 3 (its versions are 1, 2)`}},
		{"headers disagree", list, Hints{SchemaID: "10", SchemaVersion: "2"}, []string{"headers disagree: Msgmesh-Schema-Id 10 is version 1, but Msgmesh-Schema-Version says 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Validate(ts, tt.body, tt.h)
			checkErr(t, err, "", tt.reasons...)
		})
	}

	if _, err := v.Validate(TopicSchemas{Subject: "none"}, list, Hints{}); !errors.Is(err, ErrSubjectNotFound) {
		t.Errorf("empty schema set: %v, want ErrSubjectNotFound", err)
	}
	bad := topic("bad", `{"type": "nope"}`)
	_, err := v.Validate(bad, frame(10, list), Hints{})
	if !errors.Is(err, ErrMalformedSchema) || errors.Is(err, ErrSchemaInvalid) {
		t.Errorf("uncompilable schema: %v, want ErrMalformedSchema", err)
	}
}

func TestValidateRecursionAndBounds(t *testing.T) {
	v := NewValidator(ValidatorOptions{})
	ts := topic("list", listSchema)
	list := func(n int) bin {
		var b bin
		for i := range n {
			b = b.long(int64(i))
			if i < n-1 {
				b = b.long(1)
			}
		}
		return b.long(0)
	}
	if _, err := v.Validate(ts, list(50), avroBinary); err != nil {
		t.Fatalf("list of 50: %v", err)
	}
	_, err := v.Validate(ts, list(200), avroBinary)
	checkErr(t, err, strings.Repeat("next.", 49)+"next", "nested deeper than 100 levels (records, arrays, maps and unions each count)")

	doc := `{"value": 1, "next": {"Node": {"value": 2, "next": {"value": 3}}}}`
	if _, err := v.Validate(ts, []byte(doc), Hints{ContentType: "application/json"}); err != nil {
		t.Fatalf("JSON list: %v", err)
	}
	deep := strings.Repeat(`{"value": 1, "next": `, 150) + `null` + strings.Repeat(`}`, 150)
	_, err = v.Validate(ts, []byte(deep), Hints{ContentType: "application/json"})
	checkErr(t, err, strings.Repeat("next.", 49)+"next", "nested deeper than 100 levels (records, arrays, maps and unions each count)")

	// An array of nulls: a few bytes could claim billions of items.
	nulls := topic("nulls", `{"type": "array", "items": "null"}`)
	small := NewValidator(ValidatorOptions{MaxZeroSizeItems: 10})
	if _, err := small.Validate(nulls, bin{}.long(10).long(0), avroBinary); err != nil {
		t.Fatalf("10 nulls: %v", err)
	}
	_, err = small.Validate(nulls, bin{}.long(6).long(5).long(0), avroBinary)
	checkErr(t, err, "", "the array block at byte 1 has 5 items of a type that takes no bytes; the limit is 10 per message")
	start := time.Now()
	_, err = v.Validate(nulls, bin{}.long(1<<62).long(0), avroBinary)
	checkErr(t, err, "", "limit is 65536")
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusing 2^62 nulls took %v", d)
	}
	_, err = small.Validate(nulls, []byte(`[null, null, null, null, null, null, null, null, null, null, null]`), Hints{ContentType: "application/json"})
	checkErr(t, err, "", "11 items of a type that takes no bytes; the limit is 10")
}

func TestHintsFromHeaders(t *testing.T) {
	headers := func(kv ...string) func(func(string, string) bool) {
		return func(yield func(string, string) bool) {
			for i := 0; i < len(kv); i += 2 {
				if !yield(kv[i], kv[i+1]) {
					return
				}
			}
		}
	}
	got := HintsFromHeaders(headers("content-type", "text/plain", "MSGMESH-CONTENT-TYPE", "application/json", "msgmesh-schema-id", "7", "Msgmesh-Schema-Version", "latest", "Msgmesh-Schema-Id", "8"))
	want := Hints{ContentType: "application/json", SchemaID: "7", SchemaVersion: "latest"}
	if got != want {
		t.Errorf("HintsFromHeaders = %+v, want %+v", got, want)
	}
	if got := HintsFromHeaders(headers("Content-Type", "application/json")); got.ContentType != "application/json" {
		t.Errorf("Content-Type alone: %+v", got)
	}
	for h, want := range map[Hints]Encoding{
		{}:                                   EncodingConfluent,
		{ContentType: "application/x-thing"}: EncodingConfluent,
		{ContentType: "application/vnd.acme+json; v=1"}:  EncodingJSON,
		{ContentType: "avro/binary"}:                     EncodingAvro,
		{ContentType: "text/plain", SchemaVersion: "1"}:  EncodingAvro,
		{ContentType: "application/json", SchemaID: "3"}: EncodingJSON,
		{ContentType: ";;;"}:                             EncodingConfluent,
	} {
		if got := encodingOf(h); got != want {
			t.Errorf("encodingOf(%+v) = %v, want %v", h, got, want)
		}
	}
}

func TestPolicy(t *testing.T) {
	for s, want := range map[string]Policy{"": PolicyEnforce, "enforce": PolicyEnforce, " WARN ": PolicyWarn, "Off": PolicyOff} {
		got, err := ParsePolicy(s)
		if err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := ParsePolicy("strict"); err == nil || !strings.Contains(err.Error(), "use enforce, warn or off") {
		t.Errorf("ParsePolicy(strict) = %v", err)
	}
	var p Policy
	if err := p.UnmarshalText([]byte("warn")); err != nil || p != PolicyWarn {
		t.Errorf("UnmarshalText = %v, %v", p, err)
	}
	if b, err := PolicyOff.MarshalText(); err != nil || string(b) != "off" {
		t.Errorf("MarshalText = %s, %v", b, err)
	}
	if _, err := Policy(9).MarshalText(); err == nil {
		t.Error("MarshalText(9) succeeded")
	}
	var zero Policy
	if zero != PolicyEnforce {
		t.Error("the zero Policy does not enforce")
	}
}

func TestValidatorCache(t *testing.T) {
	v := NewValidator(ValidatorOptions{MaxSchemas: 2})
	list := bin{}.long(1).long(0)
	for id := range 5 {
		ts := TopicSchemas{Subject: "t", Versions: []SchemaVersion{{Subject: "t", Version: 1, ID: id, Schema: listSchema}}}
		for range 2 {
			if _, err := v.Validate(ts, frame(id, list), Hints{}); err != nil {
				t.Fatalf("id %d: %v", id, err)
			}
		}
		if n := len(*v.cache.entries.Load()); n > 2 {
			t.Fatalf("cache holds %d schemas, limit 2", n)
		}
	}
	// An id whose text changed (a registry that was reset) is recompiled.
	ts := topic("t", `"string"`)
	if _, err := v.Validate(ts, bin{}.str("x"), avroBinary); err != nil {
		t.Fatal(err)
	}
	ts = topic("t", `"long"`)
	if _, err := v.Validate(ts, bin{}.long(5), avroBinary); err != nil {
		t.Fatalf("after the text changed: %v", err)
	}
	if e := (*v.cache.entries.Load())[10]; e == nil || e.text != `"long"` || len(v.cache.ring) > 2 {
		t.Fatalf("cache entry for id 10 = %+v, ring %d", e, len(v.cache.ring))
	}
}

// TestValidatorConcurrent runs validators on many goroutines over a small
// cache, so that compiling, evicting and reading overlap (run with -race).
func TestValidatorConcurrent(t *testing.T) {
	v := NewValidator(ValidatorOptions{MaxSchemas: 3})
	datum := validOrderParts().bytes()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				id := (g + i) % 5
				ts := TopicSchemas{Subject: "o", Versions: []SchemaVersion{{Subject: "o", Version: 1, ID: id, Schema: orderSchema}}}
				if _, err := v.Validate(ts, frame(id, datum), Hints{}); err != nil {
					errs <- fmt.Errorf("goroutine %d, id %d: %w", g, id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(*v.cache.entries.Load()); n > 3 || n != len(v.cache.ring) {
		t.Errorf("cache: %d entries, ring %d, limit 3", n, len(v.cache.ring))
	}
	ids := slices.Sorted(maps.Keys(*v.cache.entries.Load()))
	for _, e := range v.cache.ring {
		if !slices.Contains(ids, e.id) {
			t.Errorf("ring holds id %d, map holds %v", e.id, ids)
		}
	}
}

func TestTwosComplement(t *testing.T) {
	values := []int64{0, 1, -1, 127, 128, -128, -129, 255, 256, -256, 32767, -32768, 1 << 40, -(1 << 40), math.MaxInt64, math.MinInt64 + 1}
	for i := range 1000 {
		values = append(values, rand.Int64()>>(i%63), -rand.Int64()>>(i%63))
	}
	for _, v := range values {
		got := twosComplement64(nil, v)
		want := twosComplement(big.NewInt(v))
		if !bytes.Equal(got, want) {
			t.Fatalf("%d: int64 form % x, big.Int form % x", v, got, want)
		}
		// And it decodes back.
		x := new(big.Int).SetBytes(got)
		if got[0]&0x80 != 0 {
			x.Sub(x, new(big.Int).Lsh(big.NewInt(1), uint(8*len(got))))
		}
		if x.Int64() != v {
			t.Fatalf("%d encodes to % x, which is %s", v, got, x)
		}
	}
}

func TestJSONWideDecimal(t *testing.T) {
	const sch = `{"type": "bytes", "logicalType": "decimal", "precision": 30, "scale": 4}`
	s := mustParse(t, sch)
	for _, num := range []string{"12345678901234567890.1234", "-99999999999999999999999999.9999", "0.0001", "-0.0001", "7"} {
		b := jsonToBinary(t, sch, num)
		var got *big.Rat
		if err := avro.Unmarshal(s, b, &got); err != nil {
			t.Fatalf("%s: %v", num, err)
		}
		want, _ := new(big.Rat).SetString(num)
		if got.Cmp(want) != 0 {
			t.Errorf("%s decodes to %s", num, got.FloatString(4))
		}
	}
	v := NewValidator(ValidatorOptions{})
	_, err := v.Validate(topic("d", sch), []byte(`123456789012345678901234567.1`), Hints{ContentType: ContentTypeJSON})
	checkErr(t, err, "", "more digits than bytes(decimal(30,4)) allows")
	// A binary decimal over 8 bytes is checked with big.Int.
	over := new(big.Int).Exp(big.NewInt(10), big.NewInt(30), nil)
	_, err = v.Validate(topic("d", sch), bin{}.bytes(twosComplement(over)), avroBinary)
	checkErr(t, err, "", "has 31 digits")
	_, err = v.Validate(topic("d", sch), bin{}.bytes(twosComplement(over.Sub(over, big.NewInt(1)).Neg(over))), avroBinary)
	if err != nil {
		t.Errorf("-(10^30-1): %v", err)
	}
}

// TestJSONUnionBudget: nested unions whose branches both accept an object
// would make a failing document cost 2^depth attempts.
func TestJSONUnionBudget(t *testing.T) {
	const sch = `{"type": "record", "name": "T", "fields": [{"name": "c", "type": ["null", {"type": "map", "values": "T"}, "T"]}]}`
	ts := topic("t", sch)
	v := NewValidator(ValidatorOptions{})
	ok := strings.Repeat(`{"c": `, 30) + `null` + strings.Repeat(`}`, 30)
	if _, err := v.Validate(ts, []byte(ok), Hints{ContentType: ContentTypeJSON}); err != nil {
		t.Fatalf("valid document: %v", err)
	}
	bad := strings.Repeat(`{"c": `, 30) + `5` + strings.Repeat(`}`, 30)
	start := time.Now()
	_, err := v.Validate(ts, []byte(bad), Hints{ContentType: ContentTypeJSON})
	var ve *ValidationError
	if !errors.As(err, &ve) || !strings.Contains(ve.Reason, "gave up resolving unions") {
		t.Fatalf("error %v, want the union budget", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
}
