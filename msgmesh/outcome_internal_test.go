package msgmesh

import (
	"context"
	"fmt"
	"testing"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/flowctl"
)

// TestPublishErrorCodes: a publish error gets a retry-safe code only when
// the adapter says the message was not stored; an unknown outcome, the
// sidecar's own publish timeout included, is TIMEOUT.
func TestPublishErrorCodes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want mesh.Code
	}{
		{"not sent", fmt.Errorf("natsbroker: publish: %w: not connected", broker.ErrUnavailable), mesh.CodeUnavailable},
		{"refused", fmt.Errorf("kafkabroker: publish: %w: too large", broker.ErrRejected), mesh.CodeBrokerError},
		{"breaker open", &flowctl.BreakerOpenError{Cluster: "c"}, mesh.CodeUnavailable},
		{"outcome unknown", fmt.Errorf("natsbroker: publish: %w: %w", broker.ErrOutcomeUnknown, context.DeadlineExceeded), mesh.CodeTimeout},
		{"unknown over unavailable", broker.OutcomeUnknown(fmt.Errorf("%w: connection refused", broker.ErrUnavailable)), mesh.CodeTimeout},
		{"own deadline", broker.OutcomeUnknown(context.DeadlineExceeded), mesh.CodeTimeout},
		{"bare deadline", context.DeadlineExceeded, mesh.CodeTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := codeOf(fmt.Errorf("msgmesh: publish to %q: %w", "t", tt.err)); got != tt.want {
				t.Fatalf("codeOf(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}
