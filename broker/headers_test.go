package broker_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/broker"
)

func hs(kv ...string) []broker.Header {
	var out []broker.Header
	for i := 0; i < len(kv); i += 2 {
		out = append(out, broker.Header{Key: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestCheckHeaders(t *testing.T) {
	many := func(n int, dupAt int) []broker.Header {
		var out []broker.Header
		for i := 0; i < n; i++ {
			out = append(out, broker.Header{Key: fmt.Sprintf("X-%d", i), Value: "v"})
		}
		if dupAt >= 0 {
			out = append(out, broker.Header{Key: fmt.Sprintf("x-%d", dupAt), Value: "again"})
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		headers []broker.Header
		refused string // the header named in the error; "" when allowed
	}{
		{"none", nil, ""},
		{"trace context", hs("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate", "a=1"), ""},
		{"schema hints in any case", hs("msgmesh-content-type", "application/json", "Msgmesh-Schema-Id", "7", "MSGMESH-SCHEMA-VERSION", "latest"), ""},
		{"tab and UTF-8 in a value", hs("X-A", "a\tb ü"), ""},
		{"empty value", hs("X-A", ""), ""},
		{"names like reserved ones", hs("NatsMsgId", "1", "Msgmesh", "1", "Keys-Extra", "1", "_x", "1", "Statuses", "1"), ""},
		{"many distinct", many(40, -1), ""},
		{"colour in any case", hs("msgmesh-colour", "blue", "X", "1"), ""},
		{"colour with dots and dashes", hs("Msgmesh-Colour", "qa-run.17_b"), ""},
		{"empty colour", hs("Msgmesh-Colour", ""), "Msgmesh-Colour"},
		{"colour with a space", hs("Msgmesh-Colour", "light blue"), "Msgmesh-Colour"},
		{"colour starting with a dash", hs("MSGMESH-COLOUR", "-blue"), "MSGMESH-COLOUR"},
		{"colour too long", hs("Msgmesh-Colour", strings.Repeat("b", 65)), "Msgmesh-Colour"},
		{"colour twice", hs("Msgmesh-Colour", "blue", "msgmesh-colour", "red"), "msgmesh-colour"},
		{"Nats-Msg-Id", hs("X", "1", "Nats-Msg-Id", "1"), "Nats-Msg-Id"},
		{"NATS-ROLLUP", hs("NATS-ROLLUP", "all"), "NATS-ROLLUP"},
		{"status", hs("status", "404"), "status"},
		{"Msgmesh-Key", hs("Msgmesh-Key", "k"), "Msgmesh-Key"},
		{"Msgmesh-Schema", hs("Msgmesh-Schema", "1"), "Msgmesh-Schema"},
		{"tags", hs("tags", "a"), "tags"},
		{"Reconsume_Time", hs("Reconsume_Time", "1"), "Reconsume_Time"},
		{"__ prefix", hs("__x", "1"), "__x"},
		{"empty name", hs("", "v"), ""},
		{"tab in name", hs("X\tA", "v"), "X\tA"},
		{"DEL in name", hs("X\x7f", "v"), "X\x7f"},
		{"CRLF in value", hs("X-A", "a\r\nb"), "X-A"},
		{"DEL in value", hs("X-A", "a\x7f"), "X-A"},
		{"duplicate", hs("X-A", "1", "X-B", "2", "x-a", "3"), "x-a"},
		{"duplicate among many", many(40, 17), "x-17"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := broker.CheckHeaders(tc.headers)
			allowed := tc.refused == "" && tc.name != "empty name"
			if allowed {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var he *broker.HeaderError
			if !errors.Is(err, broker.ErrInvalidHeader) || !errors.As(err, &he) || he.Name != tc.refused || he.Reason == "" {
				t.Fatalf("error %v (%T), want a HeaderError naming %q", err, err, tc.refused)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.refused)) {
				t.Errorf("error %q does not name the header", err)
			}
		})
	}
}

func TestColourOf(t *testing.T) {
	m := &broker.Message{Headers: hs("X", "1", "msgmesh-COLOUR", "blue")}
	if got := broker.ColourOf(m); got != "blue" {
		t.Fatalf("ColourOf = %q, want blue", got)
	}
	if got := broker.ColourOf(&broker.Message{}); got != "" {
		t.Fatalf("ColourOf(uncoloured) = %q", got)
	}
	if why := broker.CheckColour(strings.Repeat("b", broker.MaxColourLen)); why != "" {
		t.Fatalf("a colour of %d bytes: %s", broker.MaxColourLen, why)
	}
}

// TestCheckHeadersAllocs: the rule costs no allocation on a publish with
// a usual handful of headers.
func TestCheckHeadersAllocs(t *testing.T) {
	h := hs("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "Content-Type", "application/json", "X-Order", "7", "tags-like", "x")
	if n := testing.AllocsPerRun(100, func() { _ = broker.CheckHeaders(h) }); n != 0 {
		t.Fatalf("CheckHeaders allocated %v times", n)
	}
}

func TestHeaderBytes(t *testing.T) {
	m := &broker.Message{Key: "key", Headers: hs("A", "bc", "traceparent", "")}
	if got, want := broker.HeaderBytes(m), 3+(1+2+4)+(11+0+4); got != want {
		t.Fatalf("HeaderBytes = %d, want %d", got, want)
	}
}

func TestReservedForAdapters(t *testing.T) {
	for name, want := range map[string]bool{"Nats-Msg-Id": true, "Status": true, "nats-msg-id": false, "status": false, "Natsx": false} {
		if got := broker.NATSReserved(name); got != want {
			t.Errorf("NATSReserved(%q) = %v", name, got)
		}
	}
	for name, want := range map[string]bool{"KEYS": true, "__STARTDELIVERTIME": true, "keys": false, "X": false} {
		if got := broker.RocketMQReserved(name); got != want {
			t.Errorf("RocketMQReserved(%q) = %v", name, got)
		}
	}
}

// BenchmarkCheckHeaders: the header rule on a publish with a usual
// handful of headers, and with 40 (the duplicate check switches to a map
// above 16).
func BenchmarkCheckHeaders(b *testing.B) {
	few := hs("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "Content-Type", "application/json", "X-Order", "7", "X-Tenant", "acme")
	var many []broker.Header
	for i := 0; i < 40; i++ {
		many = append(many, broker.Header{Key: fmt.Sprintf("X-Header-%d", i), Value: "value"})
	}
	for _, bc := range []struct {
		name string
		h    []broker.Header
	}{{"4", few}, {"40", many}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := broker.CheckHeaders(bc.h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
