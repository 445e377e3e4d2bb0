package ctrlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/topology"
)

// Sentinel errors. The HTTP API answers each with the status and code in
// errorCode; callers of the Go API branch on them with errors.Is.
var (
	// ErrNotFound: no such app, instance or topology.
	ErrNotFound = errors.New("not found")
	// ErrExists: an app of that name exists already.
	ErrExists = errors.New("already exists")
	// ErrUnauthorized: no credential, or one the control plane does not
	// know (a wrong operator token, a revoked or expired app credential).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: a valid app credential used for something other than
	// reading its own app's config.
	ErrForbidden = errors.New("forbidden")
	// ErrShuttingDown: this control plane is stopping.
	ErrShuttingDown = errors.New("the control plane is shutting down")
	// ErrBusy: a read-modify-write lost the race to other writers too
	// many times in a row.
	ErrBusy = errors.New("too many concurrent writes")
	// ErrTooLarge: a request body over api.MaxBodySize.
	ErrTooLarge = errors.New("request body too large")
)

// kindError is an error of one of the kinds above whose message is only
// its own text: the HTTP API shows it as the message, with the kind as the
// code.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }

// Unwrap returns the kind (ErrNotFound, ...).
func (e *kindError) Unwrap() error { return e.kind }

// errorf returns an error of the given kind with a formatted message.
func errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// errorCode is the one table from errors to HTTP statuses and API codes.
func errorCode(err error) (status int, code string) {
	switch {
	case errors.Is(err, api.ErrInvalid), errors.Is(err, topology.ErrInvalid):
		return http.StatusBadRequest, api.CodeInvalid
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized, api.CodeUnauthorized
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, api.CodeForbidden
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, api.CodeNotFound
	case errors.Is(err, ErrExists), errors.Is(err, ErrBusy):
		return http.StatusConflict, api.CodeConflict
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, api.CodeTooLarge
	case errors.Is(err, ErrShuttingDown):
		return http.StatusServiceUnavailable, api.CodeShuttingDown
	case errors.Is(err, store.ErrClosed), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, api.CodeUnavailable
	}
	return http.StatusInternalServerError, api.CodeInternal
}
