package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestPublishNotStored(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"no stream answered", jetstream.ErrNoStreamResponse, true},
		{"no responders", nats.ErrNoResponders, true},
		{"stream refused", fmt.Errorf("nats: %w", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}), true},
		{"too large", nats.ErrMaxPayload, true},
		{"bad subject", nats.ErrBadSubject, true},
		{"reconnect buffer full", nats.ErrReconnectBufExceeded, true},
		{"draining", nats.ErrConnectionDraining, true},
		{"deadline after sending", context.DeadlineExceeded, false},
		{"request timeout", nats.ErrTimeout, false},
		{"closed while waiting", nats.ErrConnectionClosed, false},
		{"disconnected while waiting", nats.ErrDisconnected, false},
		{"unreadable answer", jetstream.ErrInvalidJSAck, false},
		{"write failed", &wrappedNetErr{syscall.EPIPE}, false},
		{"unknown", errors.New("something else"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := publishNotStored(tt.err); got != tt.want {
				t.Fatalf("publishNotStored(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

type wrappedNetErr struct{ err error }

func (e *wrappedNetErr) Error() string { return "write: " + e.err.Error() }
func (e *wrappedNetErr) Unwrap() error { return e.err }
