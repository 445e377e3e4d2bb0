package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/segmentio/kafka-go"

	"github.com/msgmesh/msgmesh/broker"
)

// ErrAnswered is returned by Delivery.Ack and Nack when the delivery was
// already acked or nacked: each delivery takes exactly one answer.
var ErrAnswered = errors.New("kafkabroker: delivery already acked or nacked")

// classify returns the broker sentinel err belongs to: broker.ErrUnavailable
// when retrying later may succeed, broker.ErrTooLarge for a message over
// the Writer's or the broker's size limit, broker.ErrRejected when the broker
// refused for good, broker.ErrClosed when the kafka-go Writer was
// closed under the call, and nil when err is the caller's own context
// ending (context.Canceled), which is none of them.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return nil
	case errors.Is(err, io.ErrClosedPipe):
		// kafka-go's Writer reports use after Close this way.
		return broker.ErrClosed
	}
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		if kerr == kafka.MessageSizeTooLarge || kerr == kafka.RecordListTooLarge {
			// The Writer's own check (MessageTooLargeError unwraps to
			// it) or the broker's message.max.bytes.
			return broker.ErrTooLarge
		}
		if rejected(kerr) {
			return broker.ErrRejected
		}
		// Retriable codes (not leader, no coordinator, request timed out,
		// not enough replicas ...) and codes we do not know.
		return broker.ErrUnavailable
	}
	// Network errors, timeouts (context.DeadlineExceeded included), EOF
	// and errors we do not know: say it may pass, so the caller retries
	// rather than dropping the message.
	return broker.ErrUnavailable
}

// rejected reports whether the broker refused a request for a reason a
// retry will not change: size, topic name, authorisation, bad request.
func rejected(e kafka.Error) bool {
	switch e {
	case kafka.InvalidMessageSize,
		kafka.InvalidTopic,
		kafka.InvalidRequiredAcks,
		kafka.InvalidGroupId,
		kafka.TopicAuthorizationFailed,
		kafka.GroupAuthorizationFailed,
		kafka.ClusterAuthorizationFailed,
		kafka.InvalidTimestamp,
		kafka.UnsupportedSASLMechanism,
		kafka.IllegalSASLState,
		kafka.UnsupportedVersion,
		kafka.InvalidPartitionNumber,
		kafka.InvalidReplicationFactor,
		kafka.InvalidReplicaAssignment,
		kafka.InvalidConfiguration,
		kafka.InvalidRequest,
		kafka.UnsupportedForMessageFormat,
		kafka.PolicyViolation,
		kafka.TransactionalIDAuthorizationFailed,
		kafka.SecurityDisabled,
		kafka.BrokerAuthorizationFailed,
		kafka.SASLAuthenticationFailed,
		kafka.DelegationTokenAuthorizationFailed,
		kafka.InvalidPrincipalType,
		kafka.UnsupportedCompressionType,
		kafka.InvalidRecord,
		kafka.UnacceptableCredential,
		kafka.PrincipalDeserializationFailure:
		return true
	}
	return false
}

// withSentinel puts classify's sentinel in front of err.
func withSentinel(err error) error {
	if s := classify(err); s != nil && !errors.Is(err, s) {
		return fmt.Errorf("%w: %w", s, err)
	}
	return err
}

// wrap formats "kafkabroker: <op>: [sentinel: ]err". The chain holds both
// the sentinel chosen by classify and the client's error, so errors.Is
// works for the broker sentinels, context errors and kafka.Error codes.
func wrap(op string, err error) error {
	return fmt.Errorf("kafkabroker: %s: %w", op, withSentinel(err))
}
