package client

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// Option configures a Client. Options are applied in order by Dial, which
// then checks the result once; a bad value makes Dial fail.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	app          string
	secret       string
	clientName   string
	maxInflight  int
	backoffMin   time.Duration
	backoffMax   time.Duration
	heartbeat    time.Duration
	maxFrameSize int
	logger       *slog.Logger
	dialer       func(ctx context.Context, addr string) (net.Conn, error)
	tracer       trace.TracerProvider // nil: the global one, at each call
}

func defaultConfig() config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return config{
		clientName:   host + "-" + strconv.Itoa(os.Getpid()),
		maxInflight:  1024,
		backoffMin:   50 * time.Millisecond,
		backoffMax:   5 * time.Second,
		heartbeat:    10 * time.Second,
		maxFrameSize: mesh.DefaultMaxFrameSize,
		logger:       slog.Default(),
		dialer:       dialAddr,
	}
}

// dialAddr is the default dialer: addr is a TCP host:port, or unix:/path
// for a sidecar listening on a unix-domain socket (msgmesh --listen
// unix:/path).
func dialAddr(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return d.DialContext(ctx, "unix", path)
	}
	return d.DialContext(ctx, "tcp", addr)
}

func (c *config) validate() error {
	switch {
	case c.app == "":
		return fmt.Errorf("%w: WithApp is required: the sidecar binds each connection to one registered app", errInvalidArg)
	case c.maxInflight <= 0 || int64(c.maxInflight) > math.MaxUint32:
		return fmt.Errorf("%w: WithMaxInflight(%d): must be between 1 and %d", errInvalidArg, c.maxInflight, uint32(math.MaxUint32))
	case c.backoffMin <= 0 || c.backoffMax < c.backoffMin:
		return fmt.Errorf("%w: WithReconnectBackoff(%s, %s): need 0 < min <= max", errInvalidArg, c.backoffMin, c.backoffMax)
	case c.heartbeat <= 0:
		return fmt.Errorf("%w: WithHeartbeat(%s): must be positive", errInvalidArg, c.heartbeat)
	case c.maxFrameSize < mesh.HeaderSize+64:
		return fmt.Errorf("%w: WithMaxFrameSize(%d): must be at least %d", errInvalidArg, c.maxFrameSize, mesh.HeaderSize+64)
	case c.logger == nil:
		return fmt.Errorf("%w: WithLogger(nil)", errInvalidArg)
	case c.dialer == nil:
		return fmt.Errorf("%w: WithDialer(nil)", errInvalidArg)
	}
	return nil
}

// WithApp sets the app name sent in HELLO. Required: the sidecar binds the
// connection to that app's registration, which must exist (else HELLO, and
// so Dial, fails with NOT_REGISTERED), and the connection may publish and
// subscribe only to what that registration lists (else FORBIDDEN or
// NOT_REGISTERED).
func WithApp(name string) Option { return optionFunc(func(c *config) { c.app = name }) }

// WithSecret sets the app's secret, sent in HELLO (docs/protocol.md §5.1):
// needed when the app's registration has one, which it has when the app
// registered with a secret or the sidecar requires secrets and issued one.
// A missing or wrong secret makes Dial fail with UNAUTHORIZED. Keep it out
// of command lines and logs. Default: none (a HELLO exactly as sidecars
// without secrets expect).
func WithSecret(secret string) Option { return optionFunc(func(c *config) { c.secret = secret }) }

// WithClientName sets the free-form instance name sent in HELLO, which the
// sidecar puts in its logs. Default: "hostname-pid".
func WithClientName(name string) Option {
	return optionFunc(func(c *config) { c.clientName = name })
}

// WithMaxInflight bounds the deliveries the sidecar may have unanswered on
// the connection (sent in HELLO; the sidecar uses the smaller of this and
// its own limit). It is also the capacity of each subscription's delivery
// queue. Default 1024.
func WithMaxInflight(n int) Option { return optionFunc(func(c *config) { c.maxInflight = n }) }

// WithReconnectBackoff sets the delays between reconnect attempts: the
// first waits about min, each next one doubles up to max, and every delay
// is randomised between half and all of its value (jitter) so that many
// clients do not redial in step. The delay starts again at min after a
// connection succeeded. Default 50ms..5s.
func WithReconnectBackoff(min, max time.Duration) Option {
	return optionFunc(func(c *config) { c.backoffMin, c.backoffMax = min, max })
}

// WithHeartbeat sets how often the Client sends a HEARTBEAT. When no frame
// at all arrives from the sidecar for three intervals the connection is
// considered dead, closed and redialled. It also bounds the HELLO/DECLARE
// exchange of a reconnect (three intervals). Default 10s.
func WithHeartbeat(interval time.Duration) Option {
	return optionFunc(func(c *config) { c.heartbeat = interval })
}

// WithMaxFrameSize bounds every frame the Client sends or accepts, header
// included. A Publish whose frame would be larger fails with an error that
// errors.Is mesh.ErrFrameTooLarge, before anything is sent. A larger frame
// from the sidecar is skipped and the connection goes on: the request it
// answers fails with an error that errors.Is mesh.ErrFrameTooLarge, and a
// delivery is answered ERROR FRAME_TOO_LARGE (the sidecar hands it back to
// the broker). Keep it at least the sidecar's frame limit. Default
// mesh.DefaultMaxFrameSize (4 MiB), the sidecar's default.
func WithMaxFrameSize(n int) Option { return optionFunc(func(c *config) { c.maxFrameSize = n }) }

// WithLogger sets the logger for connection events (lost, reconnected,
// declaration refused on reconnect) and for problems that have no caller
// to return to. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return optionFunc(func(c *config) { c.logger = l }) }

// WithDialer replaces how connections are opened (a proxy, a socket in a
// network namespace, fault injection in tests); it gets Dial's addr.
// Default: a net.Dialer dialling "tcp", or "unix" for an addr of the form
// unix:/path.
func WithDialer(dial func(ctx context.Context, addr string) (net.Conn, error)) Option {
	return optionFunc(func(c *config) { c.dialer = dial })
}

// WithTracerProvider sets the OpenTelemetry tracer provider of the
// Client's spans: a PRODUCER span "publish <topic>" per Publish and
// PublishAsync, whose W3C trace context goes in the message's headers
// (traceparent, tracestate; the caller's Message is not changed), and a
// CONSUMER span "process <topic>" per delivery, child of the trace context
// its headers carry (the producer's, continued by the sidecars): for a
// Subscribe handler it is in the handler's ctx and ends when the handler
// returns; for a pulled delivery it is in Delivery.Context and ends on Ack
// or Nack. Names and attributes: package observe/msgtrace.
//
// Default (or nil): the app's global provider (otel.GetTracerProvider),
// looked up at each call so it may be set after Dial. Until the app sets
// one, and with a noop.TracerProvider, tracing is off and costs nothing: no
// span, no header, no allocation; a valid span context already in a
// Publish's ctx is still written into the headers, so traces are not cut.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tracer = tp })
}

// SubOption configures one subscription.
type SubOption interface{ apply(*subConfig) }

type subOptionFunc func(*subConfig)

func (f subOptionFunc) apply(c *subConfig) { f(c) }

type subConfig struct {
	concurrency int
}

// WithConcurrency sets how many goroutines run the subscription's handler.
// Default 1, which handles messages one at a time in the order the sidecar
// delivers them (the broker's order); more goroutines give up that order.
func WithConcurrency(n int) SubOption {
	return subOptionFunc(func(c *subConfig) { c.concurrency = n })
}
