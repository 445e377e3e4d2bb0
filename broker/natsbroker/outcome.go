package natsbroker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
)

// publishNotStored reports whether err, from a JetStream publish request,
// proves that the message was not stored: nats.go refused it before
// writing it (bad subject or headers, over the server's payload limit,
// reconnect buffer full, connection draining), no stream listens on the
// subject (no responders), or the stream answered with an error (a
// JetStream API error: the server refused it). Everything else leaves the
// outcome open: a context error or nats.ErrTimeout (the request was
// written and no answer came), a closed or lost connection while the
// answer was awaited, an answer that cannot be read.
func publishNotStored(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, broker.ErrUnavailable): // the adapter's "nothing was sent"
		return true
	case errors.As(err, &apiErr):
		return true
	case errors.Is(err, nats.ErrMaxPayload),
		errors.Is(err, nats.ErrBadSubject),
		errors.Is(err, nats.ErrBadHeaderMsg),
		errors.Is(err, nats.ErrHeadersNotSupported),
		errors.Is(err, nats.ErrInvalidMsg),
		errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrConnectionDraining):
		return true
	}
	return false
}

// waitConnected returns once the connection to the server is up. A
// publish must not be handed to nats.go while it reconnects: nats.go
// would buffer it and send it after reconnecting, even after the publish
// gave up waiting, so a publish that failed could still be stored. If ctx
// ends or the connection closes first, nothing was sent, and the error
// wraps broker.ErrUnavailable.
func (b *Broker) waitConnected(ctx context.Context) error {
	if b.nc.IsConnected() {
		return nil
	}
	ch := b.nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer b.nc.RemoveStatusListener(ch)
	// Checked again after registering, so a change in between is seen.
	for !b.nc.IsConnected() {
		if b.nc.IsClosed() {
			return fmt.Errorf("%w: the connection to NATS is closed; nothing was sent: %w", broker.ErrUnavailable, nats.ErrConnectionClosed)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: not connected to NATS (reconnecting); nothing was sent: %w", broker.ErrUnavailable, ctx.Err())
		}
	}
	return nil
}
