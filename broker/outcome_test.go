package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/msgmesh/msgmesh/broker"
)

func TestNotStored(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"unavailable", fmt.Errorf("x: %w: refused", broker.ErrUnavailable), true},
		{"rejected", fmt.Errorf("x: %w", broker.ErrRejected), true},
		{"storage full", fmt.Errorf("x: %w", broker.ErrStorageFull), true},
		{"outcome unknown", fmt.Errorf("x: %w", broker.ErrOutcomeUnknown), false},
		{"unknown over unavailable", broker.OutcomeUnknown(fmt.Errorf("%w: %w", broker.ErrUnavailable, context.DeadlineExceeded)), false},
		{"deadline alone", context.DeadlineExceeded, false},
		{"closed", broker.ErrClosed, false},
		{"unclassified", errors.New("something"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := broker.NotStored(tt.err); got != tt.want {
				t.Fatalf("NotStored(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestOutcomeUnknown(t *testing.T) {
	if broker.OutcomeUnknown(nil) != nil {
		t.Fatal("OutcomeUnknown(nil) != nil")
	}
	inner := fmt.Errorf("%w: late", broker.ErrOutcomeUnknown)
	if got := broker.OutcomeUnknown(inner); got != inner {
		t.Fatalf("an error that already says so was wrapped again: %v", got)
	}
	err := broker.OutcomeUnknown(context.DeadlineExceeded)
	if !errors.Is(err, broker.ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("OutcomeUnknown(deadline) = %v: want both in the chain", err)
	}
}
