package forward

import (
	"context"
	"errors"
	"fmt"

	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// Errors callers branch on with errors.Is.
//
// On the forwarding side, every error Forward returns means the delivery
// was not handed over and has not been touched: the caller delivers it
// itself (locally). ErrConnLost and ErrTimeout are only seen by
// ClientConfig.OnLost, for deliveries the sibling had taken.
var (
	// ErrUnavailable: the sibling could not be reached (dial, TLS handshake
	// or HELLO failed, or its breaker is open after such a failure or a
	// dead connection: then with ErrSiblingDown), or the connection broke
	// or went silent (ErrSilent) before the sibling said it took the
	// delivery.
	ErrUnavailable = errors.New("forward: sibling unavailable")
	// ErrSiblingDown: the sibling's circuit breaker is open after a failed
	// dial or a dead or silent connection: Forward refuses it at once,
	// without touching the network, until a background probe reconnects.
	// Always wrapped together with ErrUnavailable.
	ErrSiblingDown = errors.New("forward: sibling marked down")
	// ErrSilent: the sibling sent nothing for ClientConfig.TakeTimeout
	// after a request; its connection is taken for silently cut and
	// closed. Wrapped with ErrUnavailable for deliveries it had not taken
	// (Forward's error) and with ErrConnLost for the ones it had taken
	// (OnLost).
	ErrSilent = errors.New("forward: sibling silent")
	// ErrRefused: the sibling answered ERROR: it cannot take the delivery
	// (not registered there, too many in flight, shutting down). The
	// *RefusedError carries the wire code.
	ErrRefused = errors.New("forward: sibling refused the delivery")
	// ErrClosed: the Forwarder or Server was closed.
	ErrClosed = errors.New("forward: closed")
	// ErrConnLost: the sibling connection broke while a delivery it had
	// taken was unanswered (forwarding side: handed back to the broker), or
	// the receiving side's app answered a delivery whose forwarder
	// connection is gone (its answer cannot be sent).
	ErrConnLost = errors.New("forward: sibling connection lost")
	// ErrTimeout: the sibling's app did not answer within
	// ClientConfig.Timeout; the delivery was handed back to the broker.
	ErrTimeout = errors.New("forward: sibling did not answer in time")
	// ErrSettled: Ack or Nack was called on a delivery already answered (or
	// refused).
	ErrSettled = errors.New("forward: delivery already answered")
	// ErrConfig: a ServerConfig or ClientConfig that cannot work.
	ErrConfig = errors.New("forward: invalid configuration")
)

// RefusedError is the sibling's ERROR answer to a DELIVER (or to HELLO):
// the mesh's one coded error (*mesh.Error, embedded: Code, Message and
// Retryable are its) with the sibling that sent it. errors.Is matches both
// ErrRefused and the code's sentinel (mesh.NotRegistered, ...).
type RefusedError struct {
	Sibling string
	*answer
}

// answer names the embedded *mesh.Error, whose field name would otherwise
// clash with the Error method.
type answer = mesh.Error

func (e *RefusedError) Error() string {
	return fmt.Sprintf("forward: sibling %s refused: %s: %s", e.Sibling, e.Code, e.Message)
}

func (e *RefusedError) Unwrap() []error { return []error{ErrRefused, e.answer} }

// codes is the forwarding side's part of the one error→code mapping
// (mesh.CodeOf) for a Deliverer's error: a Deliverer chooses the code
// precisely by returning (or wrapping) a *mesh.Error; otherwise a closed
// server is SHUTTING_DOWN and the rest UNAVAILABLE, so the forwarder
// delivers locally.
var codes = mesh.Codes{
	Known: []mesh.KnownError{
		{Err: ErrClosed, Code: mesh.CodeShuttingDown},
		{Err: context.Canceled, Code: mesh.CodeShuttingDown},
		{Err: context.DeadlineExceeded, Code: mesh.CodeTimeout},
	},
	Default: mesh.CodeUnavailable,
}
