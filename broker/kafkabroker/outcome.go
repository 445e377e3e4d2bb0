package kafkabroker

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
)

// Publish attempts. The Writer makes one attempt per WriteMessages
// (MaxAttempts 1) and Publish retries, because kafka-go reports only the
// last attempt's error: a first attempt whose answer was lost (the broker
// may have stored the message) followed by a refused connection would
// look like "nothing was stored". The policy is kafka-go's own: up to
// publishAttempts attempts, retrying the errors kafka-go retries, with
// backoff from publishBackoffMin doubling to publishBackoffMax.
const (
	publishAttempts   = 10
	publishBackoffMin = 100 * time.Millisecond
	publishBackoffMax = time.Second
)

// attemptNotStored reports whether err, the error of one WriteMessages
// call, proves that the message was not stored. batched says the error is
// the message's produce batch's (a kafka.WriteErrors entry); otherwise
// WriteMessages failed before the message joined a batch (metadata
// lookup, size, writer closed), unless the error is the ctx ending, which
// also happens while the batch is on its way.
//
// A batch's error proves nothing was stored when no connection could be
// dialled (nothing was sent) or the broker answered with an error code,
// except the codes that come after the leader appended the message:
// REQUEST_TIMED_OUT (acks=all waited too long for the replicas),
// NOT_ENOUGH_REPLICAS_AFTER_APPEND, KAFKA_STORAGE_ERROR and UNKNOWN. A
// timeout, a dropped connection or anything else after the request may
// have been written leaves the outcome open.
func attemptNotStored(err error, batched bool) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	if !batched {
		return true
	}
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		switch kerr {
		case kafka.RequestTimedOut, kafka.NotEnoughReplicasAfterAppend, kafka.KafkaStorageError, kafka.Unknown:
			return false
		}
		return true
	}
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

// attemptRetriable reports whether a failed attempt is worth another:
// what kafka-go's Writer retries (temporary errors, broken connections).
func attemptRetriable(err error) bool {
	var temp interface{ Temporary() bool }
	if errors.As(err, &temp) && temp.Temporary() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

// attemptBackoff is the wait before attempt n (n >= 2).
func attemptBackoff(n int) time.Duration {
	d := publishBackoffMin
	for i := 2; i < n && d < publishBackoffMax; i++ {
		d *= 2
	}
	return min(d, publishBackoffMax)
}

// write makes the attempts of one Publish. It returns a nil error once one
// succeeded, else whether any attempt may have stored the message and the
// last attempt's error.
func (b *Broker) write(ctx context.Context, km kafka.Message) (maybeStored bool, err error) {
	for n := 1; ; n++ {
		err = b.writer.WriteMessages(ctx, km)
		if err == nil {
			return false, nil
		}
		var werrs kafka.WriteErrors
		batched := errors.As(err, &werrs) && len(werrs) == 1 && werrs[0] != nil
		if batched {
			err = werrs[0] // one message, one error
		}
		if !attemptNotStored(err, batched) {
			maybeStored = true
		}
		if !batched || n >= publishAttempts || !attemptRetriable(err) {
			return maybeStored, err
		}
		t := time.NewTimer(attemptBackoff(n + 1))
		select {
		case <-ctx.Done():
			t.Stop()
			return maybeStored, err
		case <-t.C:
		}
	}
}
