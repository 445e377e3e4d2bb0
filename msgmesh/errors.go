package msgmesh

import (
	"context"
	"errors"
	"net/http"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/codecs/meshrpc"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
	"github.com/msgmesh/msgmesh/schema"
)

// Errors the sidecar answers requests with. Each maps to one wire code
// (codeOf) and one HTTP status (httpStatus); callers of the SDK see the code.
var (
	// ErrNotRegistered: the topic or (group, topic) is not in any registration.
	ErrNotRegistered = errors.New("msgmesh: not registered")
	// ErrNotDeclared: a PULL names a (group, topic) the connection did not
	// declare in pull mode.
	ErrNotDeclared = errors.New("msgmesh: not declared on this connection")
	// ErrMessageTooBig: a body over the limit of its topic's cluster
	// (Sidecar.MaxBody), or a key and headers over Config.MaxHeaderBytes.
	ErrMessageTooBig = errors.New("msgmesh: message too big")
	// ErrShuttingDown: the sidecar is stopping and takes no new work.
	ErrShuttingDown = errors.New("msgmesh: shutting down")
	// ErrInvalid: a well-formed request with invalid arguments.
	ErrInvalid = errors.New("msgmesh: invalid request")
	// ErrForbidden: the app a connection or request acts as may not use
	// that topic or consumer group: it is in another app's registration
	// (or, for a sibling, not in its certificate's app's).
	ErrForbidden = errors.New("msgmesh: forbidden")
	// ErrUnauthorized: the app's secret is missing or wrong.
	ErrUnauthorized = errors.New("msgmesh: unauthorized")
	// errProtocol: a request out of order (no HELLO first, a kind the app
	// may not send).
	errProtocol = errors.New("msgmesh: protocol violation")
)

// sidecarCodes is the sidecar's part of the one error→code mapping
// (mesh.CodeOf): its own sentinels and those of the broker contract, the
// schema checks and the registry. Order matters where one may wrap another.
var sidecarCodes = mesh.Codes{
	Typed: func(err error) (mesh.Code, bool) {
		var fe *stream.Error // refused by a pipeline stage (a plugin may answer with one)
		if errors.As(err, &fe) {
			return meshrpc.CodeOf(fe.Code), true
		}
		return 0, false
	},
	Known: []mesh.KnownError{
		{Err: schema.ErrSchemaInvalid, Code: mesh.CodeSchemaInvalid},
		{Err: ErrNotRegistered, Code: mesh.CodeNotRegistered},
		{Err: ErrNotDeclared, Code: mesh.CodeNotDeclared},
		{Err: ErrUnknownDelivery, Code: mesh.CodeUnknownRequest},
		{Err: ErrForbidden, Code: mesh.CodeForbidden},
		{Err: ErrUnauthorized, Code: mesh.CodeUnauthorized},
		{Err: ErrMessageTooBig, Code: mesh.CodeMessageTooBig},
		{Err: broker.ErrTooLarge, Code: mesh.CodeMessageTooBig},
		{Err: ErrShuttingDown, Code: mesh.CodeShuttingDown},
		{Err: ErrInvalid, Code: mesh.CodeInvalid},
		{Err: registry.ErrInvalid, Code: mesh.CodeInvalid},
		{Err: broker.ErrInvalidHeader, Code: mesh.CodeInvalid},
		{Err: broker.ErrNullBody, Code: mesh.CodeInvalid},
		{Err: broker.ErrEmptyKey, Code: mesh.CodeInvalid},
		{Err: errProtocol, Code: mesh.CodeUnsupported},
		{Err: broker.ErrOutcomeUnknown, Code: mesh.CodeTimeout}, // before ErrUnavailable: it may wrap one
		{Err: broker.ErrStorageFull, Code: mesh.CodeStorageFull},
		{Err: registry.ErrStorageFull, Code: mesh.CodeStorageFull},
		{Err: broker.ErrUnavailable, Code: mesh.CodeUnavailable},
		{Err: broker.ErrRejected, Code: mesh.CodeBrokerError},
		{Err: context.DeadlineExceeded, Code: mesh.CodeTimeout},
	},
	Default: mesh.CodeBrokerError,
}

// codeOf maps an error to the code of its ERROR answer (and, through
// httpStatus, of its HTTP status).
func codeOf(err error) mesh.Code { return mesh.CodeOf(err, &sidecarCodes) }

// httpStatus maps a wire code to the HTTP API's status.
func httpStatus(c mesh.Code) int {
	switch c {
	case mesh.CodeNotRegistered, mesh.CodeNotDeclared, mesh.CodeUnknownRequest:
		return http.StatusNotFound
	case mesh.CodeInvalid, mesh.CodeBadFrame, mesh.CodeSchemaInvalid:
		return http.StatusBadRequest
	case mesh.CodeMessageTooBig, mesh.CodeFrameTooLarge:
		return http.StatusRequestEntityTooLarge
	case mesh.CodeRateLimited:
		return http.StatusTooManyRequests
	case mesh.CodeUnavailable, mesh.CodeShuttingDown:
		return http.StatusServiceUnavailable
	case mesh.CodeTimeout:
		return http.StatusGatewayTimeout
	case mesh.CodeBrokerError:
		return http.StatusBadGateway
	case mesh.CodeForbidden:
		return http.StatusForbidden
	case mesh.CodeUnauthorized:
		return http.StatusUnauthorized
	case mesh.CodeStorageFull:
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}
