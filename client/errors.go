package client

import (
	"errors"

	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// Errors callers act on.
var (
	// ErrClosed: the Client was closed. Outstanding requests fail with it.
	ErrClosed = errors.New("client: closed")
	// ErrConnectionLost: the connection to the sidecar dropped while the
	// request was outstanding, or the delivery being settled came from a
	// connection that has since been replaced (the sidecar already handed
	// it back to the broker). A publish that failed with it may or may not
	// have been stored: retry it.
	ErrConnectionLost = errors.New("client: connection to the sidecar lost")
	// ErrAlreadySettled: the delivery was acked or nacked before.
	ErrAlreadySettled = errors.New("client: delivery already settled")
)

// Internal errors, wrapped with details where they are returned.
var (
	errHeartbeat   = errors.New("client: no frame from the sidecar for three heartbeat intervals")
	errUnexpected  = errors.New("client: unexpected answer from the sidecar")
	errInvalidArg  = errors.New("client: invalid argument")
	errSubscribed  = errors.New("client: (group, topic) already subscribed on this client")
	errModeClashes = errors.New("client: (group, topic) is declared in the other mode (push vs pull) on this client")
)

// Error is the typed error of an ERROR answer from the sidecar: the mesh's
// one coded error, mesh.Error. Code says what kind of failure it is (see
// mesh.Code; Retryable tells whether the same request may succeed later)
// and Message says what went wrong.
//
// errors.Is(err, &Error{Code: c}) is true for any *Error with code c, as
// is errors.Is(err, s) for the code's sentinel s in package mesh, so
//
//	errors.Is(err, mesh.NotRegistered)
//
// tests for a code without caring about the message.
type Error = mesh.Error

// CodeOf returns the code of the *Error in err's chain, or 0 if there is
// none (a local error, a context error, ErrConnectionLost, ...).
func CodeOf(err error) mesh.Code {
	c, _ := mesh.CarriedCode(err)
	return c
}
