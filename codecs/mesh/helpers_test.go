package mesh

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// payload is what every payload type implements.
type payload interface {
	Encoder
	Decode([]byte) error
}

// newPayload returns an empty payload value of the type that kind carries,
// or nil for the kinds whose payload is empty (ACK, HEARTBEAT, OK).
func newPayload(k Kind) payload {
	switch k {
	case KindHello:
		return new(Hello)
	case KindDeclare:
		return new(Declare)
	case KindPublish:
		return new(Publish)
	case KindPublishAck:
		return new(PublishAck)
	case KindDeliver:
		return new(Message)
	case KindNack:
		return new(Nack)
	case KindPull:
		return new(Pull)
	case KindPullResult:
		return new(PullResult)
	case KindError:
		return new(Error)
	case KindRequest:
		return new(Request)
	case KindResponse:
		return new(Response)
	}
	return nil
}

// sampleFrame is one realistic frame of some kind.
type sampleFrame struct {
	name    string
	kind    Kind
	flags   Flags
	id      uint64
	payload Encoder // nil for the empty-payload kinds
}

func sampleMessage(id uint64) Message {
	return Message{
		DeliveryID:  id,
		Group:       "billing",
		Topic:       "orders",
		Key:         "customer-42",
		Headers:     []HeaderField{{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, {"content-type", "application/avro"}},
		Body:        []byte("\x02\x0aorder\x00\xff"),
		MessageID:   "0A0B0C0D00002A9F000000000000002A",
		Redelivered: 2,
		Timestamp:   1_700_000_000_123_456_789,
	}
}

// sampleFrames holds one frame of every kind, in the directions the spec
// allows, with the ids a real conversation would use.
func sampleFrames() []sampleFrame {
	return []sampleFrame{
		{"hello", KindHello, 0, 1, &Hello{App: "checkout", Client: "checkout-7d9f-abc12", MaxInflight: 64}},
		{"ok", KindOK, FlagResponse, 1, nil},
		{"declare", KindDeclare, 0, 2, &Declare{Subs: []Subscription{
			{Group: "billing", Topic: "orders", Mode: ModePush},
			{Group: "audit", Topic: "orders", Mode: ModePull},
		}}},
		{"publish", KindPublish, 0, 3, &Publish{
			Topic:   "orders",
			Key:     "customer-42",
			Headers: []HeaderField{{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
			Body:    []byte(`{"order":1}`),
		}},
		{"publish_ack", KindPublishAck, FlagResponse, 3, &PublishAck{Stream: "ORDERS", Partition: -1, Offset: 1234}},
		{"deliver", KindDeliver, 0, 77, ptr(sampleMessage(77))},
		{"ack", KindAck, FlagResponse, 77, nil},
		{"nack", KindNack, FlagResponse, 78, &Nack{DelayMillis: 5000}},
		{"pull", KindPull, 0, 4, &Pull{Group: "audit", Topic: "orders", Max: 10, WaitMillis: 2000}},
		{"pull_result", KindPullResult, FlagResponse, 4, &PullResult{Messages: []Message{sampleMessage(79), sampleMessage(80)}}},
		{"heartbeat", KindHeartbeat, 0, 5, nil},
		{"heartbeat_response", KindHeartbeat, FlagResponse, 5, nil},
		{"error", KindError, FlagResponse, 6, &Error{Code: CodeNotRegistered, Message: `group "audit" is not registered for topic "orders"`}},
		{"request", KindRequest, 0, 7, &Request{
			Service: "inventory",
			Method:  "Reserve",
			Headers: []HeaderField{{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
			Body:    []byte(`{"sku":"A-1","n":2}`),
		}},
		{"response", KindResponse, FlagResponse, 7, &Response{
			Headers: []HeaderField{{"content-type", "application/json"}},
			Body:    []byte(`{"reserved":true}`),
		}},
	}
}

func ptr[T any](v T) *T { return &v }

// encodeFrame encodes one frame with the default limit and fails the test
// if that is refused.
func encodeFrame(tb testing.TB, kind Kind, flags Flags, id uint64, p Encoder) []byte {
	tb.Helper()
	b, err := AppendFrame(nil, 0, kind, flags, id, p)
	if err != nil {
		tb.Fatalf("AppendFrame(%v, id %d): %v", kind, id, err)
	}
	return b
}

// header builds a raw 16-byte frame header from its fields, so tests can
// write headers that AppendFrame would never produce.
func header(length uint32, version byte, kind Kind, flags Flags, reserved byte, id uint64) []byte {
	h := make([]byte, HeaderSize)
	h[0], h[1], h[2], h[3] = byte(length>>24), byte(length>>16), byte(length>>8), byte(length)
	h[4], h[5], h[6], h[7] = version, byte(kind), byte(flags), reserved
	for i := 0; i < 8; i++ {
		h[8+i] = byte(id >> (56 - 8*i))
	}
	return h
}

// normalize makes empty slices nil in a payload, so that values that encode
// identically compare equal (the decoder returns nil for empty bytes and
// header lists, and non-nil empty slices for empty subscription and message
// lists).
func normalize(p any) any {
	switch m := p.(type) {
	case *Declare:
		c := *m
		if len(c.Subs) == 0 {
			c.Subs = nil
		}
		return &c
	case *Publish:
		c := *m
		if len(c.Headers) == 0 {
			c.Headers = nil
		}
		if len(c.Body) == 0 {
			c.Body = nil
		}
		return &c
	case *Message:
		c := normalizeMessage(*m)
		return &c
	case *Request:
		c := *m
		if len(c.Headers) == 0 {
			c.Headers = nil
		}
		if len(c.Body) == 0 {
			c.Body = nil
		}
		return &c
	case *Response:
		c := *m
		if len(c.Headers) == 0 {
			c.Headers = nil
		}
		if len(c.Body) == 0 {
			c.Body = nil
		}
		return &c
	case *PullResult:
		c := PullResult{}
		for _, msg := range m.Messages {
			c.Messages = append(c.Messages, normalizeMessage(msg))
		}
		return &c
	}
	return p
}

func normalizeMessage(m Message) Message {
	if len(m.Headers) == 0 {
		m.Headers = nil
	}
	if len(m.Body) == 0 {
		m.Body = nil
	}
	return m
}

// assertEqualPayload fails unless got and want are the same value once
// normalized.
func assertEqualPayload(tb testing.TB, got, want any) {
	tb.Helper()
	if g, w := normalize(got), normalize(want); !reflect.DeepEqual(g, w) {
		tb.Fatalf("payload mismatch\n got: %s\nwant: %s", short(g), short(w))
	}
}

// short prints a value without flooding the log with huge bodies.
func short(v any) string {
	s := fmt.Sprintf("%+v", v)
	if len(s) > 600 {
		s = s[:600] + fmt.Sprintf("... (%d chars)", len(s))
	}
	return s
}

// assertMalformed checks that err is a *ProtocolError wrapping ErrMalformed
// for kind, naming field (when field is not "*") and whose text contains
// reason.
func assertMalformed(tb testing.TB, err error, kind Kind, field, reason string) {
	tb.Helper()
	if !errors.Is(err, ErrMalformed) {
		tb.Fatalf("error %v: want errors.Is ErrMalformed", err)
	}
	var pe *ProtocolError
	if !errors.As(err, &pe) {
		tb.Fatalf("error %v (%T): want a *ProtocolError", err, err)
	}
	if pe.Kind != kind {
		tb.Errorf("ProtocolError.Kind = %v, want %v", pe.Kind, kind)
	}
	if field != "*" && pe.Field != field {
		tb.Errorf("ProtocolError.Field = %q, want %q (error: %v)", pe.Field, field, err)
	}
	if !strings.Contains(err.Error(), reason) {
		tb.Errorf("error %q does not contain %q", err, reason)
	}
}
