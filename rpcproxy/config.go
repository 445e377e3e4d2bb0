package rpcproxy

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/msgmesh/msgmesh/codecs/http1"
	"github.com/msgmesh/msgmesh/codecs/meshrpc"
	"github.com/msgmesh/msgmesh/pipeline"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

// Config configures the RPC proxy. It is meant to be loaded from the
// sidecar's YAML file (the yaml tags), and later from the control plane.
// The zero value of every field is a usable default, documented on the
// field; a zero Config is an egress-only proxy with no routes (every call
// answered NO_ROUTE), which is valid.
//
// Example:
//
//	egress:
//	  listen: 127.0.0.1:7610
//	ingress:
//	  listen: 0.0.0.0:7611
//	  app: {mesh: 127.0.0.1:9000, http1: 127.0.0.1:8080}
//	  heartbeat: {interval: 1s, unhealthy_threshold: 3, http_path: /healthz}
//	clusters:
//	  - name: inventory
//	    lb_policy: least_request
//	    hosts:
//	      - {address: 10.0.0.7:7611, weight: 3}
//	      - {address: 10.0.0.8:7611}
//	routes:
//	  - {service: inventory, cluster: inventory, timeout: 2s}
//	  - {service: shop.example.com, path_prefix: /api/, cluster: inventory, max_concurrent: 100}
type Config struct {
	Egress   EgressConfig    `yaml:"egress"`
	Ingress  IngressConfig   `yaml:"ingress"`
	Clusters []ClusterConfig `yaml:"clusters"`
	// Routes are tried in order; the first that matches a request wins.
	Routes []RouteConfig `yaml:"routes"`

	// MaxHeaderBytes bounds a request's or answer's metadata (HTTP request
	// line and headers: 431 over it). Zero: 64 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxBodyBytes bounds a body (HTTP 413, mesh FRAME_TOO_LARGE over it).
	// Zero: 4 MiB.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxInflightPerConn bounds the requests read from one downstream
	// connection and not answered yet; beyond it the proxy stops reading
	// that connection (backpressure, bounded memory). Zero: 1024.
	MaxInflightPerConn int `yaml:"max_inflight_per_conn"`
	// IdleTimeout closes a downstream connection that sent nothing for
	// this long. Zero: 5m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConns bounds the downstream connections each listener serves at
	// once; past it a new connection is closed at once (core.ConnLimit).
	// Zero: 1024.
	MaxConns int `yaml:"max_conns"`
	// AccessLog logs every exchange at Info (5xx at Warn). Zero: off;
	// the counters of Metrics are always kept.
	AccessLog bool `yaml:"access_log"`

	// Codecs are the protocols the listeners accept, sniffed from the
	// first byte of each connection. Zero: the mesh RPC codec and HTTP/1.1.
	Codecs []stream.Codec `yaml:"-"`
	// Stages are more stages for the proxy's pipeline (package pipeline):
	// values implementing pipeline.ExchangeHook and/or ExchangeDoneHook.
	// They run after the built-in ones (metrics, access log, limits) on
	// every exchange of both listeners. Zero: none.
	Stages []pipeline.Stage `yaml:"-"`
}

// Off, as a listen address, disables a listener.
const Off = "off"

// Default listen addresses.
const (
	DefaultEgressListen  = "127.0.0.1:7610"
	DefaultIngressListen = "0.0.0.0:7611"
)

// EgressConfig is the listener local apps call services through.
type EgressConfig struct {
	// Listen is the address; both codecs are served on it. Zero:
	// 127.0.0.1:7610 (loopback: only the local app calls out through
	// it). "off" disables it.
	Listen string `yaml:"listen"`
}

// IngressConfig is the listener other sidecars forward calls to; they go
// to the local app.
type IngressConfig struct {
	// Listen is the address; both codecs are served on it. Zero:
	// 0.0.0.0:7611. "off" disables it; so does an empty App.
	Listen string `yaml:"listen"`
	// App is where the local app serves each protocol, by codec name:
	// "mesh" (mesh RPC frames) and "http1" (HTTP/1.1). A call arriving in
	// a protocol with no address is answered NO_ROUTE. Empty: no ingress.
	App map[string]string `yaml:"app"`
	// Timeout bounds one call to the local app. Zero: 30s.
	Timeout time.Duration `yaml:"timeout"`
	// ConnsPerHost is how many multiplexed connections to the local app
	// the mesh codec uses. Zero: 2.
	ConnsPerHost int `yaml:"conns_per_host"`
	// Heartbeat checks the local app.
	Heartbeat HeartbeatConfig `yaml:"heartbeat"`
}

// HeartbeatConfig sets how the ingress checks the local app. Every
// Interval it sends each configured app address a heartbeat request
// through the same connection pool as the calls: a HEARTBEAT frame for the
// mesh codec, "GET HTTPPath" for HTTP/1.1, answered within Timeout and
// (HTTP) below status 500. After UnhealthyThreshold failures in a row the
// app is unhealthy: the ingress listener is closed (new connections are
// refused, so calling sidecars fail over), calls on open connections are
// answered UNAVAILABLE (HTTP 503) without being forwarded, and Healthy
// reports false. After HealthyThreshold successes in a row it is healthy
// again and the listener reopens on the same address. The app starts
// unhealthy until its first answer (Start waits for one round).
type HeartbeatConfig struct {
	// Interval between heartbeats. Zero: 1s.
	Interval time.Duration `yaml:"interval"`
	// Timeout for one heartbeat. Zero: Interval.
	Timeout time.Duration `yaml:"timeout"`
	// UnhealthyThreshold failures in a row make the app unhealthy. Zero: 3.
	UnhealthyThreshold int `yaml:"unhealthy_threshold"`
	// HealthyThreshold successes in a row make it healthy. Zero: 1.
	HealthyThreshold int `yaml:"healthy_threshold"`
	// HTTPPath is the path of the HTTP heartbeat. Zero: "/".
	HTTPPath string `yaml:"http_path"`
}

// ClusterConfig is a set of hosts calls can be routed to.
type ClusterConfig struct {
	// Name is what routes refer to. Required, unique.
	Name string `yaml:"name"`
	// Hosts are the addresses (host:port): usually other sidecars' ingress
	// listeners, or the servers themselves. At least one.
	Hosts []HostConfig `yaml:"hosts"`
	// LBPolicy is round_robin (smooth weighted round robin) or
	// least_request (weighted power of two choices). Zero: round_robin.
	LBPolicy string `yaml:"lb_policy"`
	// ConnectTimeout bounds one connect; a failed connect fails over to
	// another host. Zero: 1s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ConnsPerHost is how many multiplexed connections the mesh codec
	// keeps per host; every downstream connection's calls share them.
	// Zero: 2.
	ConnsPerHost int `yaml:"conns_per_host"`
	// MaxIdlePerHost is how many idle keep-alive connections HTTP/1.1
	// keeps per host. Zero: 64.
	MaxIdlePerHost int `yaml:"max_idle_per_host"`
}

// HostConfig is one host of a cluster.
type HostConfig struct {
	Address string `yaml:"address"`
	// Weight is the host's share relative to the others. Zero: 1.
	Weight int `yaml:"weight"`
}

// RouteConfig sends matching calls to a cluster. A call matches when every
// non-empty match field matches; a route with none matches every call.
type RouteConfig struct {
	// Name identifies the route in metrics, logs and limits. Zero: the
	// service and path prefix ("inventory", "shop.example.com/api/"), or
	// "route-N".
	Name string `yaml:"name"`
	// Service matches the mesh REQUEST's service, or the HTTP Host header
	// without its port, compared lower-cased (write HTTP hosts in lower
	// case).
	Service string `yaml:"service"`
	// PathPrefix matches the start of the HTTP path, or of the mesh
	// REQUEST's method.
	PathPrefix string `yaml:"path_prefix"`
	// Protocol restricts the route to one codec ("mesh", "http1"). Zero:
	// any.
	Protocol string `yaml:"protocol"`
	// Cluster is the name of the cluster. Required.
	Cluster string `yaml:"cluster"`
	// Timeout bounds a call, connect included; over it the caller gets
	// TIMEOUT (HTTP 504). Zero: 10s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxConcurrent bounds the route's calls in flight; over it a call is
	// answered RATE_LIMITED (HTTP 429). Zero: no limit.
	MaxConcurrent int `yaml:"max_concurrent"`
	// RateLimit bounds the calls per second, with bursts of Burst (zero:
	// the rate). Zero: no limit.
	RateLimit float64 `yaml:"rate_limit"`
	Burst     int     `yaml:"burst"`
}

// DefaultRouteTimeout bounds a call on a route without a timeout.
const DefaultRouteTimeout = 10 * time.Second

// withDefaults checks c and returns it with zero values filled in.
func (c Config) withDefaults() (Config, error) {
	if len(c.Codecs) == 0 {
		c.Codecs = []stream.Codec{meshrpc.Codec{}, http1.Codec{}}
	}
	codecIdx := map[string]int{}
	for i, cd := range c.Codecs {
		if _, dup := codecIdx[cd.Name()]; dup {
			return c, fmt.Errorf("two codecs named %q", cd.Name())
		}
		codecIdx[cd.Name()] = i
	}
	if c.Egress.Listen == "" {
		c.Egress.Listen = DefaultEgressListen
	}
	if c.Ingress.Listen == "" {
		c.Ingress.Listen = DefaultIngressListen
	}
	for _, l := range []struct{ name, addr string }{{"egress.listen", c.Egress.Listen}, {"ingress.listen", c.Ingress.Listen}} {
		if l.addr == Off {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			return c, fmt.Errorf("%s: %w", l.name, err)
		}
	}
	for name, addr := range c.Ingress.App {
		if _, ok := codecIdx[name]; !ok {
			return c, fmt.Errorf("ingress.app: unknown protocol %q (known: %s)", name, strings.Join(keys(codecIdx), ", "))
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return c, fmt.Errorf("ingress.app.%s: %w", name, err)
		}
	}
	if c.Ingress.Timeout < 0 || c.Ingress.Heartbeat.Interval < 0 || c.Ingress.Heartbeat.Timeout < 0 || c.IdleTimeout < 0 {
		return c, fmt.Errorf("negative duration in ingress or idle_timeout")
	}
	if c.Ingress.Timeout == 0 {
		c.Ingress.Timeout = 30 * time.Second
	}
	hb := &c.Ingress.Heartbeat
	if hb.Interval == 0 {
		hb.Interval = time.Second
	}
	if hb.Timeout == 0 {
		hb.Timeout = hb.Interval
	}
	if hb.UnhealthyThreshold <= 0 {
		hb.UnhealthyThreshold = 3
	}
	if hb.HealthyThreshold <= 0 {
		hb.HealthyThreshold = 1
	}
	if hb.HTTPPath == "" {
		hb.HTTPPath = "/"
	}
	if !strings.HasPrefix(hb.HTTPPath, "/") {
		return c, fmt.Errorf("ingress.heartbeat.http_path %q must start with /", hb.HTTPPath)
	}
	if c.MaxInflightPerConn <= 0 {
		c.MaxInflightPerConn = 1024
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.MaxConns == 0 {
		c.MaxConns = 1024
	}
	if c.MaxHeaderBytes < 0 || c.MaxBodyBytes < 0 || c.MaxConns < 0 {
		return c, fmt.Errorf("negative max_header_bytes, max_body_bytes or max_conns")
	}

	clusters := map[string]bool{}
	c.Clusters = append([]ClusterConfig(nil), c.Clusters...)
	for i := range c.Clusters {
		cl := &c.Clusters[i]
		if cl.Name == "" {
			return c, fmt.Errorf("clusters[%d]: no name", i)
		}
		if clusters[cl.Name] {
			return c, fmt.Errorf("clusters[%d]: cluster %q defined twice", i, cl.Name)
		}
		clusters[cl.Name] = true
		if len(cl.Hosts) == 0 {
			return c, fmt.Errorf("cluster %q: no hosts", cl.Name)
		}
		for j, h := range cl.Hosts {
			if _, _, err := net.SplitHostPort(h.Address); err != nil {
				return c, fmt.Errorf("cluster %q: hosts[%d]: %w", cl.Name, j, err)
			}
			if h.Weight < 0 {
				return c, fmt.Errorf("cluster %q: host %s: negative weight %d", cl.Name, h.Address, h.Weight)
			}
		}
		if _, err := stream.ParseLBPolicy(cl.LBPolicy); err != nil {
			return c, fmt.Errorf("cluster %q: %w", cl.Name, err)
		}
		if cl.ConnectTimeout < 0 {
			return c, fmt.Errorf("cluster %q: negative connect_timeout", cl.Name)
		}
	}

	names := map[string]bool{}
	c.Routes = append([]RouteConfig(nil), c.Routes...)
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.Name == "" {
			r.Name = r.Service + r.PathPrefix
			if r.Service != "" && r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
				r.Name = r.Service + "/" + r.PathPrefix
			}
			if r.Name == "" || names[r.Name] {
				r.Name = fmt.Sprintf("route-%d", i)
			}
		}
		if names[r.Name] {
			return c, fmt.Errorf("routes[%d]: route name %q used twice", i, r.Name)
		}
		names[r.Name] = true
		if r.Cluster == "" {
			return c, fmt.Errorf("route %q: no cluster", r.Name)
		}
		if !clusters[r.Cluster] {
			return c, fmt.Errorf("route %q: unknown cluster %q", r.Name, r.Cluster)
		}
		if r.Protocol != "" {
			if _, ok := codecIdx[r.Protocol]; !ok {
				return c, fmt.Errorf("route %q: unknown protocol %q (known: %s)", r.Name, r.Protocol, strings.Join(keys(codecIdx), ", "))
			}
		}
		if r.Timeout < 0 || r.MaxConcurrent < 0 || r.RateLimit < 0 || r.Burst < 0 {
			return c, fmt.Errorf("route %q: negative timeout or limit", r.Name)
		}
		if r.Timeout == 0 {
			r.Timeout = DefaultRouteTimeout
		}
	}
	return c, nil
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	// Small maps; sorted for stable messages.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}
