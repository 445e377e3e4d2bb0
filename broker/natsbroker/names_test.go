package natsbroker

import (
	"strings"
	"testing"
)

func TestConsumerName(t *testing.T) {
	tests := []struct {
		group, topic string
		want         string // "" : only check validity and the hash suffix
		hashed       bool
	}{
		{group: "billing", topic: "orders", want: "billing__orders"},
		{group: "billing", topic: "orders.created", hashed: true},
		{group: "a", topic: "b__c", want: "a__b__c"},
		{group: "a__b", topic: "c", hashed: true},
		{group: "a_", topic: "b", hashed: true},
		{group: "a", topic: "_b", want: "a___b"},
		{group: "g w", topic: "t", hashed: true},
		{group: strings.Repeat("g", 300), topic: "t"},
	}
	seen := make(map[string]string)
	for _, tt := range tests {
		got := consumerName(tt.group, tt.topic)
		if tt.want != "" && got != tt.want {
			t.Errorf("consumerName(%q, %q) = %q, want %q", tt.group, tt.topic, got, tt.want)
		}
		plain, _ := sanitize(tt.group)
		plainT, _ := sanitize(tt.topic)
		if isHashed := got != bound(plain+"__"+plainT); isHashed != tt.hashed && len(got) < maxNameLen {
			t.Errorf("consumerName(%q, %q) = %q, hashed %v, want %v", tt.group, tt.topic, got, isHashed, tt.hashed)
		}
		if !validName(got) || len(got) > maxNameLen {
			t.Errorf("consumerName(%q, %q) = %q is not a valid name", tt.group, tt.topic, got)
		}
		if prev, ok := seen[got]; ok {
			t.Errorf("consumerName(%q, %q) = %q collides with %s", tt.group, tt.topic, got, prev)
		}
		seen[got] = tt.group + "/" + tt.topic
	}
}

func TestConsumerNameNoCollisions(t *testing.T) {
	// Every (group, topic) pair over a small alphabet that stresses the
	// separator gets a distinct name.
	parts := []string{"a", "_", "a_", "_a", "a__", "__a", "a.b", "a_b", "a-b", "a__b", "a.", "b"}
	seen := make(map[string][2]string)
	for _, g := range parts {
		for _, tp := range parts {
			n := consumerName(g, tp)
			if prev, ok := seen[n]; ok {
				t.Fatalf("(%q,%q) and (%q,%q) both map to %q", g, tp, prev[0], prev[1], n)
			}
			seen[n] = [2]string{g, tp}
		}
	}
}

func TestStreamName(t *testing.T) {
	if got := streamName("MESH_", "orders.created", false); got != "MESH_orders_created" {
		t.Errorf("streamName = %q", got)
	}
	a, b := streamName("MESH_", "a.b", true), streamName("MESH_", "a_b", false)
	if a == b || !strings.HasPrefix(a, "MESH_a_b_") {
		t.Errorf("hashed %q, plain %q", a, b)
	}
	long := streamName("MESH_", strings.Repeat("x.", 200)+"y", false)
	if len(long) > maxNameLen || !validName(long) {
		t.Errorf("long name %q", long)
	}
}

func TestHeaderSafe(t *testing.T) {
	for s, want := range map[string]bool{
		"k": true, "ключ": true, "a b": true,
		" a": false, "a ": false, "a\nb": false, "a\x00": false, "\xff": false, "a\tb": false,
	} {
		if got := headerSafe(s); got != want {
			t.Errorf("headerSafe(%q) = %v, want %v", s, got, want)
		}
	}
}
