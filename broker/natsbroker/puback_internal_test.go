package natsbroker

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// pubAckCorpus holds the acks nats-server writes and their neighbours:
// what the hand-written reader takes, and what it must leave to
// encoding/json.
var pubAckCorpus = []string{
	`{"stream":"MESH_orders","seq":1}`,
	`{"stream":"MESH_orders","seq":18446744073709551615}`,
	`{"stream":"MESH_orders","seq":18446744073709551616}`,
	`{"stream":"MESH_orders","seq":42,"duplicate":true}`,
	`{"stream":"MESH_orders","domain":"hub","seq":42}`,
	`{"stream":"MESH_orders","seq":7,"val":"12"}`,
	`{"stream":"MESH_orders","seq":300,"batch":"k9bGJ1MXtTgrqlDg6LtYNa","count":256}`,
	`{"stream":"S","seq":3,"batch":"","count":0}`,
	`{"stream":"S","seq":3,"batch":"b","count":-1}`,
	`{"stream":"S","seq":3,"batch":"b","count":1.5}`,
	`{"stream":"S","seq":3,"batch":7,"count":1}`,
	`{"stream":"S","seq":3,"batch":"b\u0041","count":1}`,
	`{"type":"io.nats.jetstream.api.v1.pub_ack","stream":"S","seq":3}`,
	` { "stream" : "S" , "seq" : 3 , "duplicate" : false } `,
	"{\n\t\"stream\":\"S\",\r\n\"seq\":3}",
	`{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"S","seq":0}`,
	`{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}`,
	`{"error":null,"stream":"S","seq":1}`,
	`{"stream":"S","seq":1,"error":{"code":500}}`,
	`{}`,
	`{"seq":1}`,
	`{"stream":"","seq":1}`,
	`{"stream":null,"seq":1}`,
	`{"stream":"S","seq":null}`,
	`{"stream":"S","seq":-1}`,
	`{"stream":"S","seq":1.0}`,
	`{"stream":"S","seq":1e3}`,
	`{"stream":"S","seq":01}`,
	`{"stream":"S","seq":0}`,
	`{"stream":"S","seq":"1"}`,
	`{"Stream":"S","SEQ":5}`,
	`{"stream":"S\u0041","seq":5}`,
	`{"stream":"S\"x","seq":5}`,
	`{"stream":"Sé","seq":5}`,
	"{\"stream\":\"S\xff\",\"seq\":5}",
	`{"stream":"A","stream":"B","seq":1,"seq":2}`,
	`{"stream":"S","seq":1}x`,
	`{"stream":"S","seq":1}{}`,
	`{"stream":"S","seq":1,}`,
	`{"stream":"S" "seq":1}`,
	`{"stream":"S","seq":1`,
	`{"stream":"S","seq":1,"other":[1,2]}`,
	`{"stream":"S","seq":1,"duplicate":"true"}`,
	`{"stream":"S","seq":1,"duplicate":tru}`,
	`[]`,
	`null`,
	``,
	`"stream"`,
}

// TestParsePubAckAsNATS checks the reader against nats.go's own decoding
// (slowPubAck: encoding/json into nats.go's response type) on the corpus,
// with and without the stream name known.
func TestParsePubAckAsNATS(t *testing.T) {
	for _, in := range pubAckCorpus {
		for _, known := range []string{"", "S", "MESH_orders", "A"} {
			checkPubAck(t, []byte(in), known)
		}
	}
}

// checkPubAck fails t unless parsePubAck and slowPubAck give the same
// answer for data.
func checkPubAck(t *testing.T, data []byte, known string) {
	t.Helper()
	got, gerr := parsePubAck(data, known)
	want, werr := slowPubAck(data)
	if got != want {
		t.Fatalf("%q (known %q): got %+v, encoding/json %+v", data, known, got, want)
	}
	if (gerr == nil) != (werr == nil) {
		t.Fatalf("%q: error %v, encoding/json %v", data, gerr, werr)
	}
	if gerr == nil {
		return
	}
	if gerr.Error() != werr.Error() || errors.Is(gerr, jetstream.ErrInvalidJSAck) != errors.Is(werr, jetstream.ErrInvalidJSAck) {
		t.Fatalf("%q: error %v, encoding/json %v", data, gerr, werr)
	}
	var ga, wa *jetstream.APIError
	if errors.As(gerr, &ga) != errors.As(werr, &wa) || ga != nil && *ga != *wa {
		t.Fatalf("%q: API error %+v, encoding/json %+v", data, ga, wa)
	}
}

// TestFastPubAckTakesServerAcks makes sure the acks nats-server writes do
// take the hand-written path (else the speed-up silently goes away).
func TestFastPubAckTakesServerAcks(t *testing.T) {
	for _, in := range []string{
		`{"stream":"MESH_orders","seq":1}`,
		`{"stream":"MESH_orders","seq":42,"duplicate":true}`,
		`{"stream":"MESH_orders","domain":"hub","seq":42}`,
		`{"stream":"MESH_orders","seq":300,"batch":"k9bGJ1MXtTgrqlDg6LtYNa","count":256}`,
	} {
		if _, ok := fastPubAck([]byte(in), ""); !ok {
			t.Errorf("%s: left to encoding/json", in)
		}
	}
}

func TestParsePubAckAllocations(t *testing.T) {
	data := []byte(`{"stream":"MESH_orders","seq":123456}`)
	n := testing.AllocsPerRun(100, func() {
		if a, err := parsePubAck(data, "MESH_orders"); err != nil || a.Sequence != 123456 {
			t.Fatal(a, err)
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per ack of the known stream, want 0", n)
	}
}

// FuzzParsePubAck compares the reader with encoding/json on any input.
func FuzzParsePubAck(f *testing.F) {
	for _, in := range pubAckCorpus {
		f.Add([]byte(in), "S")
	}
	f.Fuzz(func(t *testing.T, data []byte, known string) {
		checkPubAck(t, data, known)
	})
}

func BenchmarkParsePubAck(b *testing.B) {
	data := []byte(`{"stream":"MESH_bench_publish","seq":1234567}`)
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = parsePubAck(data, "MESH_bench_publish")
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = slowPubAck(data)
		}
	})
}
