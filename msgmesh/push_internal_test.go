package msgmesh

import (
	"encoding/base64"
	"net/http"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"7", 7 * time.Second, true},
		{"Sun, 06 Dec 2026 10:00:30 GMT", 30 * time.Second, true},
		{"Sun, 06 Dec 2026 09:00:00 GMT", 0, true}, // in the past: no delay
		{"-1", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestPercentEncoding(t *testing.T) {
	for _, v := range []string{"plain", "with space", `q"uote`, "50%", "ünïcode €", "tab\there", ""} {
		enc := percentEncode(v)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c <= 0x20 || c >= 0x7f || c == '"' {
				t.Errorf("percentEncode(%q) = %q holds byte %q", v, enc, c)
			}
		}
		if dec, err := percentDecode(enc); err != nil || dec != v {
			t.Errorf("percentDecode(percentEncode(%q)) = %q, %v", v, dec, err)
		}
	}
	for _, bad := range []string{"%", "%4", "%zz", "%ff"} {
		if _, err := percentDecode(bad); err == nil {
			t.Errorf("percentDecode(%q) took a malformed value", bad)
		}
	}
}

// TestPushRequestHeaders: what a delivery's POST carries besides the
// event, for messages an HTTP header cannot carry as they are.
func TestPushRequestHeaders(t *testing.T) {
	m := mesh.Message{DeliveryID: 7, Group: "g1", Topic: "t", Key: "", MessageID: "id-1", Redelivered: 2,
		Headers: []mesh.HeaderField{
			{Key: "X-Case", Value: "v"},
			{Key: "ctl", Value: "a\x01b"},
			{Key: "bad name", Value: "x"},
			{Key: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
			{Key: "Msgmesh-Tag", Value: "eu"},
		}}
	m.Flags |= mesh.FlagNullBody | mesh.FlagEmptyKey
	h := http.Header{}
	ev := eventOf("c1", m)
	ev.binaryHeaders(h)
	ev.transportHeaders(h, Delivery{m: m, id: "e-7"})
	want := map[string]string{
		"Ce-Id": "id-1", "Ce-Source": "msgmesh://c1/t", "Ce-Type": ceDefaultType, "Ce-Specversion": "1.0",
		"Content-Type": "application/octet-stream", "Msgmesh-Null-Body": "true", "Msgmesh-Attempt": "3",
		"Msgmesh-Group": "g1", "Msgmesh-Topic": "t", "Msgmesh-Delivery-Id": "e-7", "Msgmesh-Message-Id": "id-1",
		"Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "Msgmesh-Tag": "eu",
		"Msgmesh-Headers-Omitted": "1",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if vs, ok := h["Msgmesh-Header-X-Case"]; !ok || vs[0] != "v" {
		t.Errorf("Msgmesh-Header-X-Case = %v: not spelled as the message spells it", vs)
	}
	//lint:ignore SA1008 the sidecar sets the key as the message spells it, not canonicalized
	if vs := h["Msgmesh-Binary-Header-ctl"]; len(vs) != 1 || vs[0] != base64.StdEncoding.EncodeToString([]byte("a\x01b")) {
		t.Errorf("a value with a control character came as %v", vs)
	}
	if vs, ok := h["Msgmesh-Key"]; !ok || vs[0] != "" {
		t.Errorf("an empty key came as %v, want an empty Msgmesh-Key", vs)
	}
	if _, ok := h["Ce-Subject"]; ok {
		t.Error("an empty key became a subject")
	}
	if _, ok := h["Ce-Time"]; ok {
		t.Error("a message without a timestamp has a time")
	}
}

// TestPushDialControl: the check on every connection a push client
// dials. A URL host allowed by name may resolve anywhere; localhost and
// addresses must connect to loopback or an allowed address.
func TestPushDialControl(t *testing.T) {
	hosts, err := newHostSet("PushAllowHosts", []string{"receiver.internal", "10.1.0.0/16"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pm := &pushManager{hosts: hosts}
	tests := []struct {
		host, addr string
		ok         bool
	}{
		{"localhost", "127.0.0.1:8080", true},
		{"localhost", "[::1]:8080", true},
		{"localhost", "192.168.1.9:8080", false}, // localhost rebound off the host
		{"127.0.0.1", "127.0.0.1:80", true},
		{"receiver.internal", "203.0.113.7:443", true}, // allowed by name
		{"10.1.2.3", "10.1.2.3:80", true},
		{"10.1.2.3", "10.9.0.1:80", false},
	}
	for _, tt := range tests {
		err := pm.dialControl(tt.host)("tcp", tt.addr, nil)
		if (err == nil) != tt.ok {
			t.Errorf("dial %s for host %s: %v, want ok %v", tt.addr, tt.host, err, tt.ok)
		}
	}
}
