package mesh

import (
	"errors"
	"fmt"
)

// Sentinel errors of the codec. Callers branch on them with errors.Is; the
// typed errors below carry the details.
var (
	// ErrFrameTooLarge: a frame's declared length exceeds the limit. The
	// reader refuses it before allocating, and skips its payload on the
	// next read (the rest of the header was valid).
	ErrFrameTooLarge = errors.New("mesh: frame too large")
	// ErrMalformed: a header or payload does not follow the spec.
	ErrMalformed = errors.New("mesh: malformed frame")
	// ErrUnsupportedVersion: the peer speaks another protocol version.
	ErrUnsupportedVersion = errors.New("mesh: unsupported protocol version")
)

// FrameSizeError reports a frame over the size limit.
type FrameSizeError struct {
	Size int // the frame's size, header included
	Max  int // the limit in force
}

func (e *FrameSizeError) Error() string {
	return fmt.Sprintf("mesh: frame of %d bytes exceeds the limit of %d bytes", e.Size, e.Max)
}

func (e *FrameSizeError) Unwrap() error { return ErrFrameTooLarge }

// ProtocolError reports a frame that breaks the spec: a bad header, or a
// payload that does not decode as its kind says.
type ProtocolError struct {
	Err    error  // ErrMalformed or ErrUnsupportedVersion
	Kind   Kind   // the frame kind, when known
	Field  string // the payload field being decoded, when known
	Reason string
}

func (e *ProtocolError) Error() string {
	msg := e.Err.Error()
	if e.Kind != 0 {
		msg += " " + e.Kind.String()
	}
	if e.Field != "" {
		msg += " field " + e.Field
	}
	return msg + ": " + e.Reason
}

func (e *ProtocolError) Unwrap() error { return e.Err }

// Code is a typed error code carried in ERROR frames. The table is the one
// place wire codes are defined; docs/protocol.md lists the same table.
// Values are part of the wire format: never renumber.
type Code uint16

const (
	CodeBadFrame       Code = 1  // a frame broke the spec; the sender fixes its encoder
	CodeFrameTooLarge  Code = 2  // frame over the receiver's limit; its payload was skipped, the connection goes on
	CodeUnsupported    Code = 3  // unsupported protocol version or frame kind here
	CodeNotRegistered  Code = 4  // group or topic not registered with this sidecar
	CodeInvalid        Code = 5  // a well-formed request with invalid arguments
	CodeBrokerError    Code = 6  // the broker refused or failed the operation
	CodeUnavailable    Code = 7  // the broker (or the sidecar) is unavailable right now; retry
	CodeTimeout        Code = 8  // the operation did not finish in time; outcome unknown for publishes
	CodeRateLimited    Code = 9  // over a configured rate limit
	CodeSchemaInvalid  Code = 10 // the body does not match the topic's schema
	CodeShuttingDown   Code = 11 // the sidecar is stopping; reconnect and retry
	CodeMessageTooBig  Code = 12 // message body, or key and headers, over the sidecar's size limits
	CodeInternal       Code = 13 // a bug or unexpected failure in the sidecar
	CodeNotDeclared    Code = 14 // the connection has not declared the group it pulls from
	CodeUnknownRequest Code = 15 // an answer names a request id that is not outstanding
	CodeNoRoute        Code = 16 // RPC: no route for the request's service (or path)
	CodeNoHealthyHost  Code = 17 // RPC: every host of the route's cluster refused or is down
	CodeUpstreamReset  Code = 18 // RPC: the upstream connection died before the answer came
	CodeStorageFull    Code = 19 // the broker's (or the sidecar's) storage is full; nothing was stored
	CodeForbidden      Code = 20 // the app may not use this topic, group or listener
	CodeUnauthorized   Code = 21 // the app's identity could not be verified (missing or wrong secret)
	codeMax                 = CodeUnauthorized
)

var codeNames = [...]string{
	CodeBadFrame: "BAD_FRAME", CodeFrameTooLarge: "FRAME_TOO_LARGE",
	CodeUnsupported: "UNSUPPORTED", CodeNotRegistered: "NOT_REGISTERED",
	CodeInvalid: "INVALID", CodeBrokerError: "BROKER_ERROR",
	CodeUnavailable: "UNAVAILABLE", CodeTimeout: "TIMEOUT",
	CodeRateLimited: "RATE_LIMITED", CodeSchemaInvalid: "SCHEMA_INVALID",
	CodeShuttingDown: "SHUTTING_DOWN", CodeMessageTooBig: "MESSAGE_TOO_BIG",
	CodeInternal: "INTERNAL", CodeNotDeclared: "NOT_DECLARED",
	CodeUnknownRequest: "UNKNOWN_REQUEST", CodeNoRoute: "NO_ROUTE",
	CodeNoHealthyHost: "NO_HEALTHY_HOST", CodeUpstreamReset: "UPSTREAM_RESET",
	CodeStorageFull: "STORAGE_FULL", CodeForbidden: "FORBIDDEN",
	CodeUnauthorized: "UNAUTHORIZED",
}

func (c Code) String() string {
	if c > 0 && c <= codeMax {
		return codeNames[c]
	}
	return fmt.Sprintf("CODE(%d)", uint16(c))
}

// Retryable reports whether the same request may succeed if sent again later.
func (c Code) Retryable() bool {
	switch c {
	case CodeUnavailable, CodeTimeout, CodeRateLimited, CodeShuttingDown,
		CodeNoHealthyHost, CodeUpstreamReset, CodeStorageFull:
		return true
	}
	return false
}

// CodeOf maps a codec error to the code its ERROR answer carries.
func CodeOf(err error) Code {
	switch {
	case errors.Is(err, ErrFrameTooLarge):
		return CodeFrameTooLarge
	case errors.Is(err, ErrUnsupportedVersion):
		return CodeUnsupported
	case errors.Is(err, ErrMalformed):
		return CodeBadFrame
	}
	return CodeInternal
}
