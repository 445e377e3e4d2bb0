package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidators(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"app", ValidateAppName("orders-v2.eu_1"), true},
		{"app empty", ValidateAppName(""), false},
		{"app leading dash", ValidateAppName("-orders"), false},
		{"app slash", ValidateAppName("a/b"), false},
		{"app 128", ValidateAppName(strings.Repeat("a", 128)), true},
		{"app 129", ValidateAppName(strings.Repeat("a", 129)), false},
		{"id addr", ValidateInstanceID("10.0.0.1:7610"), true},
		{"id ipv6", ValidateInstanceID("[fe80::1%eth0]:7610"), true},
		{"id slash", ValidateInstanceID("a/b"), false},
		{"id space", ValidateInstanceID("a b"), false},
		{"id empty", ValidateInstanceID(""), false},
		{"addr", ValidateAddr("sidecar-1.orders.svc:7610"), true},
		{"addr ipv6", ValidateAddr("[::1]:7610"), true},
		{"addr no port", ValidateAddr("10.0.0.1"), false},
		{"addr port 0", ValidateAddr("10.0.0.1:0"), false},
		{"addr port 65536", ValidateAddr("10.0.0.1:65536"), false},
		{"addr no host", ValidateAddr(":7610"), false},
		{"addr slash", ValidateAddr("a/b:1"), false},
		{"weight 0", ValidateWeight(0), true},
		{"weight 100", ValidateWeight(100), true},
		{"weight -1", ValidateWeight(-1), false},
		{"weight 101", ValidateWeight(101), false},
		{"labels", ValidateLabels(map[string]string{"version": "v2", "k8s.io/zone": "eu-1a", "e": ""}), true},
		{"label key", ValidateLabels(map[string]string{"/x": "v"}), false},
		{"label value", ValidateLabels(map[string]string{"k": "a\tb"}), false},
		{"label utf8", ValidateLabels(map[string]string{"k": "\xff"}), false},
	} {
		switch {
		case tc.ok && tc.err != nil:
			t.Errorf("%s: %v", tc.name, tc.err)
		case !tc.ok && !errors.Is(tc.err, ErrInvalid):
			t.Errorf("%s: %v, want an error wrapping ErrInvalid", tc.name, tc.err)
		}
	}
	spec := InstanceSpec{Addr: "10.0.0.1:7610"}
	if err := spec.Validate(); err != nil || spec.ID != spec.Addr {
		t.Fatalf("spec.Validate = %v, ID %q", err, spec.ID)
	}
}

func TestAppConfig(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := AppConfig{
		App:                       "orders",
		Instances:                 []Instance{{ID: "a:1", Weight: 10}, {ID: "b:1", Weight: 20}},
		Credential:                "new",
		PreviousCredential:        "old",
		PreviousCredentialExpires: now.Add(time.Minute),
	}
	if in, ok := c.Instance("b:1"); !ok || in.Weight != 20 {
		t.Fatalf("Instance(b:1) = %+v, %v", in, ok)
	}
	if _, ok := c.Instance("c:1"); ok {
		t.Fatal("Instance(c:1) found")
	}
	for _, tc := range []struct {
		cred string
		at   time.Time
		want bool
	}{
		{"new", now, true},
		{"old", now, true},
		{"old", now.Add(time.Minute), false},
		{"other", now, false},
		{"", now, false},
	} {
		if got := c.AcceptsCredential(tc.cred, tc.at); got != tc.want {
			t.Errorf("AcceptsCredential(%q, %v) = %v", tc.cred, tc.at, got)
		}
	}
	// The JSON names sidecars rely on; reserved fields stay absent, and so
	// does the credential of a config the operator reads.
	b, err := json.Marshal(AppConfig{App: "a", Instances: []Instance{}})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); got != `{"app":"a","version":0,"instances":[]}` {
		t.Fatalf("JSON = %s", got)
	}
	if b, _ := json.Marshal(AppConfig{App: "a", Instances: []Instance{}, Credential: "c"}); string(b) != `{"app":"a","version":0,"instances":[],"credential":"c"}` {
		t.Fatalf("JSON with a credential = %s", b)
	}
}
