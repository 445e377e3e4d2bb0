// Package topology says where topics live: the named broker clusters a
// sidecar can reach and the routes that map topics onto them. It is one
// type for every source of that knowledge: the sidecar's YAML config file
// today, the control plane's pushed config later (docs/design.md flows 1 and 7),
// so the two can never disagree about shape.
//
// Routes match topics with NATS-style patterns over dot-separated tokens:
// "orders.created" matches itself only, "orders.*" matches exactly one
// token in that place, and "orders.>" matches one or more trailing tokens.
// The first matching route in order wins; a topic no route matches lives on
// the default cluster.
package topology

import (
	"errors"
	"fmt"
	"strings"
)

// Kind is a broker technology.
type Kind string

// The broker kinds msgmesh has adapters for.
const (
	KindNATS     Kind = "nats"
	KindKafka    Kind = "kafka"
	KindRocketMQ Kind = "rocketmq"
)

// Cluster is one broker cluster.
type Cluster struct {
	// Name is how routes refer to the cluster.
	Name string `yaml:"name" json:"name"`
	// Kind picks the adapter.
	Kind Kind `yaml:"kind" json:"kind"`
	// Endpoints are the cluster's bootstrap addresses: NATS URLs, Kafka
	// host:port, RocketMQ name servers host:port.
	Endpoints []string `yaml:"endpoints" json:"endpoints"`
	// Options are adapter-specific settings, documented with each adapter
	// (docs/brokers.md). Unknown options are an error.
	Options map[string]string `yaml:"options,omitempty" json:"options,omitempty"`
	// Streams are the settings of the streams the adapter creates for new
	// topics (retention, limits, replicas). NATS clusters only: Kafka and
	// RocketMQ topics keep their broker's retention settings.
	Streams *Streams `yaml:"streams,omitempty" json:"streams,omitempty"`
}

// Route sends the topics matching Topic to Cluster.
type Route struct {
	Topic   string `yaml:"topic" json:"topic"`
	Cluster string `yaml:"cluster" json:"cluster"`
}

// Topology is the set of clusters and routes.
type Topology struct {
	Clusters []Cluster `yaml:"clusters" json:"clusters"`
	Routes   []Route   `yaml:"routes,omitempty" json:"routes,omitempty"`
	// Default is the cluster of topics no route matches. Zero: the only
	// cluster when there is exactly one; with several it is required.
	Default string `yaml:"default_cluster,omitempty" json:"default_cluster,omitempty"`
}

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("topology: invalid")

// Validate checks names, kinds, patterns and references, and fills Default
// when it can be inferred.
func (t *Topology) Validate() error {
	if len(t.Clusters) == 0 {
		return fmt.Errorf("%w: no clusters", ErrInvalid)
	}
	names := map[string]bool{}
	for i, c := range t.Clusters {
		switch {
		case c.Name == "":
			return fmt.Errorf("%w: clusters[%d]: name is required", ErrInvalid, i)
		case names[c.Name]:
			return fmt.Errorf("%w: clusters[%d]: duplicate name %q", ErrInvalid, i, c.Name)
		case c.Kind != KindNATS && c.Kind != KindKafka && c.Kind != KindRocketMQ:
			return fmt.Errorf("%w: clusters[%d] (%s): kind %q is not one of nats, kafka, rocketmq", ErrInvalid, i, c.Name, c.Kind)
		case len(c.Endpoints) == 0:
			return fmt.Errorf("%w: clusters[%d] (%s): at least one endpoint is required", ErrInvalid, i, c.Name)
		}
		if c.Streams != nil && c.Kind != KindNATS {
			return fmt.Errorf("%w: clusters[%d] (%s): streams settings apply to nats clusters only; %s topics keep the broker's own retention settings", ErrInvalid, i, c.Name, c.Kind)
		}
		if err := c.Streams.Validate(fmt.Sprintf("clusters[%d] (%s): streams", i, c.Name)); err != nil {
			return err
		}
		names[c.Name] = true
	}
	if t.Default == "" && len(t.Clusters) == 1 {
		t.Default = t.Clusters[0].Name
	}
	return ValidateRoutes(t.Routes, t.Default, func(n string) bool { return names[n] })
}

// ValidateRoutes checks route patterns and that every route and the default
// name a cluster that exists. The sidecar uses it on its opened brokers, the
// config file through Topology.Validate.
func ValidateRoutes(routes []Route, def string, exists func(cluster string) bool) error {
	for i, r := range routes {
		if err := checkPattern(r.Topic); err != nil {
			return fmt.Errorf("%w: routes[%d]: topic %q: %w", ErrInvalid, i, r.Topic, err)
		}
		if !exists(r.Cluster) {
			return fmt.Errorf("%w: routes[%d]: unknown cluster %q", ErrInvalid, i, r.Cluster)
		}
	}
	if def == "" {
		return fmt.Errorf("%w: default_cluster is required with more than one cluster", ErrInvalid)
	}
	if !exists(def) {
		return fmt.Errorf("%w: default_cluster %q is not a cluster", ErrInvalid, def)
	}
	return nil
}

// Resolve returns the cluster topic lives on. Call Validate first.
func (t *Topology) Resolve(topic string) string { return Resolve(t.Routes, t.Default, topic) }

// Resolve returns the cluster of the first route matching topic, or def.
func Resolve(routes []Route, def, topic string) string {
	for _, r := range routes {
		if Match(r.Topic, topic) {
			return r.Cluster
		}
	}
	return def
}

// Match reports whether topic matches pattern (see the package doc).
func Match(pattern, topic string) bool {
	for {
		p, prest, pmore := strings.Cut(pattern, ".")
		tk, trest, tmore := strings.Cut(topic, ".")
		switch {
		case p == ">":
			return tk != ""
		case p != "*" && p != tk:
			return false
		case !pmore || !tmore:
			return pmore == tmore
		}
		pattern, topic = prest, trest
	}
}

func checkPattern(p string) error {
	if p == "" {
		return errors.New("empty pattern")
	}
	toks := strings.Split(p, ".")
	for i, tk := range toks {
		switch {
		case tk == "":
			return errors.New("empty token")
		case tk == ">" && i != len(toks)-1:
			return errors.New("'>' must be the last token")
		case strings.ContainsAny(tk, "*>") && len(tk) > 1:
			return fmt.Errorf("wildcard inside token %q", tk)
		}
	}
	return nil
}
