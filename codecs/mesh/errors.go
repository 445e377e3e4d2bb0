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

func (e *Error) Error() string { return e.Code.String() + ": " + e.Message }

// Name is the code's name in the spec's table (NOT_REGISTERED, ...).
func (e *Error) Name() string { return e.Code.String() }

// Retryable reports whether the same request may succeed if sent again
// later (Code.Retryable).
func (e *Error) Retryable() bool { return e.Code.Retryable() }

// Is reports whether target is an *Error with the same code, whatever its
// message: errors.Is(err, mesh.NotRegistered) (or
// errors.Is(err, &mesh.Error{Code: mesh.CodeNotRegistered})) tests an
// answer's code without caring what the peer said.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && t.Code == e.Code
}

// One sentinel per code, for errors.Is (franz-go's kerr is the model). A
// side returns (or wraps) a fresh *Error with its own message; these carry
// the spec's wording.
var (
	BadFrame       = &Error{Code: CodeBadFrame, Message: "a frame broke the spec"}
	FrameTooLarge  = &Error{Code: CodeFrameTooLarge, Message: "frame over the receiver's limit"}
	Unsupported    = &Error{Code: CodeUnsupported, Message: "unsupported protocol version or frame kind"}
	NotRegistered  = &Error{Code: CodeNotRegistered, Message: "group or topic not registered with this sidecar"}
	Invalid        = &Error{Code: CodeInvalid, Message: "invalid arguments"}
	BrokerError    = &Error{Code: CodeBrokerError, Message: "the broker refused or failed the operation"}
	Unavailable    = &Error{Code: CodeUnavailable, Message: "unavailable right now"}
	Timeout        = &Error{Code: CodeTimeout, Message: "the operation did not finish in time"}
	RateLimited    = &Error{Code: CodeRateLimited, Message: "over a rate limit"}
	SchemaInvalid  = &Error{Code: CodeSchemaInvalid, Message: "the body does not match the topic's schema"}
	ShuttingDown   = &Error{Code: CodeShuttingDown, Message: "the sidecar is stopping"}
	MessageTooBig  = &Error{Code: CodeMessageTooBig, Message: "message over the size limits"}
	Internal       = &Error{Code: CodeInternal, Message: "internal error"}
	NotDeclared    = &Error{Code: CodeNotDeclared, Message: "the connection has not declared the group"}
	UnknownRequest = &Error{Code: CodeUnknownRequest, Message: "no such outstanding request"}
	NoRoute        = &Error{Code: CodeNoRoute, Message: "no route for the request"}
	NoHealthyHost  = &Error{Code: CodeNoHealthyHost, Message: "no healthy host in the route's cluster"}
	UpstreamReset  = &Error{Code: CodeUpstreamReset, Message: "the upstream connection died before the answer"}
	StorageFull    = &Error{Code: CodeStorageFull, Message: "storage is full"}
	Forbidden      = &Error{Code: CodeForbidden, Message: "forbidden"}
	Unauthorized   = &Error{Code: CodeUnauthorized, Message: "the app's identity could not be verified"}
)

// Coded is an error that knows its wire code without being an *Error
// (flowctl's limit and breaker errors keep their details in their own
// types). CodeOf honours it.
type Coded interface {
	error
	Code() Code
}

// CarriedCode returns the code an error in err's chain carries itself: an
// *Error's, or a Coded error's. ok is false when none does (a local
// error, a context error, a broken connection).
func CarriedCode(err error) (c Code, ok bool) {
	var me *Error
	if errors.As(err, &me) {
		return me.Code, true
	}
	var ce Coded
	if errors.As(err, &ce) {
		return ce.Code(), true
	}
	return 0, false
}

// KnownError maps one error (matched with errors.Is) to its code.
type KnownError struct {
	Err  error
	Code Code
}

// Codes is a side's part of the error→code mapping: the errors it knows
// (its sentinels, its broker's) and the code for the rest. CodeOf is the
// mapping itself; every side (sidecar session and HTTP/gRPC APIs,
// forwarding, the RPC codec) calls it with its Codes. The zero value maps
// only carried codes and the codec's errors, and the rest to INTERNAL.
type Codes struct {
	// Known is tried in order, so put an error that may wrap another
	// (an unknown outcome wrapping an unavailable broker) first.
	Known []KnownError
	// Typed, if set, finds a code in an error type of the side's that
	// cannot import this package (the RPC filters' stream.Error).
	Typed func(err error) (Code, bool)
	// Default is the code of an error nothing else maps; zero: INTERNAL.
	Default Code
}

// CodeOf maps err to the code of its ERROR answer, in this order: the code
// err carries (CarriedCode), the side's Typed and Known errors, the codec's
// own errors (a frame too large, a bad frame, another version), then
// codes.Default. codes may be nil.
func CodeOf(err error, codes *Codes) Code {
	if c, ok := CarriedCode(err); ok {
		return c
	}
	if codes == nil {
		codes = &Codes{}
	}
	if codes.Typed != nil {
		if c, ok := codes.Typed(err); ok {
			return c
		}
	}
	for _, k := range codes.Known {
		if errors.Is(err, k.Err) {
			return k.Code
		}
	}
	if c, ok := ReadErrorCode(err); ok {
		return c
	}
	if codes.Default != 0 {
		return codes.Default
	}
	return CodeInternal
}

// ReadErrorCode returns the code answering a frame the codec refused (a
// Reader's or a payload decoder's error): FRAME_TOO_LARGE, UNSUPPORTED or
// BAD_FRAME. ok is false for any other error (the stream's own: EOF, a
// deadline, a reset), which no ERROR answers.
func ReadErrorCode(err error) (c Code, ok bool) {
	switch {
	case errors.Is(err, ErrFrameTooLarge):
		return CodeFrameTooLarge, true
	case errors.Is(err, ErrUnsupportedVersion):
		return CodeUnsupported, true
	case errors.Is(err, ErrMalformed):
		return CodeBadFrame, true
	}
	return 0, false
}
