package rocketmqbroker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"syscall"

	rmqerrors "github.com/apache/rocketmq-client-go/v2/errors"

	"github.com/msgmesh/msgmesh/broker"
)

// ErrSettled is returned by Delivery.Ack and Nack when the delivery was
// already acked or nacked, or handed back by the adapter after AckWait.
var ErrSettled = errors.New("rocketmqbroker: delivery already settled")

// RocketMQ response codes the classification looks at (ResponseCode).
const (
	codeSystemError         = 1
	codeSystemBusy          = 2
	codeNotSupported        = 3
	codeFlushDiskTimeout    = 10
	codeSlaveNotAvailable   = 11
	codeFlushSlaveTimeout   = 12
	codeMessageIllegal      = 13
	codeServiceNotAvailable = 14
	codeVersionNotSupported = 15
	codeNoPermission        = 16
	codeTopicNotExist       = 17
)

// codeRE finds the response code in the client's broker errors, which are
// plain strings ("CODE: 13, DESC: ..." or "CODE: 13  DESC: ...").
var codeRE = regexp.MustCompile(`CODE: (-?\d+)`)

// tooLargeRE finds a MESSAGE_ILLEGAL answer about the message's size:
// "the message body size over max value", "properties length ... exceeds",
// "msg body or properties length not matched".
var tooLargeRE = regexp.MustCompile(`(?i)body (size|length)|properties (size|length)`)

// responseCode extracts a broker response code from err's message.
func responseCode(err error) (int, bool) {
	m := codeRE.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, false
	}
	c, convErr := strconv.Atoi(m[1])
	return c, convErr == nil
}

// classify returns the broker sentinel err belongs to: broker.ErrTooLarge
// when the broker refused the message for its size, broker.ErrRejected
// when it refused for good (illegal message, no permission, topic that
// does not exist), broker.ErrUnavailable when retrying later may
// succeed, and nil when err is the caller's own context ending
// (context.Canceled), which is neither.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return nil
	case errors.Is(err, broker.ErrRejected), errors.Is(err, broker.ErrUnavailable), errors.Is(err, broker.ErrClosed), errors.Is(err, broker.ErrTooLarge):
		return nil // already classified
	}
	if c, ok := responseCode(err); ok {
		if c == codeMessageIllegal && tooLargeRE.MatchString(err.Error()) {
			return broker.ErrTooLarge
		}
		switch c {
		case codeMessageIllegal, codeNoPermission, codeTopicNotExist, codeNotSupported, codeVersionNotSupported:
			return broker.ErrRejected
		}
		return broker.ErrUnavailable // system error or busy, not available, flush timeouts
	}
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, rmqerrors.ErrRequestTimeout),
		errors.Is(err, rmqerrors.ErrService),
		errors.Is(err, rmqerrors.ErrBrokerNotFound),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.As(err, &netErr):
		return broker.ErrUnavailable
	case errors.Is(err, rmqerrors.ErrMessageEmpty),
		errors.Is(err, rmqerrors.ErrTopicEmpty),
		errors.Is(err, rmqerrors.ErrMultipleTopics):
		return broker.ErrRejected
	}
	// Unknown (including "route info not found", which is both "no such
	// topic" and "name server unreachable"): say it may pass, so the
	// caller retries rather than dropping the message.
	return broker.ErrUnavailable
}

// wrap formats "rocketmqbroker: <op>: [sentinel: ]err", keeping both the
// sentinel chosen by classify and the client's error in the chain.
func wrap(op string, err error) error {
	if s := classify(err); s != nil {
		return fmt.Errorf("rocketmqbroker: %s: %w: %w", op, s, err)
	}
	return fmt.Errorf("rocketmqbroker: %s: %w", op, err)
}
