package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func TestDecodeJSON(t *testing.T) {
	body := `{
		"app": "orders",
		"produce": [{"group": "p1", "topic": "orders.created"}],
		"consume": [{"group": "g2", "topic": "payments"}, {"group": "g1", "topic": "payments"}],
		"updated_at": "2020-01-02T03:04:05Z"
	}` + "\n"
	got, err := DecodeJSON(strings.NewReader(body))
	if err != nil {
		t.Fatalf("DecodeJSON: %v", err)
	}
	want := Registration{
		App:     "orders",
		Produce: []Binding{b("p1", "orders.created")},
		Consume: []Binding{b("g1", "payments"), b("g2", "payments")}, // normalised
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeJSON = %+v, want %+v", got, want)
	}
}

func TestDecodeJSONBadBodies(t *testing.T) {
	valid := `{"app":"a","consume":[{"group":"g","topic":"t"}]}`
	tests := []struct {
		name   string
		body   string
		field  string
		reason string // a substring of Reason
	}{
		{"empty body", "", "", "empty body"},
		{"only whitespace", " \n\t ", "", "empty body"},
		{"null", "null", "", "JSON object, not null"},
		{"array", `[` + valid + `]`, "", "JSON object, not an array"},
		{"string", `"a"`, "", "JSON object, not a string"},
		{"syntax error", `{"app":}`, "", "malformed JSON near byte offset 8"},
		{"bad literal", `{"app":"a",}`, "", "malformed JSON near byte offset"},
		{"truncated", `{"app":"a","consume":[`, "", "ends before"},
		{"unknown field", `{"app":"a","consume":[{"group":"g","topic":"t"}],"extra":1}`, "extra", "unknown field"},
		{"unknown nested field", `{"app":"a","consume":[{"group":"g","topic":"t","queue":"q"}]}`, "queue", "unknown field"},
		{"app wrong type", `{"app":42,"consume":[{"group":"g","topic":"t"}]}`, "app", "expected a string, got a JSON number (near byte offset 9)"},
		{"consume wrong type", `{"app":"a","consume":{"group":"g","topic":"t"}}`, "consume", "expected an array, got a JSON object"},
		{"binding wrong type", `{"app":"a","consume":["g:t"]}`, "consume", "expected an object, got a JSON string"},
		{"topic wrong type", `{"app":"a","consume":[{"group":"g","topic":true}]}`, "consume.topic", "expected a string, got a JSON bool"},
		{"trailing object", valid + valid, "", "unexpected data after the JSON object, at byte offset 49"},
		{"trailing garbage", valid + "\n x", "", "unexpected data after the JSON object, at byte offset 51"},
		{"oversize", `{"app":"a","consume":[{"group":"g","topic":"t"}]}` + strings.Repeat(" ", MaxBodySize), "", "larger than 65536 bytes"},
		{"oversize object", `{"app":"` + strings.Repeat("a", MaxBodySize) + `"}`, "", "larger than 65536 bytes"},
		{"invalid after decoding", `{"app":"a","consume":[{"group":"g","topic":"t"},{"group":"g","topic":"t"}]}`, "consume[1]", "duplicate binding g:t"},
		{"no bindings", `{"app":"a","consume":[]}`, "", "no bindings"},
		{"max attempts not a number", `{"app":"a","consume":[{"group":"g","topic":"t","max_attempts":"3"}]}`, "consume.max_attempts", "expected a whole number, got a JSON string"},
		{"max attempts a fraction", `{"app":"a","consume":[{"group":"g","topic":"t","max_attempts":2.5}]}`, "consume.max_attempts", "expected a whole number"},
		{"max attempts overflow", `{"app":"a","consume":[{"group":"g","topic":"t","max_attempts":1e30}]}`, "consume.max_attempts", "expected a whole number"},
		{"max attempts out of range", `{"app":"a","consume":[{"group":"g","topic":"t","max_attempts":5000}]}`, "consume[0].max_attempts", "out of range"},
		{"policy on produce", `{"app":"a","produce":[{"group":"g","topic":"t","dead_letter_topic":"d"}]}`, "produce[0].dead_letter_topic", "only consume bindings"},
		{"broker group on produce", `{"app":"a","produce":[{"group":"g","topic":"t","broker_group":"d"}]}`, "produce[0].broker_group", "only consume bindings"},
		{"broker group not a string", `{"app":"a","consume":[{"group":"g","topic":"t","broker_group":7}]}`, "consume.broker_group", "expected a string"},
		{"broker group bad", `{"app":"a","consume":[{"group":"g","topic":"t","broker_group":"a:b"}]}`, "consume[0].broker_group", "has ':' at byte 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeJSON(strings.NewReader(tt.body))
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("DecodeJSON = %+v, %v (%T); want *ValidationError", got, err, err)
			}
			if ve.Field != tt.field {
				t.Errorf("Field = %q, want %q (error: %v)", ve.Field, tt.field, err)
			}
			if !strings.Contains(ve.Reason, tt.reason) {
				t.Errorf("Reason = %q, want it to contain %q", ve.Reason, tt.reason)
			}
			if !reflect.DeepEqual(got, Registration{}) {
				t.Errorf("registration = %+v on error, want zero", got)
			}
		})
	}
}

func TestDecodeJSONDeadLetterPolicy(t *testing.T) {
	body := `{"app":"a","consume":[{"group":"g","topic":"t","max_attempts":3,"dead_letter_topic":"t.poison"},{"group":"g2","topic":"t"}]}`
	got, err := DecodeJSON(strings.NewReader(body))
	if err != nil {
		t.Fatalf("DecodeJSON: %v", err)
	}
	want := Registration{App: "a", Consume: []Binding{{Group: "g", Topic: "t", MaxAttempts: 3, DeadLetterTopic: "t.poison"}, b("g2", "t")}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeJSON = %+v, want %+v", got, want)
	}
	out, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	// Unset policy fields stay out of the JSON, so registrations stored
	// before they existed read and compare the same.
	if want := `{"app":"a","consume":[{"group":"g","topic":"t","max_attempts":3,"dead_letter_topic":"t.poison"},{"group":"g2","topic":"t"}]}`; string(out) != want {
		t.Fatalf("json.Marshal = %s, want %s", out, want)
	}
}

// TestDecodeJSONBrokerGroup: broker_group is read, kept through
// normalisation and written back; absent, it stays out of the JSON.
func TestDecodeJSONBrokerGroup(t *testing.T) {
	body := `{"app":"a","consume":[{"group":"g2","topic":"t"},{"group":"g","topic":"t","broker_group":"com.example.orders"}]}`
	got, err := DecodeJSON(strings.NewReader(body))
	if err != nil {
		t.Fatalf("DecodeJSON: %v", err)
	}
	want := Registration{App: "a", Consume: []Binding{{Group: "g", Topic: "t", BrokerGroup: "com.example.orders"}, b("g2", "t")}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeJSON = %+v, want %+v", got, want)
	}
	out, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"app":"a","consume":[{"group":"g","topic":"t","broker_group":"com.example.orders"},{"group":"g2","topic":"t"}]}`; string(out) != want {
		t.Fatalf("json.Marshal = %s, want %s", out, want)
	}
	if s := got.Consume[0].String(); s != "g:t,broker_group=com.example.orders" {
		t.Fatalf("String = %q", s)
	}
	if back, err := ParseConsumeBinding(got.Consume[0].String()); err != nil || back != got.Consume[0] {
		t.Fatalf("ParseConsumeBinding(String()) = %+v, %v", back, err)
	}
}

func TestDecodeJSONExactlyMaxSize(t *testing.T) {
	head := `{"app":"a","consume":[{"group":"g","topic":"t"}]}`
	body := head + strings.Repeat(" ", MaxBodySize-len(head))
	if _, err := DecodeJSON(strings.NewReader(body)); err != nil {
		t.Fatalf("DecodeJSON of a %d-byte body: %v", len(body), err)
	}
}

func TestDecodeJSONReadError(t *testing.T) {
	boom := errors.New("connection reset")
	_, err := DecodeJSON(iotest.ErrReader(boom))
	if !errors.Is(err, boom) {
		t.Fatalf("DecodeJSON = %v, want it to wrap the read error", err)
	}
	if errors.Is(err, ErrInvalid) {
		t.Fatalf("a read error must not be ErrInvalid: %v", err)
	}
}

// FuzzDecodeJSON: DecodeJSON never panics; on bytes.Reader input it fails
// only with a *ValidationError; what it accepts is valid, normalised, and
// survives json.Marshal + DecodeJSON unchanged.
func FuzzDecodeJSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		reg, err := DecodeJSON(bytes.NewReader(body))
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("DecodeJSON error %v (%T) is not a *ValidationError", err, err)
			}
			return
		}
		if err := reg.Validate(); err != nil {
			t.Fatalf("decoded registration does not validate: %v", err)
		}
		norm := reg.clone()
		norm.Normalize()
		if !reflect.DeepEqual(norm, reg) {
			t.Fatalf("decoded registration not normalised: %+v", reg)
		}
		out, err := json.Marshal(reg)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		again, err := DecodeJSON(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("DecodeJSON(json.Marshal(%+v)) = %v; marshalled %s", reg, err, out)
		}
		if !reflect.DeepEqual(again, reg) {
			t.Fatalf("round trip changed the registration:\n got %+v\nwant %+v", again, reg)
		}
	})
}
