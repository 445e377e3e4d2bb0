package sidecarapp

import (
	"flag"
	"io"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/msgmesh"
)

// The example's capacity section spells out the defaults: it must say
// what the code does.
func TestExampleCapacityIsTheDefaults(t *testing.T) {
	f, err := LoadFile("../../config/msgmesh.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Capacity{MaxConns: msgmesh.DefaultMaxConns, HelloTimeout: msgmesh.DefaultHelloTimeout,
		MaxRegistrations: msgmesh.DefaultMaxRegistrations, MaxUpstreams: msgmesh.DefaultMaxUpstreams, HTTP: msgmesh.DefaultHTTPLimits()}
	if f.Capacity == nil || *f.Capacity != want {
		t.Fatalf("example capacity %+v, want the defaults %+v", f.Capacity, want)
	}
}

// A flag given on the command line wins over the file; the file wins over
// a flag's default.
func TestCapacityFlagsOverFile(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg msgmesh.Config
	capacityFlags(fs, &cfg)
	if err := fs.Parse([]string{"--max-conns", "7", "--http-idle-timeout", "3s"}); err != nil {
		t.Fatal(err)
	}
	file := &Capacity{MaxConns: 100, MaxRegistrations: 9, HelloTimeout: time.Second}
	file.HTTP.IdleTimeout = time.Minute
	file.HTTP.ReadTimeout = 2 * time.Second
	applyCapacity(fs, &cfg, file)
	for name, c := range map[string]struct{ got, want any }{
		"max_conns (flag)":         {cfg.MaxConns, 7},
		"max_registrations (file)": {cfg.MaxRegistrations, 9},
		"hello_timeout (file)":     {cfg.HelloTimeout, time.Second},
		"max_upstreams (default)":  {cfg.MaxUpstreams, msgmesh.DefaultMaxUpstreams},
		"http idle (flag)":         {cfg.HTTP.IdleTimeout, 3 * time.Second},
		"http read (file)":         {cfg.HTTP.ReadTimeout, 2 * time.Second},
		"http write (default)":     {cfg.HTTP.WriteTimeout, msgmesh.DefaultHTTPLimits().WriteTimeout},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", name, c.got, c.want)
		}
	}
}
