package broker

import (
	"errors"
	"fmt"
)

// What a failed Publish says about the message. An adapter wraps
// ErrUnavailable, ErrRejected or ErrStorageFull only when it knows the
// message was not stored: it was never handed to the network (no
// connection, breaker, bad message), or the broker answered with a
// refusal. Every failure after the message may have reached the broker
// (the connection dropped or the answer did not come in time, the
// client's own retries after such a failure, an answer the adapter cannot
// read) wraps ErrOutcomeUnknown. The sidecar answers the first kind with
// a retry-safe "not stored" code and everything else with TIMEOUT.

// NotStored reports whether err, returned by Publish, says for sure that
// the message was not stored: it wraps ErrUnavailable, ErrRejected or
// ErrStorageFull and not ErrOutcomeUnknown. Any other error (a context
// error, ErrClosed, something unclassified) leaves the outcome open.
func NotStored(err error) bool {
	if err == nil || errors.Is(err, ErrOutcomeUnknown) {
		return false
	}
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrRejected) || errors.Is(err, ErrStorageFull)
}

// OutcomeUnknown returns err as a Publish error that leaves the outcome
// open: err itself if it already wraps ErrOutcomeUnknown, else err wrapped
// with it. ErrOutcomeUnknown wins over any sentinel err already wraps
// (NotStored, and the sidecar's error codes, look at it first).
func OutcomeUnknown(err error) error {
	if err == nil || errors.Is(err, ErrOutcomeUnknown) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
}
