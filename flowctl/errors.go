package flowctl

import (
	"errors"
	"fmt"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// Errors callers branch on with errors.Is. The errors returned carry
// details: *LimitError for the first two, *BreakerOpenError for the third.
// Each has a Code method giving its wire code and a Reason method giving
// its metrics label (observe.ReasonOf).
var (
	// ErrRateLimited: a publish over its topic's rate (wire code
	// RATE_LIMITED; retryable), or a wait for a rate that the caller's
	// deadline could not cover.
	ErrRateLimited = errors.New("flowctl: rate limited")
	// ErrTooLarge: a message over its topic's size limit (wire code
	// MESSAGE_TOO_BIG).
	ErrTooLarge = errors.New("flowctl: message too large")
	// ErrBreakerOpen: the circuit breaker toward the topic's broker cluster
	// is open (wire code UNAVAILABLE; retryable). It also matches
	// broker.ErrUnavailable.
	ErrBreakerOpen = errors.New("flowctl: circuit breaker open")
	// ErrInvalidConfig wraps every problem Apply and New find in a Config.
	ErrInvalidConfig = errors.New("flowctl: invalid config")
)

// LimitKind says which limit a LimitError is about.
type LimitKind uint8

const (
	// KindRate: a publish or delivery rate (messages per second).
	KindRate LimitKind = iota + 1
	// KindSize: a message size (bytes).
	KindSize
)

func (k LimitKind) String() string {
	switch k {
	case KindRate:
		return "rate"
	case KindSize:
		return "size"
	}
	return "unknown"
}

// LimitError is a request refused by a rate or size limit.
type LimitError struct {
	Kind  LimitKind
	Topic string
	// Group is set when the limit is a consumer group's delivery rate.
	Group string
	// Limit is the limit that was hit: messages per second for KindRate,
	// bytes for KindSize.
	Limit float64
	// Size is the message's size in bytes (KindSize).
	Size int
	// RetryAfter is, for KindRate, about how long until the limit would
	// have let the request through.
	RetryAfter time.Duration
}

func (e *LimitError) Error() string {
	switch {
	case e.Kind == KindSize:
		return fmt.Sprintf("flowctl: message of %d bytes exceeds the limit of %d bytes for topic %q", e.Size, int64(e.Limit), e.Topic)
	case e.Group != "":
		return fmt.Sprintf("flowctl: group %q on topic %q is over its delivery rate of %g messages/s (retry in %s)", e.Group, e.Topic, e.Limit, e.RetryAfter)
	}
	return fmt.Sprintf("flowctl: topic %q is over its publish rate of %g messages/s (retry in %s)", e.Topic, e.Limit, e.RetryAfter)
}

// Unwrap returns ErrRateLimited or ErrTooLarge.
func (e *LimitError) Unwrap() error {
	if e.Kind == KindSize {
		return ErrTooLarge
	}
	return ErrRateLimited
}

// Code is the wire code to answer with: RATE_LIMITED or MESSAGE_TOO_BIG.
func (e *LimitError) Code() mesh.Code {
	if e.Kind == KindSize {
		return mesh.CodeMessageTooBig
	}
	return mesh.CodeRateLimited
}

// Reason is the metrics label: "rate_limited" or "message_too_big".
func (e *LimitError) Reason() string {
	if e.Kind == KindSize {
		return "message_too_big"
	}
	return "rate_limited"
}

// BreakerOpenError is a request refused because the circuit breaker toward
// a broker cluster is open.
type BreakerOpenError struct {
	Cluster string
	// Until is when the breaker lets a probe through (half-open); a request
	// after it may be that probe.
	Until time.Time
	// Failures is how many consecutive failures opened it.
	Failures int
	// Probing: the breaker is half-open and its probes are out.
	Probing bool
}

func (e *BreakerOpenError) Error() string {
	if e.Probing {
		return fmt.Sprintf("flowctl: circuit breaker for broker cluster %q is half-open and probing; failing fast until a probe succeeds (next probe round at %s)",
			e.Cluster, e.Until.Format(time.RFC3339Nano))
	}
	return fmt.Sprintf("flowctl: circuit breaker for broker cluster %q is open after %d consecutive failures; failing fast until %s",
		e.Cluster, e.Failures, e.Until.Format(time.RFC3339Nano))
}

// Is matches ErrBreakerOpen and broker.ErrUnavailable.
func (e *BreakerOpenError) Is(target error) bool {
	return target == ErrBreakerOpen || target == broker.ErrUnavailable
}

// Code is the wire code to answer with: UNAVAILABLE.
func (e *BreakerOpenError) Code() mesh.Code { return mesh.CodeUnavailable }

// Reason is the metrics label: "breaker_open".
func (e *BreakerOpenError) Reason() string { return "breaker_open" }
