package main

import (
	"strings"
	"testing"
)

func TestConfigFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := configFromEnv(env(map[string]string{
		"DEMO_APP": "orders", "DEMO_PRODUCE": "p1:a.b, p1:c", "DEMO_CONSUME": "g1:a.b,,g2:c",
		"DEMO_AUTO_PUBLISH": "c", "DEMO_AUTO_RATE": "2.5", "DEMO_HANDLE_DELAY": "5ms", "DEMO_SECRET": " s3cret-0123456789abc ",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Produce) != 2 || len(c.Consume) != 2 || c.Consume[1] != (binding{"g2", "c"}) || c.AutoRate != 2.5 ||
		c.HandleDelay.Milliseconds() != 5 || c.MeshAddr != "127.0.0.1:7600" || c.Concurrency != 4 || c.Secret != "s3cret-0123456789abc" {
		t.Fatalf("parsed %+v", c)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"DEMO_PRODUCE": "p1:a"}, "DEMO_APP is required"},
		{map[string]string{"DEMO_APP": "x"}, "nothing to register"},
		{map[string]string{"DEMO_APP": "x", "DEMO_CONSUME": "g1"}, "not group:topic"},
		{map[string]string{"DEMO_APP": "x", "DEMO_CONSUME": "g1:a", "DEMO_CONCURRENCY": "0"}, "DEMO_CONCURRENCY"},
		{map[string]string{"DEMO_APP": "x", "DEMO_CONSUME": "g1:a", "DEMO_AUTO_PUBLISH": "a"}, "not in DEMO_PRODUCE"},
		{map[string]string{"DEMO_APP": "x", "DEMO_CONSUME": "g1:a", "DEMO_HANDLE_DELAY": "soon"}, "DEMO_HANDLE_DELAY"},
	} {
		if _, err := configFromEnv(env(tc.env)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error with %q", tc.env, err, tc.want)
		}
	}
}
