package registry

import (
	"errors"
	"fmt"

	"github.com/msgmesh/msgmesh/internal/boltfile"
)

// Sentinel errors. Callers branch on them with errors.Is. The Store's
// methods wrap them in "registry: <operation> <app>: ", so those that
// only the Store returns carry no "registry:" of their own (it would be
// said twice).
var (
	// ErrInvalid: a registration, binding or request body breaks the rules.
	// The error is a *ValidationError that says which field and why.
	ErrInvalid = errors.New("registry: invalid registration")
	// ErrNotFound: no registration for that app.
	ErrNotFound = errors.New("no such registration")
	// ErrLocked: Open could not lock the store file in time; another
	// process (most likely another msgmesh on the same data directory) or
	// another open Store holds it.
	ErrLocked = errors.New("store file is locked")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("store closed")
	// ErrStorageFull: a write failed because the store file's file system
	// is full or over quota. Nothing was changed; the Store stays usable,
	// and the same write succeeds once space is freed.
	ErrStorageFull = errors.New("registry: storage full")
	// ErrCorrupt: Open found the store file damaged (cut short, emptied,
	// overwritten) and did not open it. The error is a
	// *boltfile.CorruptError whose message names the file and how to
	// recover (docs/operations.md).
	ErrCorrupt = boltfile.ErrCorrupt
)

// ValidationError reports a registration, binding or request body that
// breaks the rules. It unwraps to ErrInvalid.
type ValidationError struct {
	// Field is the path of the offending value, JSON names and indices:
	// "app", "consume[1].topic", "produce[2]" (a whole binding); a JSON
	// type error from DecodeJSON has encoding/json's path without indices
	// ("consume.topic") and the byte offset in Reason. It is empty when the problem is the body as a whole (syntax, size, trailing
	// data) or the registration as a whole (no binding at all).
	Field string
	// Reason says what is wrong, in words meant for the app's developer.
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return ErrInvalid.Error() + ": " + e.Reason
	}
	return ErrInvalid.Error() + ": " + e.Field + ": " + e.Reason
}

// Unwrap returns ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
