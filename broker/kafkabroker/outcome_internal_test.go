package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func TestAttemptNotStored(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	read := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	tests := []struct {
		name    string
		err     error
		batched bool
		want    bool
	}{
		{"before batching: metadata", kafka.LeaderNotAvailable, false, true},
		{"before batching: writer closed", io.ErrClosedPipe, false, true},
		{"ctx ended with the batch on its way", context.DeadlineExceeded, false, false},
		{"no connection", fmt.Errorf("kafka.(*Client).Produce: %w", dial), true, true},
		{"refused: not enough replicas", kafka.NotEnoughReplicas, true, true},
		{"refused: not leader", fmt.Errorf("%w: moved", kafka.NotLeaderForPartition), true, true},
		{"refused: too large", kafka.MessageSizeTooLarge, true, true},
		{"appended, replicas timed out", kafka.RequestTimedOut, true, false},
		{"appended, replicas gone", kafka.NotEnoughReplicasAfterAppend, true, false},
		{"storage error", kafka.KafkaStorageError, true, false},
		{"unknown server error", kafka.Unknown, true, false},
		{"connection dropped", fmt.Errorf("kafka.(*Client).Produce: %w", io.ErrUnexpectedEOF), true, false},
		{"connection reset while reading", read, true, false},
		{"produce timed out", fmt.Errorf("kafka.(*Client).Produce: %w", context.DeadlineExceeded), true, false},
		{"unknown", errors.New("something else"), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := attemptNotStored(tt.err, tt.batched); got != tt.want {
				t.Fatalf("attemptNotStored(%v, batched %v) = %v, want %v", tt.err, tt.batched, got, tt.want)
			}
		})
	}
}

func TestAttemptBackoff(t *testing.T) {
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := attemptBackoff(i + 2); got != w*time.Millisecond {
			t.Errorf("attemptBackoff(%d) = %v, want %v", i+2, got, w*time.Millisecond)
		}
	}
}
