package mesh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/internal/allocs"
)

func manyHeaders(n int) []HeaderField {
	hs := make([]HeaderField, n)
	for i := range hs {
		hs[i] = HeaderField{Key: fmt.Sprintf("x-h-%d", i), Value: strings.Repeat("v", i%7)}
	}
	return hs
}

func allBytes() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func manyMessages(n int) []Message {
	ms := make([]Message, n)
	for i := range ms {
		ms[i] = sampleMessage(uint64(i + 1))
		ms[i].Body = bytes.Repeat([]byte{byte(i)}, i)
	}
	return ms
}

// roundTripCases has, for every payload type, zero values, empty and nil
// fields, many elements, extreme numbers and non-ASCII strings.
func roundTripCases() []struct {
	name string
	kind Kind
	in   payload
} {
	long := strings.Repeat("é", 200) // 400 bytes: a two-byte length varint
	return []struct {
		name string
		kind Kind
		in   payload
	}{
		{"hello/zero", KindHello, &Hello{}},
		{"hello/typical", KindHello, &Hello{App: "checkout", Client: "pod-1", MaxInflight: 64}},
		{"hello/max", KindHello, &Hello{App: long, Client: string(allBytes()), MaxInflight: math.MaxUint32}},
		{"hello/secret", KindHello, &Hello{App: "checkout", Client: "pod-1", MaxInflight: 64, Secret: "s3cr3t-0123456789"}},
		{"hello/long_binary_secret", KindHello, &Hello{App: "a", Secret: long + string(allBytes())}},

		{"declare/nil", KindDeclare, &Declare{}},
		{"declare/empty", KindDeclare, &Declare{Subs: []Subscription{}}},
		{"declare/push_and_pull", KindDeclare, &Declare{Subs: []Subscription{{"g", "t", ModePush}, {"g", "t2", ModePull}}}},
		{"declare/empty_names", KindDeclare, &Declare{Subs: []Subscription{{"", "", ModePull}}}},
		{"declare/many", KindDeclare, &Declare{Subs: func() []Subscription {
			s := make([]Subscription, 1000)
			for i := range s {
				s[i] = Subscription{Group: fmt.Sprint("g", i), Topic: long, Mode: Mode(1 + i%2)}
			}
			return s
		}()}},

		{"publish/zero", KindPublish, &Publish{}},
		{"publish/empty_body", KindPublish, &Publish{Topic: "t", Body: []byte{}}},
		{"publish/empty_header_fields", KindPublish, &Publish{Topic: "t", Headers: []HeaderField{{}, {"k", ""}, {"", "v"}}}},
		{"publish/duplicate_headers_keep_order", KindPublish, &Publish{Topic: "t", Headers: []HeaderField{{"a", "2"}, {"a", "1"}, {"A", "0"}}}},
		{"publish/many_headers", KindPublish, &Publish{Topic: "orders", Key: "k", Headers: manyHeaders(5000), Body: []byte("b")}},
		{"publish/binary", KindPublish, &Publish{Topic: long, Key: string(allBytes()), Body: allBytes()}},
		{"publish/1MiB_body", KindPublish, &Publish{Topic: "t", Body: bytes.Repeat([]byte("0123456789abcdef"), 1<<16)}},

		{"publish_ack/zero", KindPublishAck, &PublishAck{}},
		{"publish_ack/nats", KindPublishAck, &PublishAck{Stream: "ORDERS", Partition: -1, Offset: 1234}},
		{"publish_ack/kafka", KindPublishAck, &PublishAck{Stream: "orders", Partition: 11, Offset: 987654321}},
		{"publish_ack/rocketmq", KindPublishAck, &PublishAck{Stream: "orders", Partition: 3, Offset: 55, MessageID: "7F0000010001186C6F3A08A0F0A50001"}},
		{"publish_ack/max", KindPublishAck, &PublishAck{Stream: long, Partition: math.MaxInt32, Offset: math.MaxInt64, MessageID: long}},
		{"publish_ack/min", KindPublishAck, &PublishAck{Partition: math.MinInt32, Offset: math.MinInt64}},

		{"deliver/zero", KindDeliver, &Message{}},
		{"deliver/typical", KindDeliver, ptr(sampleMessage(77))},
		{"deliver/max", KindDeliver, &Message{DeliveryID: math.MaxUint64, Group: long, Topic: long, Key: long,
			Headers: manyHeaders(300), Body: allBytes(), MessageID: long, Redelivered: math.MaxUint32, Timestamp: math.MaxInt64}},
		{"deliver/negative_timestamp", KindDeliver, &Message{DeliveryID: 1, Timestamp: math.MinInt64, Body: []byte{}}},

		{"nack/zero", KindNack, &Nack{}},
		{"nack/max", KindNack, &Nack{DelayMillis: math.MaxUint32}},

		{"pull/zero", KindPull, &Pull{}},
		{"pull/typical", KindPull, &Pull{Group: "audit", Topic: "orders", Max: 10, WaitMillis: 2000}},
		{"pull/max", KindPull, &Pull{Group: long, Topic: long, Max: math.MaxUint32, WaitMillis: math.MaxUint32}},

		{"pull_result/nil", KindPullResult, &PullResult{}},
		{"pull_result/empty", KindPullResult, &PullResult{Messages: []Message{}}},
		{"pull_result/one_zero_message", KindPullResult, &PullResult{Messages: []Message{{}}}},
		{"pull_result/many", KindPullResult, &PullResult{Messages: manyMessages(300)}},

		{"error/zero", KindError, &Error{}},
		{"error/typical", KindError, &Error{Code: CodeRateLimited, Message: "topic orders: over 100 msg/s"}},
		{"error/unknown_code", KindError, &Error{Code: math.MaxUint16, Message: long}},

		{"request/zero", KindRequest, &Request{}},
		{"request/typical", KindRequest, &Request{Service: "inventory", Method: "Reserve", Headers: []HeaderField{{"traceparent", "00-01-02-01"}}, Body: []byte("{}")}},
		{"request/max", KindRequest, &Request{Service: long, Method: string(allBytes()), Headers: manyHeaders(300), Body: allBytes()}},

		{"response/zero", KindResponse, &Response{}},
		{"response/typical", KindResponse, &Response{Headers: []HeaderField{{"k", "v"}}, Body: []byte("ok")}},
		{"response/many_headers", KindResponse, &Response{Headers: manyHeaders(1000), Body: bytes.Repeat([]byte("x"), 5000)}},
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			enc := tc.in.AppendTo(nil)

			got := newPayload(tc.kind)
			if err := got.Decode(enc); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			assertEqualPayload(t, got, tc.in)

			// The encoding is canonical: the decoded value encodes to the
			// same bytes.
			if re := got.AppendTo(nil); !bytes.Equal(re, enc) {
				t.Fatalf("re-encoding differs:\n got %x\nwant %x", re, enc)
			}

			// AppendTo appends: bytes already in the buffer are kept.
			prefix := []byte("prefix")
			withPrefix := tc.in.AppendTo(append([]byte(nil), prefix...))
			if !bytes.HasPrefix(withPrefix, prefix) || !bytes.Equal(withPrefix[len(prefix):], enc) {
				t.Fatalf("AppendTo with a prefix gave %x, want %x + %x", withPrefix, prefix, enc)
			}
		})
	}
}

// TestFrameRoundTrip sends every payload through AppendFrame and DecodeFrame.
func TestFrameRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			const id = 0x0102030405060708
			b := encodeFrame(t, tc.kind, FlagResponse, id, tc.in)
			f, n, err := DecodeFrame(b, 0)
			if err != nil {
				t.Fatalf("DecodeFrame: %v", err)
			}
			if n != len(b) {
				t.Fatalf("DecodeFrame used %d bytes of %d", n, len(b))
			}
			if f.Kind != tc.kind || f.Flags != FlagResponse || f.ID != id || !f.IsResponse() {
				t.Fatalf("header = %v/%v/%#x, want %v/%v/%#x", f.Kind, f.Flags, f.ID, tc.kind, FlagResponse, uint64(id))
			}
			got := newPayload(tc.kind)
			if err := got.Decode(f.Payload); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			assertEqualPayload(t, got, tc.in)
		})
	}
}

// TestDecodeAliasesBody pins the documented aliasing: Body points into the
// decoded buffer, strings are copies.
func TestDecodeAliasesBody(t *testing.T) {
	enc := (&Publish{Topic: "t", Body: []byte("body")}).AppendTo(nil)
	var p Publish
	if err := p.Decode(enc); err != nil {
		t.Fatal(err)
	}
	enc[len(enc)-1] = 'X'
	enc[1] = 'X' // the topic's only byte
	if string(p.Body) != "bodX" {
		t.Errorf("Body = %q after changing the buffer, want %q (aliased)", p.Body, "bodX")
	}
	if p.Topic != "t" {
		t.Errorf("Topic = %q after changing the buffer, want %q (copied)", p.Topic, "t")
	}
	if cap(p.Body) != len(p.Body) {
		t.Errorf("cap(Body) = %d, want %d: appending to Body must not overwrite the buffer", cap(p.Body), len(p.Body))
	}
}

// Builders for hand-made payloads.
func uv(n uint64) []byte  { return binary.AppendUvarint(nil, n) }
func str(s string) []byte { return appendStr(nil, s) }
func cat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func TestPayloadMalformed(t *testing.T) {
	msg := sampleMessage(9)
	msgEnc := msg.AppendTo(nil)
	tooLongVarint := bytes.Repeat([]byte{0xff}, 10)
	tests := []struct {
		name    string
		kind    Kind
		payload []byte
		field   string
		reason  string
	}{
		{"hello/empty", KindHello, nil, "app", "bad length varint"},
		{"hello/app_length_past_end", KindHello, cat(uv(10), []byte("abc")), "app", "length 10 exceeds the 3 bytes left"},
		{"hello/app_length_huge", KindHello, cat(uv(math.MaxUint64), []byte("abc")), "app", "exceeds the 3 bytes left"},
		{"hello/varint_overflow", KindHello, append(tooLongVarint, 1), "app", "bad length varint"},
		{"hello/varint_cut", KindHello, []byte{0x80}, "app", "bad length varint"},
		{"hello/no_client", KindHello, str("app"), "client", "bad length varint"},
		{"hello/short_max_inflight", KindHello, cat(str("a"), str("c"), []byte{0, 1}), "max_inflight", "needs 4 bytes, 2 left"},
		// After max_inflight the optional secret may follow (§5.1); what
		// is left must then be exactly one str.
		{"hello/secret_past_end", KindHello, cat(str("a"), str("c"), u32(1), []byte{5}), "secret", "length 5 exceeds the 0 bytes left"},
		{"hello/secret_bad_varint", KindHello, cat(str("a"), str("c"), u32(1), []byte{0x80}), "secret", "bad length varint"},
		{"hello/short_features", KindHello, cat(str("a"), str("c"), u32(1), str("s"), []byte{0}), "features", "needs 4 bytes, 1 left"},
		{"hello/trailing_after_features", KindHello, cat(str("a"), str("c"), u32(1), str("s"), u32(1), []byte{0}), "", "1 trailing bytes"},
		{"hello/short_features_after_empty_secret", KindHello, cat(str("a"), str("c"), u32(1), []byte{0, 7}), "features", "needs 4 bytes, 1 left"},

		{"declare/empty", KindDeclare, nil, "subs", "bad length varint"},
		{"declare/count_past_end", KindDeclare, cat(uv(5), []byte{1, 'g'}), "subs", "too long"},
		{"declare/count_over_list_limit", KindDeclare, cat(uv(maxListLen+1), make([]byte, 4*(maxListLen+1))), "subs", "too long"},
		{"declare/no_topic", KindDeclare, cat(uv(1), str("g")), "subs", "too long"},
		{"declare/topic_cut", KindDeclare, cat(uv(1), str("g"), uv(4), []byte("to")), "topic", "length 4 exceeds the 2 bytes left"},
		{"declare/no_mode", KindDeclare, cat(uv(2), str("g"), str("t")), "subs", "too long"},
		{"declare/no_mode_one", KindDeclare, cat(uv(1), str("g"), str("t")), "mode", "needs 1 bytes, 0 left"},
		{"declare/mode_zero", KindDeclare, cat(uv(1), str("g"), str("t"), []byte{0}), "mode", "unknown mode 0"},
		{"declare/mode_three", KindDeclare, cat(uv(1), str("g"), str("t"), []byte{3}), "mode", "unknown mode 3"},
		{"declare/second_mode_bad", KindDeclare, cat(uv(2), str("g"), str("t"), []byte{1}, str("g"), str("t"), []byte{9}), "mode", "unknown mode 9"},
		{"declare/trailing", KindDeclare, cat(uv(0), []byte{0, 0}), "", "2 trailing bytes"},

		{"publish/empty", KindPublish, nil, "topic", "bad length varint"},
		{"publish/no_headers", KindPublish, cat(str("t"), str("k")), "headers", "bad length varint"},
		{"publish/header_count_past_end", KindPublish, cat(str("t"), str("k"), uv(1000), make([]byte, 20)), "headers", "list of 1000 elements is too long"},
		{"publish/header_count_over_limit", KindPublish, cat(str("t"), str("k"), uv(maxListLen+1), make([]byte, 2*(maxListLen+1)+1)), "headers", "too long"},
		{"publish/header_value_cut", KindPublish, cat(str("t"), str("k"), uv(1), str("key"), uv(9), []byte("abc")), "header.value", "length 9 exceeds the 3 bytes left"},
		{"publish/header_key_cut", KindPublish, cat(str("t"), str("k"), uv(1), uv(9), []byte("abcd")), "header.key", "length 9 exceeds"},
		{"publish/no_body", KindPublish, cat(str("t"), str("k"), uv(0)), "body", "bad length varint"},
		{"publish/body_past_end", KindPublish, cat(str("t"), str("k"), uv(0), uv(1024), make([]byte, 1023)), "body", "length 1024 exceeds the 1023 bytes left"},
		{"publish/trailing", KindPublish, cat(str("t"), str("k"), uv(0), str(""), []byte{1, 9, 9}), "", "2 trailing bytes"},
		{"publish/unknown_flags", KindPublish, cat(str("t"), str("k"), uv(0), str("b"), []byte{0x80}), "flags", "unknown flag bits 0x80"},
		{"publish/null_body_with_body", KindPublish, cat(str("t"), str("k"), uv(0), str("b"), []byte{1}), "flags", "null_body with a non-empty body"},
		{"publish/empty_key_with_key", KindPublish, cat(str("t"), str("k"), uv(0), str("b"), []byte{2}), "flags", "empty_key with a non-empty key"},

		{"publish_ack/empty", KindPublishAck, nil, "stream", "bad length varint"},
		{"publish_ack/short_partition", KindPublishAck, cat(str("s"), []byte{0xff, 0xff, 0xff}), "partition", "needs 4 bytes, 3 left"},
		{"publish_ack/short_offset", KindPublishAck, cat(str("s"), u32(1), make([]byte, 7)), "offset", "needs 8 bytes, 7 left"},
		{"publish_ack/no_message_id", KindPublishAck, cat(str("s"), u32(1), u64(2)), "message_id", "bad length varint"},
		{"publish_ack/trailing", KindPublishAck, cat(str("s"), u32(1), u64(2), str(""), []byte{7}), "", "1 trailing bytes"},

		{"deliver/empty", KindDeliver, nil, "delivery_id", "needs 8 bytes, 0 left"},
		{"deliver/short_id", KindDeliver, make([]byte, 7), "delivery_id", "needs 8 bytes, 7 left"},
		{"deliver/no_group", KindDeliver, u64(1), "group", "bad length varint"},
		{"deliver/no_redelivered", KindDeliver, msgEnc[:len(msgEnc)-12], "redelivered", "needs 4 bytes, 0 left"},
		{"deliver/short_timestamp", KindDeliver, msgEnc[:len(msgEnc)-1], "timestamp", "needs 8 bytes, 7 left"},
		{"deliver/trailing", KindDeliver, append(msg.AppendTo(nil), 0, 0), "", "1 trailing bytes"},
		{"deliver/unknown_flags", KindDeliver, append(msg.AppendTo(nil), 4), "flags", "unknown flag bits 0x04"},

		{"nack/empty", KindNack, nil, "delay_ms", "needs 4 bytes, 0 left"},
		{"nack/short", KindNack, []byte{0, 0, 1}, "delay_ms", "needs 4 bytes, 3 left"},
		{"nack/trailing", KindNack, []byte{0, 0, 0, 1, 0}, "", "1 trailing bytes"},

		{"pull/empty", KindPull, nil, "group", "bad length varint"},
		{"pull/no_max", KindPull, cat(str("g"), str("t")), "max", "needs 4 bytes, 0 left"},
		{"pull/short_wait", KindPull, cat(str("g"), str("t"), u32(1), []byte{0, 0}), "wait_ms", "needs 4 bytes, 2 left"},
		{"pull/trailing", KindPull, cat(str("g"), str("t"), u32(1), u32(2), []byte{0}), "", "1 trailing bytes"},

		{"pull_result/empty", KindPullResult, nil, "messages", "bad length varint"},
		{"pull_result/count_past_end", KindPullResult, cat(uv(10), msgEnc), "messages", "list of 10 elements is too long"},
		{"pull_result/second_message_missing", KindPullResult, cat(uv(2), msgEnc), "delivery_id", "needs 8 bytes, 0 left"},
		{"pull_result/count_over_list_limit", KindPullResult, cat(uv(maxListLen+1), bytes.Repeat(msgEnc, maxListLen/len(msgEnc)+1)), "messages", "too long"},
		{"pull_result/second_message_cut", KindPullResult, cat(uv(2), msgEnc, msgEnc[:len(msgEnc)-9]), "redelivered", "needs 4 bytes, 3 left"},
		{"pull_result/trailing", KindPullResult, cat(uv(1), msgEnc, uv(1), []byte{0}, []byte{0}), "", "1 trailing bytes"},
		{"pull_result/flag_count", KindPullResult, cat(uv(1), msgEnc, uv(0)), "flags", "0 flag bytes for 1 messages"},

		{"error/empty", KindError, nil, "code", "needs 2 bytes, 0 left"},
		{"error/short_code", KindError, []byte{0}, "code", "needs 2 bytes, 1 left"},
		{"error/no_message", KindError, []byte{0, 5}, "message", "bad length varint"},
		{"error/trailing", KindError, cat([]byte{0, 5}, str("m"), []byte{1, 2, 3}), "", "3 trailing bytes"},

		{"request/empty", KindRequest, nil, "service", "bad length varint"},
		{"request/no_method", KindRequest, str("svc"), "method", "bad length varint"},
		{"request/no_headers", KindRequest, cat(str("s"), str("m")), "headers", "bad length varint"},
		{"request/header_count_past_end", KindRequest, cat(str("s"), str("m"), uv(50), make([]byte, 9)), "headers", "list of 50 elements is too long"},
		{"request/header_value_cut", KindRequest, cat(str("s"), str("m"), uv(1), str("k"), uv(5), []byte("ab")), "header.value", "length 5 exceeds the 2 bytes left"},
		{"request/no_body", KindRequest, cat(str("s"), str("m"), uv(0)), "body", "bad length varint"},
		{"request/body_past_end", KindRequest, cat(str("s"), str("m"), uv(0), uv(10), []byte("abc")), "body", "length 10 exceeds the 3 bytes left"},
		{"request/trailing", KindRequest, cat(str("s"), str("m"), uv(0), str("b"), []byte{0}), "", "1 trailing bytes"},

		{"response/empty", KindResponse, nil, "headers", "bad length varint"},
		{"response/no_body", KindResponse, uv(0), "body", "bad length varint"},
		{"response/trailing", KindResponse, cat(uv(0), str("b"), []byte{9, 9}), "", "2 trailing bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := newPayload(tc.kind).Decode(tc.payload)
			assertMalformed(t, err, tc.kind, tc.field, tc.reason)
		})
	}
}

// TestPayloadTruncated cuts every sample payload at every length: a proper
// prefix of a valid payload never decodes, and the error names the field
// that ran out.
func TestPayloadTruncated(t *testing.T) {
	for _, s := range sampleFrames() {
		if s.payload == nil {
			continue
		}
		enc := s.payload.AppendTo(nil)
		for cut := 0; cut < len(enc); cut++ {
			err := newPayload(s.kind).Decode(enc[:cut])
			if err == nil {
				t.Fatalf("%s: %d of %d bytes decoded without error", s.name, cut, len(enc))
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s cut at %d: error %v (%T), want a *ProtocolError wrapping ErrMalformed", s.name, cut, err, err)
			}
			if pe.Field == "" {
				t.Fatalf("%s cut at %d: error %q names no field", s.name, cut, err)
			}
			if !strings.Contains(err.Error(), " field "+pe.Field+": ") {
				t.Fatalf("%s cut at %d: error text %q does not name field %q", s.name, cut, err, pe.Field)
			}
		}
	}
}

// TestHelloSecretIsOptional pins the compatibility rules of HELLO's
// trailing secret (docs/protocol.md §5.1): a HELLO without a secret is the
// same bytes as before the field existed, so old sidecars accept it; a
// HELLO with one, cut anywhere inside the secret, never decodes (so a
// truncated secret cannot pass for a shorter one); cut exactly before the
// secret it is a HELLO without one; and an explicitly empty secret decodes
// as none and re-encodes without the field.
func TestHelloSecretIsOptional(t *testing.T) {
	base := cat(str("orders"), str("pod-1"), u32(8))
	if got := (&Hello{App: "orders", Client: "pod-1", MaxInflight: 8}).AppendTo(nil); !bytes.Equal(got, base) {
		t.Fatalf("HELLO without a secret encodes as %x, want the version-1 bytes %x", got, base)
	}
	with := (&Hello{App: "orders", Client: "pod-1", MaxInflight: 8, Secret: "0123456789abcdef"}).AppendTo(nil)
	if !bytes.Equal(with, cat(base, str("0123456789abcdef"))) {
		t.Fatalf("HELLO with a secret encodes as %x", with)
	}
	for cut := len(base) + 1; cut < len(with); cut++ {
		var h Hello
		err := h.Decode(with[:cut])
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Field != "secret" {
			t.Fatalf("cut at %d of %d: %v, want a malformed secret field", cut, len(with), err)
		}
	}
	var h Hello
	if err := h.Decode(with[:len(base)]); err != nil || h.Secret != "" || h.App != "orders" {
		t.Fatalf("HELLO cut before the secret: %+v, %v; want a HELLO without one", h, err)
	}
	h = Hello{Secret: "stale"} // Decode resets the field when it is absent
	if err := h.Decode(cat(base, []byte{0})); err != nil || h.Secret != "" {
		t.Fatalf("explicitly empty secret: %+v, %v", h, err)
	}
	if re := h.AppendTo(nil); !bytes.Equal(re, base) {
		t.Fatalf("an empty secret re-encodes as %x, want it left out: %x", re, base)
	}
}

// TestListCountBoundsAllocation: a short payload claiming a long list is
// refused before the decoder allocates room for the list. Each claim below
// fits in "bytes left" but not in "bytes left / smallest element size".
func TestListCountBoundsAllocation(t *testing.T) {
	const n = maxListLen
	tests := []struct {
		name    string
		kind    Kind
		payload []byte
		field   string
	}{
		// A subscription takes at least 3 bytes (two empty strings, a mode).
		{"declare", KindDeclare, cat(uv(n), make([]byte, n)), "subs"},
		// A header takes at least 2 bytes (two empty strings).
		{"publish_headers", KindPublish, cat(str("t"), str(""), uv(n), make([]byte, n)), "headers"},
		// A message takes at least 26 bytes.
		{"pull_result", KindPullResult, cat(uv(n), make([]byte, n)), "messages"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPayload(tc.kind)
			err := p.Decode(tc.payload)
			assertMalformed(t, err, tc.kind, tc.field, "too long")

			// The refusal allocates the error, not a list of n elements
			// (n*40 bytes for Declare, n*136 for PullResult).
			got := allocs.BytesPerRun(20, func() { _ = p.Decode(tc.payload) })
			if got > 1024 {
				t.Fatalf("refusing a %d-element claim in %d bytes allocated %d bytes per call, want <= 1024", n, len(tc.payload), got)
			}
		})
	}
}

// TestListAtSmallestElementSize: a list whose elements are all as small as
// an element can be decodes: the allocation bound refuses no valid payload.
func TestListAtSmallestElementSize(t *testing.T) {
	const n = 1000
	var d Declare
	if err := d.Decode(cat(uv(n), bytes.Repeat([]byte{0, 0, byte(ModePull)}, n))); err != nil || len(d.Subs) != n {
		t.Fatalf("Declare of %d minimal subscriptions: %d decoded, err %v", n, len(d.Subs), err)
	}
	var p Publish
	if err := p.Decode(cat(str("t"), str(""), uv(n), make([]byte, 2*n), str(""))); err != nil || len(p.Headers) != n {
		t.Fatalf("Publish with %d empty headers: %d decoded, err %v", n, len(p.Headers), err)
	}
	var r PullResult
	if err := r.Decode(cat(uv(n), make([]byte, minMessageSize*n))); err != nil || len(r.Messages) != n {
		t.Fatalf("PullResult of %d zero messages: %d decoded, err %v", n, len(r.Messages), err)
	}
	// The minimum sizes the decoder assumes are those of the smallest
	// elements the encoder writes.
	if got := len((&Message{}).AppendTo(nil)); got != minMessageSize {
		t.Errorf("a zero Message encodes to %d bytes, minMessageSize is %d", got, minMessageSize)
	}
	if got := len((&Declare{Subs: []Subscription{{Mode: ModePush}}}).AppendTo(nil)) - 1; got != minSubSize {
		t.Errorf("an empty subscription encodes to %d bytes, minSubSize is %d", got, minSubSize)
	}
	if got := len(appendHeaders(nil, []HeaderField{{}})) - 1; got != minHeaderSize {
		t.Errorf("an empty header encodes to %d bytes, minHeaderSize is %d", got, minHeaderSize)
	}
}

// TestMessageFlagsAreOptional pins the compatibility of the message flags
// and HELLO's features (docs/protocol.md §3): without flags PUBLISH,
// DELIVER and PULL_RESULT are the version-1 bytes; with them they decode
// back; a HELLO with features but no secret carries an empty secret before
// them; and PULL_RESULT's flags are per message.
func TestMessageFlagsAreOptional(t *testing.T) {
	plain := Publish{Topic: "t", Key: "k", Body: []byte("b")}
	v1 := cat(str("t"), str("k"), uv(0), str("b"))
	if got := plain.AppendTo(nil); !bytes.Equal(got, v1) {
		t.Fatalf("PUBLISH without flags = %x, want the version-1 bytes %x", got, v1)
	}
	tomb := Publish{Topic: "t", Flags: FlagNullBody | FlagEmptyKey}
	var back Publish
	if err := back.Decode(tomb.AppendTo(nil)); err != nil || back.Flags != tomb.Flags || back.Body != nil || back.Key != "" {
		t.Fatalf("tombstone PUBLISH decoded as %+v, %v", back, err)
	}
	msg := Message{DeliveryID: 1, Group: "g", Topic: "t", Key: "k", Body: []byte("b")}
	if got, want := msg.AppendTo(nil), msg.appendRecord(nil); !bytes.Equal(got, want) {
		t.Fatalf("DELIVER without flags is not the version-1 record")
	}
	nullMsg := Message{DeliveryID: 1, Group: "g", Topic: "t", Key: "k", Flags: FlagNullBody}
	var m Message
	if err := m.Decode(nullMsg.AppendTo(nil)); err != nil || m.Flags != FlagNullBody {
		t.Fatalf("DELIVER with a null body decoded as %+v, %v", m, err)
	}
	pr := PullResult{Messages: []Message{msg, nullMsg, msg}}
	var prBack PullResult
	if err := prBack.Decode(pr.AppendTo(nil)); err != nil || prBack.Messages[0].Flags != 0 || prBack.Messages[1].Flags != FlagNullBody || prBack.Messages[2].Flags != 0 {
		t.Fatalf("PULL_RESULT flags decoded as %+v, %v", prBack, err)
	}
	unflagged := PullResult{Messages: []Message{msg, msg}}
	if got := unflagged.AppendTo(nil); !bytes.Equal(got, cat(uv(2), msg.appendRecord(nil), msg.appendRecord(nil))) {
		t.Fatalf("PULL_RESULT without flags is not the version-1 bytes")
	}
	h := Hello{App: "a", Features: FeatureMessageFlags}
	if got := h.AppendTo(nil); !bytes.Equal(got, cat(str("a"), str(""), u32(0), str(""), u32(1))) {
		t.Fatalf("HELLO with features = %x", got)
	}
	var hb Hello
	if err := hb.Decode(h.AppendTo(nil)); err != nil || hb.Features != FeatureMessageFlags || hb.Secret != "" {
		t.Fatalf("HELLO with features decoded as %+v, %v", hb, err)
	}
}
