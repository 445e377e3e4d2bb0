package schema

import (
	"errors"
	"testing"

	"github.com/hamba/avro/v2"
)

// boundedAvro is hamba/avro with allocation limits, for decoding fuzz input
// the validator accepted.
var boundedAvro = avro.Config{MaxByteSliceSize: 1 << 20, MaxSliceAllocSize: 1 << 20}.Freeze()

// FuzzValidateBinary feeds arbitrary bytes to the validator as a raw Avro
// body and as a Confluent-framed one, against the nested order schema.
// It checks that the validator never panics, that both framings give the
// same verdict, that refusals are *ValidationErrors, that a refusal
// allocates little (its error and path) and an acceptance nothing, and
// that whatever it accepts hamba/avro decodes.
func FuzzValidateBinary(f *testing.F) {
	valid := validOrderParts()
	f.Add(valid.bytes())
	datum, err := avro.Marshal(mustParse(f, orderSchema), hambaOrder())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(datum)
	f.Add([]byte{})
	f.Add(valid.bytes()[:60])
	f.Add(append(valid.bytes(), 0))

	v := NewValidator(ValidatorOptions{})
	ts := topic("orders", orderSchema)
	s := mustParse(f, orderSchema)
	f.Fuzz(func(t *testing.T, body []byte) {
		_, err := v.Validate(ts, body, avroBinary)
		framed := frame(10, body)
		_, ferr := v.Validate(ts, framed, Hints{})
		if (err == nil) != (ferr == nil) {
			t.Fatalf("raw: %v; framed: %v", err, ferr)
		}
		// Averaged over 20 runs (and rounded down), so that a stray
		// allocation of the fuzzing worker's own goroutines does not count.
		allocs := testing.AllocsPerRun(20, func() { _, _ = v.Validate(ts, body, avroBinary) })
		if err != nil {
			var ve, fve *ValidationError
			if !errors.As(err, &ve) || !errors.As(ferr, &fve) {
				t.Fatalf("not a *ValidationError: %v / %v", err, ferr)
			}
			if ve.Path != fve.Path {
				t.Fatalf("raw path %q, framed path %q", ve.Path, fve.Path)
			}
			if ve.Reason == "" {
				t.Fatal("empty reason")
			}
			// The error, its message, and one allocation per path step.
			if max := float64(10 + 2*defaultMaxDepth); allocs > max {
				t.Fatalf("a refusal allocated %v times: %v", allocs, err)
			}
			return
		}
		if allocs > 0 {
			t.Fatalf("an accepted body allocated %v times", allocs)
		}
		var out any
		if err := boundedAvro.Unmarshal(s, body, &out); err != nil {
			t.Fatalf("validator accepted % x, hamba/avro refuses it: %v", body, err)
		}
	})
}

// FuzzValidateJSON feeds arbitrary bytes to the validator as JSON. It
// checks that it never panics, that refusals are *ValidationErrors, and
// that every accepted document's Avro encoding passes the binary check and
// decodes with hamba/avro.
func FuzzValidateJSON(f *testing.F) {
	f.Add([]byte(orderJSON))
	f.Add([]byte(`{"value": 1, "next": {"Node": {"value": 2, "next": null}}}`))
	f.Add([]byte(`{"id": 1}`))
	f.Add([]byte(`[`))

	v := NewValidator(ValidatorOptions{})
	orders := topic("orders", orderSchema)
	list := topic("list", listSchema)
	schemas := map[string]avro.Schema{"orders": mustParse(f, orderSchema), "list": mustParse(f, listSchema)}
	f.Fuzz(func(t *testing.T, doc []byte) {
		for _, ts := range []TopicSchemas{orders, list} {
			res, err := v.Validate(ts, doc, Hints{ContentType: ContentTypeJSON})
			if err != nil {
				var ve *ValidationError
				if !errors.As(err, &ve) || ve.Reason == "" {
					t.Fatalf("%s: not a *ValidationError: %v", ts.Subject, err)
				}
				continue
			}
			if _, err := v.ValidateDelivery(ts, res.Body, Hints{}); err != nil {
				t.Fatalf("%s: %s encodes to a body the binary check refuses: %v", ts.Subject, doc, err)
			}
			var out any
			if err := boundedAvro.Unmarshal(schemas[ts.Subject], res.Body[5:], &out); err != nil {
				t.Fatalf("%s: %s encodes to a body hamba/avro refuses: %v", ts.Subject, doc, err)
			}
		}
	})
}
