package msgmesh

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// Capacity limits: what one sidecar serves at most, so that a flood of
// connections or registrations (a bug or a hostile local process) degrades
// into clear refusals instead of taking every file descriptor and all the
// memory (docs/config.md, "Capacity limits").

// Defaults of the capacity limits in Config.
const (
	// DefaultMaxConns is Config.MaxConns when zero. An idle app connection
	// costs about 10 KiB in the sidecar (docs/benchmarks.md).
	DefaultMaxConns = 1024
	// DefaultHelloTimeout is Config.HelloTimeout when zero.
	DefaultHelloTimeout = 5 * time.Second
	// DefaultMaxRegistrations is Config.MaxRegistrations when zero.
	DefaultMaxRegistrations = 256
	// DefaultMaxUpstreams is Config.MaxUpstreams when zero. An upstream
	// consumer costs tens of KiB and a few goroutines in the sidecar, more
	// in the broker (docs/benchmarks.md).
	DefaultMaxUpstreams = 512
)

// DefaultHTTPLimits are the HTTP API's limits where Config.HTTP has zeros.
// The write timeout leaves room for a publish that waits the whole
// PublishTimeout (10s by default) for the broker.
func DefaultHTTPLimits() core.HTTPLimits {
	return core.HTTPLimits{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    core.DefaultMaxHeaderBytes,
		MaxConns:          256,
	}
}

// otherFiles is what the sidecar keeps free of its open-file limit for
// everything but app and HTTP connections: broker connections, the stores,
// the embedded broker's files, the forwarding and RPC listeners.
const otherFiles = 256

// nearFraction of a limit is where the sidecar starts warning.
const nearFraction = 0.8

// ErrLimit: a capacity limit of the sidecar is reached. The error is a
// *LimitError that names the limit and how to raise it.
var ErrLimit = errors.New("msgmesh: limit reached")

// LimitError refuses a request that would take the sidecar past one of
// its capacity limits. The HTTP API answers it 409 LIMIT_EXCEEDED: the
// request conflicts with what the sidecar holds, and repeating it changes
// nothing until registrations are removed or the limit is raised.
type LimitError struct {
	What string // what is counted: "registrations", "upstream consumers"
	Max  int    // the limit
	Want int    // what the request would have made the count
	Knob string // the setting that raises it: "max_registrations (--max-registrations)"
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("msgmesh: limit reached: the sidecar allows %d %s and this registration would make %d; remove registrations no longer used, or raise %s",
		e.Max, e.What, e.Want, e.Knob)
}

// Unwrap makes errors.Is(err, ErrLimit) hold.
func (e *LimitError) Unwrap() error { return ErrLimit }

// Knobs of the limits, as a LimitError and the logs name them.
const (
	knobRegistrations = "max_registrations (--max-registrations)"
	knobUpstreams     = "max_upstreams (--max-upstreams)"
	knobConns         = "max_conns (--max-conns)"
)

// capacityDefaults checks the capacity fields, fills the HTTP limits and
// fits MaxConns to the open-file limit; setDefaults filled the rest and
// c.Logger.
func (c *Config) capacityDefaults() error {
	c.HTTP = c.HTTP.Or(DefaultHTTPLimits())
	switch {
	case c.MaxConns < 0, c.MaxRegistrations < 0, c.MaxUpstreams < 0:
		return fmt.Errorf("msgmesh: config: negative MaxConns, MaxRegistrations or MaxUpstreams")
	case c.HelloTimeout < 0:
		return fmt.Errorf("msgmesh: config: negative HelloTimeout")
	}
	if err := c.HTTP.Validate(); err != nil {
		return fmt.Errorf("msgmesh: config: %w", err)
	}
	if c.HTTP.WriteTimeout <= c.PublishTimeout {
		return fmt.Errorf("msgmesh: config: the HTTP write timeout (%s) must exceed the publish timeout (%s), or HTTP publishes lose their answer", c.HTTP.WriteTimeout, c.PublishTimeout)
	}
	reserve := c.HTTP.MaxConns + core.DefaultMaxRefusing + otherFiles
	if n, limit, lowered := core.FitFiles(c.MaxConns, reserve); lowered {
		c.Logger.Warn("max_conns lowered to fit the open-file limit",
			"max_conns", n, "configured", c.MaxConns, "open_file_limit", limit, "kept_for_other_files", reserve,
			"fix", "raise the limit (ulimit -n, systemd LimitNOFILE=) to serve more app connections")
		c.MaxConns = n
	}
	return nil
}

// refuseConn is the mesh listener's core.ConnLimit.Refuse: it reads the
// app's first frame (its HELLO) and answers it ERROR UNAVAILABLE naming
// the limit, so the SDK reports why and reconnects later; an app that
// sends nothing in time gets the ERROR as a connection-level one (id 0).
// core.Server closes the connection after it.
func (sc *Sidecar) refuseConn(conn net.Conn) {
	var id uint64
	// A HELLO is small: a larger first frame is no HELLO.
	if f, err := mesh.NewReader(conn, mesh.HeaderSize+4<<10).ReadFrame(); err == nil && !f.IsResponse() {
		id = f.ID
	}
	// The read may have used up the deadline core set; the answer gets a
	// short one of its own.
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	e := mesh.Error{Code: mesh.CodeUnavailable, Message: fmt.Sprintf(
		"msgmesh: connection limit reached: the sidecar serves at most %d app connections at once (%s); retry later", sc.cfg.MaxConns, knobConns)}
	if b, err := mesh.AppendFrame(nil, 0, mesh.KindError, mesh.FlagResponse, id, &e); err == nil {
		_, _ = conn.Write(b)
	}
}

// checkCapacity refuses reg if storing it in place of its app's among regs
// (every stored registration) would take the registrations or the
// upstream consumers past their limits. A change that does not add to a
// count already at or past its limit passes, so an app can always keep or
// shrink its registration after the limits were lowered.
func (sc *Sidecar) checkCapacity(reg registry.Registration, regs []registry.Registration) error {
	apps, replaces := len(regs), false
	had, will := map[upstreamKey]bool{}, map[upstreamKey]bool{}
	for _, r := range regs {
		for _, b := range r.Consume {
			had[sc.upstreamKeyOf(b)] = true
		}
		if r.App == reg.App {
			replaces = true
			continue
		}
		for _, b := range r.Consume {
			will[sc.upstreamKeyOf(b)] = true
		}
	}
	for _, b := range reg.Consume {
		will[sc.upstreamKeyOf(b)] = true
	}
	if !replaces {
		if max := sc.cfg.MaxRegistrations; apps+1 > max {
			return &LimitError{What: "registrations", Max: max, Want: apps + 1, Knob: knobRegistrations}
		}
	}
	if max := sc.cfg.MaxUpstreams; len(will) > max && len(will) > len(had) {
		return &LimitError{What: "upstream consumers", Max: max, Want: len(will), Knob: knobUpstreams}
	}
	return nil
}

func (sc *Sidecar) upstreamKeyOf(b registry.Binding) upstreamKey {
	return upstreamKey{cluster: sc.clusterOf(b.Topic), group: b.Group, topic: b.Topic, brokerGroup: b.BrokerGroup}
}

// capacityLog warns when the registrations or upstream consumers near or
// pass their limits, once per crossing rather than on every change.
// Guarded by Sidecar.reconcileMu.
type capacityLog struct {
	regs, ups level
}

type level int

const (
	levelBelow level = iota
	levelNear
	levelOver
)

// update logs the counts' levels where they changed. reconcileMu held.
func (l *capacityLog) update(log *slog.Logger, cfg *Config, regs, ups int) {
	l.regs.update(log, "registrations", regs, cfg.MaxRegistrations, knobRegistrations)
	l.ups.update(log, "upstream consumers", ups, cfg.MaxUpstreams, knobUpstreams)
}

func (l *level) update(log *slog.Logger, what string, n, max int, knob string) {
	next := levelBelow
	switch {
	case n > max:
		next = levelOver
	case float64(n) >= nearFraction*float64(max):
		next = levelNear
	}
	if next == *l {
		return
	}
	*l = next
	switch next {
	case levelOver:
		// Only after the limit was lowered below what is stored: nothing is
		// dropped, new registrations that add more are refused.
		log.Warn(what+" over the limit; registrations that add more are refused", "count", n, "max", max, "limit", knob)
	case levelNear:
		log.Warn(what+" near the limit", "count", n, "max", max, "limit", knob)
	}
}
