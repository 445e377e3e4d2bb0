package sidecarapp

import (
	"flag"
	"time"

	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/msgmesh"
)

// Capacity is the config file's capacity section (docs/config.md): what
// one sidecar serves at most, so a flood of connections or registrations
// is refused clearly instead of exhausting it. Read at start only. A flag
// given on the command line wins over the field it sets.
type Capacity struct {
	MaxConns         int             `yaml:"max_conns"`
	HelloTimeout     time.Duration   `yaml:"hello_timeout"`
	MaxRegistrations int             `yaml:"max_registrations"`
	MaxUpstreams     int             `yaml:"max_upstreams"`
	HTTP             core.HTTPLimits `yaml:"http"`
}

// capacityFlags registers the capacity flags on fs, bound to cfg's fields
// and showing their defaults.
func capacityFlags(fs *flag.FlagSet, cfg *msgmesh.Config) {
	fs.IntVar(&cfg.MaxConns, "max-conns", msgmesh.DefaultMaxConns, "app connections served at once; more are refused (ERROR UNAVAILABLE); lowered at start to fit the open-file limit")
	fs.DurationVar(&cfg.HelloTimeout, "hello-timeout", msgmesh.DefaultHelloTimeout, "a connection that has not said HELLO this long after connecting is closed")
	fs.IntVar(&cfg.MaxRegistrations, "max-registrations", msgmesh.DefaultMaxRegistrations, "registrations (apps) stored at once; more are refused (HTTP 409 LIMIT_EXCEEDED)")
	fs.IntVar(&cfg.MaxUpstreams, "max-upstreams", msgmesh.DefaultMaxUpstreams, "upstream consumers, one per (cluster, group, topic) registered; registrations needing more are refused (HTTP 409 LIMIT_EXCEEDED)")
	cfg.HTTP = msgmesh.DefaultHTTPLimits()
	cfg.HTTP.Flags(fs)
}

// applyCapacity sets cfg's capacity fields from the config file's section
// where the command line did not set them (fs is parsed).
func applyCapacity(fs *flag.FlagSet, cfg *msgmesh.Config, c *Capacity) {
	if c == nil {
		return
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	fromFile(given, "max-conns", &cfg.MaxConns, c.MaxConns)
	fromFile(given, "hello-timeout", &cfg.HelloTimeout, c.HelloTimeout)
	fromFile(given, "max-registrations", &cfg.MaxRegistrations, c.MaxRegistrations)
	fromFile(given, "max-upstreams", &cfg.MaxUpstreams, c.MaxUpstreams)
	fromFile(given, core.FlagHTTPReadHeaderTimeout, &cfg.HTTP.ReadHeaderTimeout, c.HTTP.ReadHeaderTimeout)
	fromFile(given, core.FlagHTTPReadTimeout, &cfg.HTTP.ReadTimeout, c.HTTP.ReadTimeout)
	fromFile(given, core.FlagHTTPWriteTimeout, &cfg.HTTP.WriteTimeout, c.HTTP.WriteTimeout)
	fromFile(given, core.FlagHTTPIdleTimeout, &cfg.HTTP.IdleTimeout, c.HTTP.IdleTimeout)
	fromFile(given, core.FlagHTTPMaxHeaderBytes, &cfg.HTTP.MaxHeaderBytes, c.HTTP.MaxHeaderBytes)
	fromFile(given, core.FlagHTTPMaxConns, &cfg.HTTP.MaxConns, c.HTTP.MaxConns)
}

// fromFile sets *dst to v unless the flag was given or v is zero (unset
// in the file).
func fromFile[T comparable](given map[string]bool, flagName string, dst *T, v T) {
	var zero T
	if !given[flagName] && v != zero {
		*dst = v
	}
}
