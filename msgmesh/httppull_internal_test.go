package msgmesh

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// TestHTTPMessageEncoding: the JSON of a pulled message keeps every byte
// of body, key and header values, and tells a null body from an empty one
// and no key from an empty one; the answer is one JSON object.
func TestHTTPMessageEncoding(t *testing.T) {
	s := &session{epoch: "00112233aabbccdd"}
	bin := "\xff\xfe\x00ok"
	ms := []mesh.Message{
		{DeliveryID: 1, Group: "g", Topic: "t", Key: bin, Body: []byte(bin),
			Headers: []mesh.HeaderField{{Key: "raw", Value: bin}, {Key: "Msgmesh-Tag", Value: "blue"}}},
		{DeliveryID: 2, Group: "g", Topic: "t", Flags: mesh.NewMessageFlags(true, true)},
		{DeliveryID: 3, Group: "g", Topic: "t"},
	}
	var buf bytes.Buffer
	if err := s.writePulled(&buf, ms); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Messages []struct {
			DeliveryID string  `json:"delivery_id"`
			Key        *string `json:"key"`
			KeyBase64  []byte  `json:"key_base64"`
			Body       *[]byte `json:"body"`
			Headers    []struct {
				Key         string `json:"key"`
				Value       string `json:"value"`
				ValueBase64 []byte `json:"value_base64"`
			} `json:"headers"`
			Tag       string  `json:"tag"`
			Timestamp *string `json:"timestamp"`
		} `json:"messages"`
	}
	dec := json.NewDecoder(&buf)
	if err := dec.Decode(&res); err != nil || len(res.Messages) != 3 {
		t.Fatalf("decoding the answer: %v, %d messages", err, len(res.Messages))
	}
	m := res.Messages[0]
	if m.DeliveryID != "00112233aabbccdd-1" || m.Key != nil || string(m.KeyBase64) != bin || m.Body == nil || string(*m.Body) != bin {
		t.Errorf("binary message: id %q key %v key_base64 %q body %v", m.DeliveryID, m.Key, m.KeyBase64, m.Body)
	}
	if len(m.Headers) != 2 || string(m.Headers[0].ValueBase64) != bin || m.Headers[0].Value != "" || m.Headers[1].Value != "blue" || m.Tag != "blue" {
		t.Errorf("binary message headers %+v tag %q", m.Headers, m.Tag)
	}
	if m.Timestamp != nil {
		t.Errorf("a message without a broker timestamp has timestamp %q", *m.Timestamp)
	}
	if n := res.Messages[1]; n.Body != nil || n.Key == nil || *n.Key != "" {
		t.Errorf("null body with an empty key: body %v key %v; want null and \"\"", n.Body, n.Key)
	}
	if n := res.Messages[2]; n.Body == nil || len(*n.Body) != 0 || n.Key != nil {
		t.Errorf("empty body without a key: body %v key %v; want \"\" and null", n.Body, n.Key)
	}
	if rest, _ := io.ReadAll(dec.Buffered()); strings.TrimSpace(string(rest)) != "" || buf.Len() != 0 {
		t.Errorf("trailing data after the answer: %q", rest)
	}
}
