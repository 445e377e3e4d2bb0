package natsbroker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
)

// classify returns the broker sentinel err belongs to: broker.ErrUnavailable
// when retrying later may succeed, broker.ErrTooLarge when the message is
// over the server's max_payload or a stream's size limits,
// broker.ErrStorageFull when JetStream refused to store for lack of space
// (see storageFull), broker.ErrRejected when the broker refused for good,
// and nil when err is the caller's own context ending (context.Canceled),
// which is neither.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return nil
	case storageFull(err):
		return broker.ErrStorageFull
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrNoServers),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return broker.ErrUnavailable
	case errors.Is(err, nats.ErrMaxPayload):
		return broker.ErrTooLarge
	case errors.Is(err, nats.ErrBadSubject),
		errors.Is(err, nats.ErrBadHeaderMsg),
		errors.Is(err, nats.ErrHeadersNotSupported),
		errors.Is(err, nats.ErrInvalidMsg),
		errors.Is(err, nats.ErrPermissionViolation),
		errors.Is(err, nats.ErrAuthorization),
		errors.Is(err, jetstream.ErrInvalidSubject),
		errors.Is(err, jetstream.ErrInvalidStreamName),
		errors.Is(err, jetstream.ErrInvalidConsumerName):
		return broker.ErrRejected
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		if apiErr.ErrorCode == jsErrMessageTooLarge || apiErr.ErrorCode == jsErrHeaderTooLarge {
			return broker.ErrTooLarge
		}
		// The JetStream API answers 503 (and the like) when it is
		// temporarily unable to serve: no quorum, no resources, leader
		// election. Everything else (400 bad request, 404, 409, 413 ...)
		// is a refusal that a retry will not change.
		if apiErr.Code >= 500 || apiErr.Code == 408 {
			return broker.ErrUnavailable
		}
		return broker.ErrRejected
	}
	// An error we do not know: say it may pass, so the caller retries
	// rather than dropping the message.
	return broker.ErrUnavailable
}

// JetStream error codes for a message a stream refuses for its size: over
// the stream's max_msg_size, or headers over 64 KiB.
const (
	jsErrMessageTooLarge jetstream.ErrorCode = 10054
	jsErrHeaderTooLarge  jetstream.ErrorCode = 10097
)

// wrap formats "natsbroker: <op>: [sentinel: ]err". The chain holds both the
// sentinel chosen by classify and the client's error, so errors.Is works for
// the broker sentinels, context errors and nats errors.
func wrap(op string, err error) error {
	if s := classify(err); s != nil {
		return fmt.Errorf("natsbroker: %s: %w: %w", op, s, err)
	}
	return fmt.Errorf("natsbroker: %s: %w", op, err)
}
