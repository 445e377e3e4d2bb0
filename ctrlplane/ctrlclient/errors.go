package ctrlclient

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
)

// Sentinel errors an *APIError unwraps to, by its code. Callers branch on
// them with errors.Is.
var (
	// ErrInvalid: the request was wrong (400 INVALID, 413 TOO_LARGE, and
	// the schema registry's 422 for a malformed schema); the message says
	// which field and why.
	ErrInvalid = errors.New("ctrlclient: invalid request")
	// ErrUnauthorized: no credential, or one the control plane does not
	// know (401): check --token or $MSGMESH_CTRLPLANE_TOKEN.
	ErrUnauthorized = errors.New("ctrlclient: unauthorized")
	// ErrForbidden: an app credential used for anything but reading its
	// own app's config (403).
	ErrForbidden = errors.New("ctrlclient: forbidden")
	// ErrNotFound: no such app, instance or topology (404).
	ErrNotFound = errors.New("ctrlclient: not found")
	// ErrConflict: the app exists already, or writes kept racing, or the
	// schema registry refused an incompatible schema (409).
	ErrConflict = errors.New("ctrlclient: conflict")
	// ErrUnavailable: the control plane is shutting down or cannot reach
	// its store (503); retry, another replica may answer.
	ErrUnavailable = errors.New("ctrlclient: control plane unavailable")
)

// APIError is an error answer of the control plane.
type APIError struct {
	Status int // the HTTP status
	// Code is the API code (api.CodeNotFound, ...), or the schema
	// registry's error_code in decimal ("40401", "409"); empty if the body
	// was not an error body.
	Code    string
	Message string // the server's message, or the body's text
}

func (e *APIError) Error() string {
	status := fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status))
	switch {
	case e.Message != "" && e.Code != "":
		return fmt.Sprintf("%s: %s (%s)", status, e.Message, e.Code)
	case e.Message != "":
		return status + ": " + e.Message
	}
	return status
}

// Unwrap returns the sentinel error of the code (or status), nil if none.
func (e *APIError) Unwrap() error {
	switch e.Code {
	case api.CodeInvalid, api.CodeTooLarge:
		return ErrInvalid
	case api.CodeUnauthorized:
		return ErrUnauthorized
	case api.CodeForbidden:
		return ErrForbidden
	case api.CodeNotFound:
		return ErrNotFound
	case api.CodeConflict:
		return ErrConflict
	case api.CodeShuttingDown, api.CodeUnavailable:
		return ErrUnavailable
	}
	switch e.Status {
	case http.StatusBadRequest:
		return ErrInvalid
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusConflict:
		return ErrConflict // the schema registry: an incompatible schema
	case http.StatusUnprocessableEntity:
		return ErrInvalid // the schema registry: a schema, version or level it cannot take
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return ErrUnavailable
	}
	return nil
}
