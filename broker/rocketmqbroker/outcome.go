package rocketmqbroker

import (
	"context"
	"errors"
	"net"
	"time"

	rmqerrors "github.com/apache/rocketmq-client-go/v2/errors"
	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// The client's producer makes one attempt per SendSync (its own retries
// are off) and Publish retries, because the client reports only the last
// attempt's error: a first attempt that timed out (the broker may have
// stored the message) followed by a refused connection would look like
// "nothing was stored". The policy is the client's own: Config.Retries
// more attempts after any failure but a broker refusal that retrying does
// not change, and, without counting, attempts after "route info not
// found" (nothing was sent), within ctx.

// sendNotStored reports whether err, the error of one SendSync attempt,
// proves that the message was not stored: the client found no route or no
// running client (nothing was sent), could not connect, or the broker
// answered with an error code. A timeout (rmqerrors.ErrRequestTimeout,
// which is also what a connection lost with the request outstanding looks
// like), a failed write or anything else leaves the outcome open.
func sendNotStored(err error) bool {
	if _, ok := responseCode(err); ok {
		return true
	}
	var opErr *net.OpError
	switch {
	case isNoRoute(err),
		errors.Is(err, rmqerrors.ErrNotRunning),
		errors.Is(err, rmqerrors.ErrService), // the client is shut down
		errors.Is(err, rmqerrors.ErrMessageEmpty),
		errors.Is(err, rmqerrors.ErrTopicEmpty),
		errors.Is(err, rmqerrors.ErrMultipleTopics):
		return true
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return true
	}
	return false
}

// sendRetriable reports whether a failed attempt is worth another: what
// the client retries (every failure but a broker answer whose code a
// retry does not change).
func sendRetriable(err error) bool {
	c, ok := responseCode(err)
	if !ok {
		return true
	}
	switch c {
	case codeTopicNotExist, codeServiceNotAvailable, codeSystemError, codeNoPermission:
		return true
	}
	return false
}

// send makes the attempts of one Publish. It returns the first result the
// broker gave (SEND_OK or a flush or replication timeout), else whether
// any attempt may have stored the message and the last attempt's error.
// A non-nil tried is the error of a first attempt already made (a batch
// that carried rm, batch.go); send goes on from it as from its own.
func (b *Broker) send(ctx context.Context, rm *primitive.Message, tried error) (sr *primitive.SendResult, maybeStored bool, err error) {
	retries := b.cfg.Retries
	backoff := 20 * time.Millisecond
	for err = tried; ; err = nil {
		if err == nil {
			if sr, err = b.producer.p.SendSync(ctx, rm); err == nil {
				return sr, maybeStored, nil
			}
		}
		if !sendNotStored(err) {
			maybeStored = true
		}
		if ctx.Err() != nil {
			return nil, maybeStored, err
		}
		switch {
		case isNoRoute(err):
			// The route lookup failed (a name-server request timed
			// out, or the topic is being created): wait a little.
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, maybeStored, err
			case <-t.C:
			}
			backoff = min(2*backoff, time.Second)
		case retries > 0 && sendRetriable(err):
			retries--
		default:
			return nil, maybeStored, err
		}
	}
}
