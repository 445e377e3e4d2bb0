package schema

import (
	"fmt"
	"strings"
	"testing"
)

// benchOrderJSON returns an order in JSON with n items and a few
// attributes.
func benchOrderJSON(n int) string {
	var items []string
	for i := range n {
		items = append(items, fmt.Sprintf(`{"sku": "SKU-%05d", "qty": %d, "price": %d.%02d}`, i, i%7+1, i*3+1, i%100))
	}
	return `{"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "created": "2024-05-01T12:00:00.250Z", "day": "2024-05-01", "status": "PAID",
  "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "address": {"street": "12 St James's Square", "zip": "SW1Y 4JH"}},
  "items": [` + strings.Join(items, ", ") + `],
  "attributes": {"channel": "web", "gift": "no", "campaign": "spring-sale"},
  "discount": {"code": "SPRING", "percent": 10},
  "checksum": "0123456789abcdef", "note": "leave at the door"}`
}

// BenchmarkValidate measures validating one order of about 1 KiB in each
// accepted encoding. The binary bodies hold 40 items (1 KiB of Avro); the
// JSON body holds 14 (1 KiB of JSON, which encodes to about 450 bytes).
func BenchmarkValidate(b *testing.B) {
	datum := jsonToBinary(b, orderSchema, benchOrderJSON(58))
	doc := []byte(benchOrderJSON(12))
	ts := topic("orders", orderSchema)
	cases := []struct {
		name string
		body []byte
		h    Hints
	}{
		{"binary", datum, avroBinary},
		{"confluent", frame(10, datum), Hints{}},
		{"json-to-avro", doc, Hints{ContentType: ContentTypeJSON}},
	}
	for _, c := range cases {
		b.Run(fmt.Sprintf("%s/%dB", c.name, len(c.body)), func(b *testing.B) {
			v := NewValidator(ValidatorOptions{})
			if _, err := v.Validate(ts, c.body, c.h); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Validate(ts, c.body, c.h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkValidateParallel is the binary path on every CPU at once: the
// compiled-schema cache takes no lock on a hit.
func BenchmarkValidateParallel(b *testing.B) {
	body := frame(10, jsonToBinary(b, orderSchema, benchOrderJSON(58)))
	ts := topic("orders", orderSchema)
	v := NewValidator(ValidatorOptions{})
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Validate(ts, body, Hints{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
