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
// the message's produce batch's (given to the Writer's Completion); otherwise
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

// write makes the attempts of one Publish. It returns where the message
// was stored once an attempt succeeded (for Publish to put back in
// Broker.published), else whether any attempt may have stored the message and
// the last attempt's error.
func (b *Broker) write(ctx context.Context, km kafka.Message) (p *published, maybeStored bool, err error) {
	for n := 1; ; n++ {
		var batched bool
		p, batched, err = b.attempt(ctx, km)
		if err == nil {
			return p, false, nil
		}
		if !attemptNotStored(err, batched) {
			maybeStored = true
		}
		if !batched || n >= publishAttempts || !attemptRetriable(err) {
			return nil, maybeStored, err
		}
		t := time.NewTimer(attemptBackoff(n + 1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, maybeStored, err
		case <-t.C:
		}
	}
}

// attempt writes km once and waits for its produce request's outcome:
// where km was stored, or the error, and whether it is the error of the
// batch km joined (otherwise WriteMessages refused km before it joined
// one, or ctx ended first while km may still be written). km goes through
// the publish queue (publishqueue.go) unless it is near the size limit or
// the queue is stopped; a round the Writer refused gives it back, and then
// km is written alone.
func (b *Broker) attempt(ctx context.Context, km kafka.Message) (p *published, batched bool, err error) {
	p = b.published.Get().(*published)
	km.WriterData = p
	if b.fitsRound(&km) && b.enqueue(km) {
		select {
		case <-p.done:
		case <-ctx.Done():
			// Still queued, or in a batch: the flusher or the Writer
			// may write it yet.
			return nil, false, ctx.Err()
		}
		if !p.alone {
			return b.attempted(p)
		}
		p.alone = false
	}
	if err := b.writer.WriteMessages(ctx, km); err != nil {
		b.published.Put(p) // not in a batch: completion never sees it
		return nil, false, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	return b.attempted(p)
}

// attempted is the outcome of an attempt whose batch completed.
func (b *Broker) attempted(p *published) (*published, bool, error) {
	if err := p.err; err != nil {
		b.published.Put(p)
		return nil, true, err
	}
	return p, true, nil
}
