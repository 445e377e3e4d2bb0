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

// codeOf maps an error to the code of its ERROR answer.
func codeOf(err error) mesh.Code {
	var coded interface{ Code() mesh.Code } // flowctl's limit and breaker errors
	if errors.As(err, &coded) {
		return coded.Code()
	}
	var fe *stream.Error // refused by a pipeline stage (a plugin may answer with one)
	if errors.As(err, &fe) {
		return meshrpc.CodeOf(fe.Code)
	}
	switch {
	case errors.Is(err, schema.ErrSchemaInvalid):
		return mesh.CodeSchemaInvalid
	case errors.Is(err, ErrNotRegistered):
		return mesh.CodeNotRegistered
	case errors.Is(err, ErrNotDeclared):
		return mesh.CodeNotDeclared
	case errors.Is(err, ErrUnknownDelivery):
		return mesh.CodeUnknownRequest
	case errors.Is(err, ErrForbidden):
		return mesh.CodeForbidden
	case errors.Is(err, ErrUnauthorized):
		return mesh.CodeUnauthorized
	case errors.Is(err, ErrMessageTooBig), errors.Is(err, broker.ErrTooLarge):
		return mesh.CodeMessageTooBig
	case errors.Is(err, ErrShuttingDown):
		return mesh.CodeShuttingDown
	case errors.Is(err, ErrInvalid), errors.Is(err, registry.ErrInvalid), errors.Is(err, broker.ErrInvalidHeader),
		errors.Is(err, broker.ErrNullBody), errors.Is(err, broker.ErrEmptyKey):
		return mesh.CodeInvalid
	case errors.Is(err, errProtocol):
		return mesh.CodeUnsupported
	case errors.Is(err, broker.ErrOutcomeUnknown): // before ErrUnavailable: it may wrap one
		return mesh.CodeTimeout
	case errors.Is(err, broker.ErrStorageFull), errors.Is(err, registry.ErrStorageFull):
		return mesh.CodeStorageFull
	case errors.Is(err, broker.ErrUnavailable):
		return mesh.CodeUnavailable
	case errors.Is(err, broker.ErrRejected):
		return mesh.CodeBrokerError
	case errors.Is(err, context.DeadlineExceeded):
		return mesh.CodeTimeout
	case errors.Is(err, mesh.ErrFrameTooLarge), errors.Is(err, mesh.ErrMalformed), errors.Is(err, mesh.ErrUnsupportedVersion):
		return mesh.CodeOf(err)
	}
	return mesh.CodeBrokerError
}

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
