package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// Handler processes one delivery of a subscription. If it returns nil the
// delivery is acked (unless the handler settled it already); if it returns
// an error the delivery is nacked for redelivery, after the delay of a
// *RetryAfter in the error's chain, else at once. ctx is cancelled when the
// Client closes or when Subscription.Close stops waiting. With tracing on
// (WithTracerProvider) ctx carries the delivery's "process <topic>" span,
// child of the producer's trace context from the message's headers; it
// ends when the handler returns and the delivery is settled, with the
// handler's error as its status. A panic in the handler is not recovered.
type Handler func(ctx context.Context, d *Delivery) error

// Subscription is a push subscription to one (group, topic). Its handler
// runs on its own worker goroutines (WithConcurrency).
type Subscription struct {
	c      *Client
	key    subKey
	h      Handler
	queue  chan *Delivery  // deliveries the workers have not taken yet
	stop   chan struct{}   // closed by Close
	done   chan struct{}   // closed when the last worker has returned
	ctx    context.Context // the handlers' context
	cancel context.CancelFunc

	workers   atomic.Int32
	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex // guards closed; held while enqueueing
	closed bool
}

// Subscribe declares (group, topic) in push mode on the connection and
// returns once the sidecar said OK; an ERROR answer is returned as an
// *Error (mesh.CodeNotRegistered when no registration consumes the pair),
// and nothing changes then. It waits for a connection while the Client
// reconnects. A Client can hold one subscription per (group, topic).
//
// The subscription survives reconnects. Deliveries are queued (at most
// WithMaxInflight) and handed to h; see Handler for how they are settled.
func (c *Client) Subscribe(ctx context.Context, group, topic string, h Handler, opts ...SubOption) (*Subscription, error) {
	if group == "" || topic == "" {
		return nil, fmt.Errorf("%w: Subscribe needs a group and a topic", errInvalidArg)
	}
	if h == nil {
		return nil, fmt.Errorf("%w: Subscribe needs a handler", errInvalidArg)
	}
	cfg := subConfig{concurrency: 1}
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.concurrency < 1 {
		return nil, fmt.Errorf("%w: WithConcurrency(%d): must be at least 1", errInvalidArg, cfg.concurrency)
	}
	s := &Subscription{
		c:     c,
		key:   subKey{group, topic},
		h:     h,
		queue: make(chan *Delivery, c.cfg.maxInflight),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(c.ctx)
	if err := c.addDecl(ctx, s.key, declEntry{mode: mesh.ModePush, sub: s}); err != nil {
		// Deliveries routed to s while the DECLARE was outstanding (only
		// possible if the sidecar applied it after all) go back.
		s.workers.Store(1)
		s.workerDone()
		return nil, err
	}
	// Deliveries that arrive before the workers run wait in the queue.
	s.workers.Store(int32(cfg.concurrency))
	for range cfg.concurrency {
		if !c.routines.Go(s.work) {
			s.workerDone() // the Client is closing
		}
	}
	return s, nil
}

// Close removes the subscription: it declares the set without it (the
// sidecar then stops pushing its messages), stops taking deliveries, and
// waits until the handlers in progress have returned. Deliveries still
// queued are nacked. If ctx ends first, the handlers' context is cancelled
// and Close returns ctx's error; the workers still finish in the
// background. An ERROR answer to the DECLARE is returned, but the
// subscription is closed anyway. Do not call Close from the handler.
// Close is idempotent.
func (s *Subscription) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.closeErr = s.c.removeDecl(ctx, s.key, s)
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
	})
	select {
	case <-s.done:
		return s.closeErr
	case <-ctx.Done():
		s.cancel()
		return ctx.Err()
	}
}

// enqueue hands d to the workers. It returns false when the subscription
// is closing or its queue is full; the read loop then nacks d.
func (s *Subscription) enqueue(d *Delivery) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	select {
	case s.queue <- d:
		return true
	default:
		return false
	}
}

func (s *Subscription) work() {
	defer s.workerDone()
	for {
		select {
		case <-s.stop:
			return
		case <-s.ctx.Done():
			return
		case d := <-s.queue:
			s.handle(d)
		}
	}
}

// workerDone runs as each worker returns; the last one refuses further
// deliveries, nacks those still queued and marks the subscription done.
func (s *Subscription) workerDone() {
	if s.workers.Add(-1) != 0 {
		return
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	for {
		select {
		case d := <-s.queue:
			_ = d.Nack(context.Background(), 0)
		default:
			s.cancel()
			close(s.done)
			return
		}
	}
}

func (s *Subscription) handle(d *Delivery) {
	if d.cn.Closed() {
		// Its connection is gone; the sidecar handed it back already and
		// the broker redelivers it.
		return
	}
	ctx, span := s.c.startProcess(s.ctx, d, nil)
	if span != nil {
		d.ctx, d.span = ctx, span
	}
	err := s.h(ctx, d)
	if !d.settled.Load() {
		var serr error
		if err == nil {
			serr = d.Ack(context.Background())
		} else {
			s.c.log.Debug("msgmesh: handler failed; nacking", "group", d.Group, "topic", d.Topic, "message_id", d.MessageID, "err", err)
			serr = d.Nack(context.Background(), retryDelay(err))
		}
		if serr != nil {
			s.c.log.Debug("msgmesh: settling a delivery failed", "group", d.Group, "topic", d.Topic, "message_id", d.MessageID, "err", serr)
			err = errors.Join(err, serr)
		}
	}
	endProcess(span, "", err)
}
