package stream

import (
	"errors"
	"fmt"
)

// ErrorCode is a codec-neutral reason why the proxy answered a request
// itself instead of forwarding the upstream's answer. Each codec maps it
// onto its protocol: the mesh codec onto an ERROR frame code
// (codecs/mesh/errors.go), the HTTP/1.1 codec onto a status and a JSON
// body. Status gives the HTTP status every codec reports in
// Message.Status and in metrics.
type ErrorCode uint8

const (
	ErrBadRequest     ErrorCode = iota + 1 // malformed request: mesh BAD_FRAME, HTTP 400
	ErrTooLarge                            // body or frame over the limit: mesh FRAME_TOO_LARGE, HTTP 413
	ErrHeaderTooLarge                      // headers over the limit: mesh FRAME_TOO_LARGE, HTTP 431
	ErrUnsupported                         // a request kind or feature the proxy does not handle: mesh UNSUPPORTED, HTTP 501
	ErrNoRoute                             // no route matches: mesh NO_ROUTE, HTTP 404
	ErrNoHealthyHost                       // every host refused or is down: mesh NO_HEALTHY_HOST, HTTP 503
	ErrUpstreamReset                       // the upstream connection died before the answer: mesh UPSTREAM_RESET, HTTP 502
	ErrTimeout                             // no answer within the route's timeout: mesh TIMEOUT, HTTP 504
	ErrUnavailable                         // the local app is unhealthy (ingress): mesh UNAVAILABLE, HTTP 503
	ErrRateLimited                         // over a route's rate or concurrency limit: mesh RATE_LIMITED, HTTP 429
	ErrShuttingDown                        // the proxy is stopping: mesh SHUTTING_DOWN, HTTP 503
	ErrInternal                            // a bug: mesh INTERNAL, HTTP 500
	errCodeMax        = ErrInternal
)

var errCodeNames = [...]string{
	ErrBadRequest: "BAD_REQUEST", ErrTooLarge: "TOO_LARGE", ErrHeaderTooLarge: "HEADER_TOO_LARGE",
	ErrUnsupported: "UNSUPPORTED", ErrNoRoute: "NO_ROUTE", ErrNoHealthyHost: "NO_HEALTHY_HOST",
	ErrUpstreamReset: "UPSTREAM_RESET", ErrTimeout: "TIMEOUT", ErrUnavailable: "UNAVAILABLE",
	ErrRateLimited: "RATE_LIMITED", ErrShuttingDown: "SHUTTING_DOWN", ErrInternal: "INTERNAL",
}

var errCodeStatus = [...]int{
	ErrBadRequest: 400, ErrTooLarge: 413, ErrHeaderTooLarge: 431, ErrUnsupported: 501,
	ErrNoRoute: 404, ErrNoHealthyHost: 503, ErrUpstreamReset: 502, ErrTimeout: 504,
	ErrUnavailable: 503, ErrRateLimited: 429, ErrShuttingDown: 503, ErrInternal: 500,
}

func (c ErrorCode) String() string {
	if c > 0 && c <= errCodeMax {
		return errCodeNames[c]
	}
	return fmt.Sprintf("ERROR_CODE(%d)", uint8(c))
}

// Status is the HTTP status of the code.
func (c ErrorCode) Status() int {
	if c > 0 && c <= errCodeMax {
		return errCodeStatus[c]
	}
	return 500
}

// Error is a typed error answered by the proxy on behalf of an upstream.
// It is what the stream layer returns (Cluster.RoundTrip), what a filter
// returns to refuse a request, and what a codec refuses a request with.
type Error struct {
	Code ErrorCode
	// Status overrides Code.Status for HTTP when a codec has a more
	// precise one (505 for an HTTP version, 417 for an expectation); zero
	// means Code.Status().
	Status int
	Msg    string
	Err    error // the cause, if any
}

// Errorf returns an *Error with a formatted message; a %w verb sets Err.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

func (e *Error) Error() string { return e.Code.String() + ": " + e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// HTTPStatus is the status an HTTP answer carries.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	return e.Code.Status()
}

// AsError returns err as an *Error: itself if it is one (or wraps one),
// otherwise an ErrInternal wrapping it.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: ErrInternal, Msg: err.Error(), Err: err}
}
