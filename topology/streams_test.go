package topology

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestStreamsFor(t *testing.T) {
	var s Streams
	src := `
max_age: 72h
max_bytes: 1GiB
topics:
  - topic: "audit.>"
    max_age: 0s
  - topic: "work.*"
    retention: interest
    max_msgs: 1000
    max_bytes: 10MB
  - topic: "work.never"
    replicas: 3
`
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate("streams"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		topic     string
		retention string
		age       time.Duration
		bytes     ByteSize
		msgs      int64 // -1: unset
		replicas  int
	}{
		{"orders.created", "", 72 * time.Hour, 1 << 30, -1, 0},
		{"audit.login.eu", "", 0, 1 << 30, -1, 0},
		{"work.x", RetentionInterest, 72 * time.Hour, 10_000_000, 1000, 0},
		{"work.never", RetentionInterest, 72 * time.Hour, 10_000_000, 1000, 0}, // first match wins
	} {
		got := s.For(c.topic)
		msgs := int64(-1)
		if got.MaxMsgs != nil {
			msgs = *got.MaxMsgs
		}
		if got.Retention != c.retention || got.MaxAge == nil || *got.MaxAge != c.age || got.MaxBytes == nil || *got.MaxBytes != c.bytes || msgs != c.msgs || got.Replicas != c.replicas {
			t.Errorf("For(%q) = retention %q, max_age %v, max_bytes %v, max_msgs %d, replicas %d; want %q %v %v %d %d",
				c.topic, got.Retention, *got.MaxAge, *got.MaxBytes, msgs, got.Replicas, c.retention, c.age, c.bytes, c.msgs, c.replicas)
		}
	}
	var none *Streams
	if got := none.For("x"); got != (StreamSettings{}) {
		t.Errorf("nil Streams: %+v", got)
	}
}

func TestStreamsValidateErrors(t *testing.T) {
	neg, minute, hour := time.Duration(-1), time.Minute, time.Hour
	negBytes := ByteSize(-1)
	for name, s := range map[string]Streams{
		"retention":               {StreamSettings: StreamSettings{Retention: "workqueue"}},
		"age":                     {StreamSettings: StreamSettings{MaxAge: &neg}},
		"bytes":                   {StreamSettings: StreamSettings{MaxBytes: &negBytes}},
		"replicas":                {StreamSettings: StreamSettings{Replicas: -1}},
		"storage":                 {StreamSettings: StreamSettings{Storage: "disk"}},
		"duplicates":              {StreamSettings: StreamSettings{Duplicates: &neg}},
		"duplicates over max_age": {StreamSettings: StreamSettings{MaxAge: &minute, Duplicates: &hour}},
		"pattern":                 {Topics: []TopicStreams{{Topic: "a..b"}}},
		"topic value":             {Topics: []TopicStreams{{Topic: "a.>", StreamSettings: StreamSettings{Retention: "x"}}}},
	} {
		if err := s.Validate("streams"); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", name, err)
		}
	}
	tp := Topology{Clusters: []Cluster{{Name: "k", Kind: KindKafka, Endpoints: []string{"x"}, Streams: &Streams{}}}}
	if err := tp.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "nats clusters only") {
		t.Errorf("streams on a kafka cluster: %v", err)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"0": 0, "1024": 1024, "1KiB": 1024, "512MiB": 512 << 20, "10GB": 10_000_000_000, "1 GiB": 1 << 30} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err != nil || b != want {
			t.Errorf("%q: %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "lots", "1QB"} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q: accepted as %d", in, b)
		}
	}
	// JSON takes numbers and strings, as the control plane may send either.
	var s StreamSettings
	if err := json.Unmarshal([]byte(`{"max_bytes": 2048}`), &s); err != nil || *s.MaxBytes != 2048 {
		t.Errorf("JSON number: %v %v", s.MaxBytes, err)
	}
	if err := json.Unmarshal([]byte(`{"max_bytes": "2KiB"}`), &s); err != nil || *s.MaxBytes != 2048 {
		t.Errorf("JSON string: %v %v", s.MaxBytes, err)
	}
	if got := ByteSize(3 << 30).String(); got != "3.0 GiB" {
		t.Errorf("String: %q", got)
	}
}
