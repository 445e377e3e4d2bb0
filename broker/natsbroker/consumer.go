package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
)

type consumerState int

const (
	stateRunning consumerState = iota
	statePaused
	stateClosed
)

// Backoff between attempts to recreate a fetcher that ended on its
// own (consumer deleted by an operator, stream gone, broker outage).
const (
	rebuildMinBackoff = 250 * time.Millisecond
	rebuildMaxBackoff = 10 * time.Second
)

// handBackDelay is the delay of the NAK that hands a prefetched message
// back. A NAK with a delay is stored with the consumer's state (the
// server rewrites the message's pending entry); a plain NAK only queues
// it in memory, so across a server restart (the embedded server of a hot
// upgrade) the message would wait the whole AckWait. Seen: a minute's
// stall after each upgrade of the embedded broker (TestHotUpgradeBacklog).
const handBackDelay = time.Millisecond

// handBackIdle: without a connection, a hand-back ends once no buffered
// message turned up for this long.
const handBackIdle = 50 * time.Millisecond

// consumer is one durable JetStream pull consumer: one group on one topic.
//
// Concurrency. Next is called by one goroutine at a time; Pause, Resume and
// Close by any goroutine. The fetcher (fetch.go) is owned by whoever holds
// it in c.iter: Pause and Close take it out of c.iter under c.mu and then
// drain it and hand back what it brings outside the lock, while a
// Next that was blocked on it is woken through c.interrupt (or
// c.cancelNext while it recreates the consumer) and, seeing c.iter
// changed, naks whatever it got and returns the state's error.
// c.mu is held only briefly and never across a network round trip or a
// blocking fetcher call; Broker.open and Broker.smu are never taken while
// it is held.
type consumer struct {
	b        *Broker
	topic    string
	group    string
	name     string
	ackWait  time.Duration
	prefetch int
	log      *slog.Logger

	// stream is the stream serving topic. Written by Consume before the
	// consumer is shared and by Next's rebuild (the single Next goroutine).
	stream string

	mu    sync.Mutex
	state consumerState
	// cons is the last successfully created consumer handle; Resume makes
	// new fetchers from it.
	cons jetstream.Consumer
	// iter is the current fetcher while running; nil while paused or
	// closed, and while running after it ended on its own (Next rebuilds).
	iter *fetcher
	// interrupt is closed when the consumer stops running (Pause,
	// Close), which ends a Next waiting on the fetcher; made by Next when
	// nil. One channel per running spell rather than a context per Next:
	// a context made, registered with its parent and cancelled for every
	// message cost three allocations and two map updates of the parent's.
	interrupt chan struct{}
	// cancelNext interrupts a Next recreating the consumer (rebuild);
	// nil when none.
	cancelNext context.CancelFunc
	// handbacks are the hand-backs in progress; each channel is closed
	// when its hand-back is over. Pause and Close wait for them.
	handbacks []chan struct{}
	// keep: Pause and Close move what they would hand back into carry
	// (broker.Keeper), from Keep until Resume.
	keep bool
	// carry are messages Next returns before reading the fetcher: those
	// a predecessor kept (ConsumerSpec.Carry), or those this consumer
	// keeps for a successor (carry.go).
	carry []carried
	// deferIter: the fetcher starts only once the carry is given out,
	// so that no more than Prefetch messages are held at a time.
	deferIter bool
}

// config is the durable consumer configuration (see the package doc).
func (c *consumer) config() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Name:          c.name,
		Durable:       c.name,
		Description:   fmt.Sprintf("msgmesh group %s on topic %s", c.group, c.topic),
		FilterSubject: c.topic,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.ackWait,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: c.b.cfg.MaxAckPending,
	}
}

// createConsumer creates the durable consumer, or updates it to the current
// configuration. A consumer of that name that filters another subject (an
// operator's, or a hash collision) is refused rather than repointed, since
// repointing would silently move a group to another topic.
func (c *consumer) createConsumer(ctx context.Context, stream string) (jetstream.Consumer, error) {
	cons, err := c.b.js.Consumer(ctx, stream, c.name)
	switch {
	case err == nil:
		cfg := cons.CachedInfo().Config
		if cfg.FilterSubject != c.topic || len(cfg.FilterSubjects) > 0 {
			return nil, fmt.Errorf("%w: consumer %s on stream %s exists with filter %q %q, not %q",
				broker.ErrRejected, c.name, stream, cfg.FilterSubject, cfg.FilterSubjects, c.topic)
		}
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	default:
		return nil, fmt.Errorf("look up consumer %s: %w", c.name, withSentinel(err))
	}
	cons, err = c.b.js.CreateOrUpdateConsumer(ctx, stream, c.config())
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on stream %s: %w", c.name, stream, withSentinel(err))
	}
	c.mu.Lock()
	c.cons = cons
	c.mu.Unlock()
	return cons, nil
}

// stateErrLocked is the error Next returns in a state other than running.
// c.mu held on entry.
func (c *consumer) stateErrLocked() error {
	switch c.state {
	case statePaused:
		return broker.ErrPaused
	case stateClosed:
		return broker.ErrClosed
	}
	return nil
}

// Next blocks until a message is available, ctx ends, or the consumer is
// paused or closed. While the broker is unreachable it keeps blocking (the
// fetcher keeps asking, at fetchWait's pace); if the fetcher ends on its own
// (an operator deleted the durable consumer or the stream) Next recreates
// them, retrying with backoff, and logs it. It returns broker.ErrClosed
// once the connection is closed.
func (c *consumer) Next(ctx context.Context) (broker.Delivery, error) {
	backoff := time.Duration(0)
	for {
		c.mu.Lock()
		if err := c.stateErrLocked(); err != nil {
			c.mu.Unlock()
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("natsbroker: next: %w", err)
		}
		if c.b.nc.IsClosed() {
			c.mu.Unlock()
			return nil, fmt.Errorf("natsbroker: next: connection closed: %w", broker.ErrClosed)
		}
		if len(c.carry) > 0 {
			k := c.carry[0]
			c.carry = c.carry[1:]
			c.mu.Unlock()
			return k.delivery(c.b), nil
		}
		if c.deferIter && c.iter == nil {
			c.deferIter = false
			c.iter = newFetcher(c.b.nc, c.cons, c.prefetch)
		}
		iter := c.iter
		if iter == nil {
			// A context for the broker calls of rebuild, cancelled by
			// Pause and Close.
			nctx, cancel := context.WithCancel(ctx)
			c.cancelNext = cancel
			c.mu.Unlock()
			err := c.rebuild(nctx, backoff)
			interrupted := nctx.Err() != nil // ctx ended, or Pause/Close
			c.endNext(cancel)
			switch {
			case err == nil:
				// backoff stays: a pull request the server refuses
				// again at once (Exceeded MaxWaiting, a leadership
				// change, ...) must not make this loop spin.
			case !interrupted:
				c.log.Warn("cannot recreate consumer; retrying", "error", err)
				fallthrough
			default:
				backoff = min(max(2*backoff, rebuildMinBackoff), rebuildMaxBackoff)
			}
			continue // the loop head reports ctx, state and closed conn
		}

		if c.interrupt == nil {
			c.interrupt = make(chan struct{})
		}
		interrupt := c.interrupt
		c.mu.Unlock()

		m, err := iter.Next(ctx, interrupt)
		c.mu.Lock()
		stale := c.state != stateRunning || c.iter != iter
		c.mu.Unlock()
		if err == nil {
			if stale {
				// Pause or Close took the fetcher while we were
				// receiving: hand the message back (or keep it) with
				// the rest.
				c.mu.Lock()
				keep := c.keep
				c.mu.Unlock()
				c.giveBack(m, keep)
				continue
			}
			return c.newDelivery(m), nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("natsbroker: next: %w", ctx.Err())
		}
		if stale {
			continue
		}
		// The fetcher ended on its own: connection closed, consumer
		// deleted, or another terminal status from the server.
		c.mu.Lock()
		if c.iter == iter {
			c.iter = nil
		}
		c.mu.Unlock()
		iter.Stop()
		backoff = min(max(2*backoff, rebuildMinBackoff), rebuildMaxBackoff)
		if !c.b.nc.IsClosed() {
			c.log.Warn("pull request failed; recreating the consumer", "error", err, "retry_in", backoff)
		}
	}
}

// endNext clears c.cancelNext and releases the Next context.
func (c *consumer) endNext(cancel context.CancelFunc) {
	c.mu.Lock()
	c.cancelNext = nil
	c.mu.Unlock()
	cancel()
}

// rebuild waits backoff, then recreates the durable consumer (and the
// stream if it is gone) and installs a new fetcher, unless the consumer
// stopped running meanwhile. ctx is the Next context, cancelled by Pause
// and Close.
func (c *consumer) rebuild(ctx context.Context, backoff time.Duration) error {
	if backoff > 0 {
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	ref, err := c.b.ensureStream(ctx, c.topic)
	if err != nil {
		return err
	}
	stream := ref.name
	cons, err := c.createConsumer(ctx, stream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			c.b.forgetStream(c.topic, stream)
		}
		return err
	}
	if stream != c.stream {
		c.log.Info("consumer moved to another stream", "from", c.stream, "to", stream)
		c.stream = stream
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateRunning || c.iter != nil {
		return nil
	}
	c.iter = newFetcher(c.b.nc, cons, c.prefetch)
	return nil
}

// Pause stops fetching and hands back (naks) the messages prefetched but
// not returned by Next; a Next blocked meanwhile returns broker.ErrPaused.
// It returns when the hand-back is over, or with ctx's error if ctx ends
// first (what is left comes back after AckWait). Pausing a paused or closed
// consumer does nothing but wait for hand-backs still in progress.
func (c *consumer) Pause(ctx context.Context) error {
	return c.stop(ctx, statePaused)
}

// Close stops the consumer for good, like Pause; Next returns
// broker.ErrClosed afterwards. The durable consumer, and with it the
// group's position, stays on the server. Idempotent.
func (c *consumer) Close(ctx context.Context) error {
	return c.stop(ctx, stateClosed)
}

func (c *consumer) stop(ctx context.Context, to consumerState) error {
	c.mu.Lock()
	pending := slices.Clone(c.handbacks) // hand-backs of earlier calls
	var iter *fetcher
	var done chan struct{}
	keep := c.keep
	var nak []carried // carried messages not given out, unless kept
	if !keep {
		nak, c.carry = c.carry, nil
	}
	if c.state < to {
		c.state = to
		iter, c.iter = c.iter, nil
		if c.cancelNext != nil {
			c.cancelNext()
		}
		if c.interrupt != nil {
			close(c.interrupt)
			c.interrupt = nil // the next running spell makes its own
		}
		if iter != nil {
			// Registered before the lock is released, so that a
			// concurrent Pause or Close waits for this hand-back.
			done = make(chan struct{})
			c.handbacks = append(c.handbacks, done)
		}
	}
	c.mu.Unlock()
	if to == stateClosed {
		c.b.removeConsumer(c)
	}

	c.nakCarried(ctx, nak)
	var err error
	if iter != nil {
		err = c.handBack(ctx, iter, keep)
		c.mu.Lock()
		c.handbacks = slices.DeleteFunc(c.handbacks, func(ch chan struct{}) bool { return ch == done })
		c.mu.Unlock()
		close(done)
	}
	for _, ch := range pending {
		if err != nil {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		op := "pause"
		if to == stateClosed {
			op = "close"
		}
		return fmt.Errorf("natsbroker: %s %s: hand back prefetched messages: %w", op, c.name, err)
	}
	return nil
}

// handBack drains iter: it sends no new pull request, waits for the one in
// flight to end (within fetchWait, see fetcher), and naks every message
// that request brought and Next did not return, so the server redelivers
// it at once (to this or another sidecar of the group), or, with keep,
// moves it to the carry for a successor (Keep). If ctx ends first the
// rest is dropped client-side and comes back after AckWait: later, never
// lost.
func (c *consumer) handBack(ctx context.Context, iter *fetcher, keep bool) error {
	iter.Drain()
	n := 0
	for {
		// After Drain, Next returns what the requests in flight bring
		// and, once they are over, ErrMsgIteratorClosed. A Next of the
		// consumer that is still inside iter.Next holds the fetcher's
		// lock; it was cancelled and lets go at once.
		//
		// Without a connection the requests end only on the fetcher's
		// own timer (fetchLost). Then what is buffered is
		// naked (the naks go out on reconnect) and
		// the hand-back ends once the buffer stays empty for
		// handBackIdle; anything arriving later is redelivered after
		// AckWait.
		nctx, cancel := ctx, context.CancelFunc(func() {})
		offline := !c.b.nc.IsConnected()
		if offline {
			nctx, cancel = context.WithTimeout(ctx, handBackIdle)
		}
		m, err := iter.Next(nctx, nil)
		cancel()
		if err == nil {
			c.giveBack(m, keep)
			n++
			continue
		}
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			break
		}
		if offline && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			iter.Stop()
			break
		}
		if ctx.Err() != nil {
			iter.Stop()
			c.log.Warn("hand-back interrupted; remaining prefetched messages return after AckWait",
				"handed_back", n, "error", ctx.Err())
			return ctx.Err()
		}
		// A terminal status (consumer deleted ...) ended the request;
		// the next call reports the fetcher closed.
	}
	if n > 0 {
		c.log.Debug("handed back prefetched messages", "count", n, "kept", keep)
	}
	return nil
}

// giveBack naks m (see handBackDelay) or, with keep, adds it to the carry.
func (c *consumer) giveBack(m *nats.Msg, keep bool) {
	if keep {
		if k, ok := c.carriedOf(m); ok {
			c.mu.Lock()
			c.carry = append(c.carry, k)
			c.mu.Unlock()
			return
		}
	}
	if err := m.NakWithDelay(handBackDelay); err != nil {
		c.log.Debug("nak on hand-back failed; redelivery after AckWait", "error", err)
	}
}

// Resume starts fetching again after Pause. Resuming a running consumer
// does nothing; a closed one gives broker.ErrClosed. It does no network
// round trip: Next sends the first pull request.
func (c *consumer) Resume(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateClosed:
		return fmt.Errorf("natsbroker: resume %s: %w", c.name, broker.ErrClosed)
	case stateRunning:
		return nil
	}
	c.state = stateRunning
	c.keep = false
	if len(c.carry) > 0 {
		c.deferIter = true // Next gives the carry out first
		return nil
	}
	c.iter = newFetcher(c.b.nc, c.cons, c.prefetch)
	return nil
}

// Lag is the messages of the topic the group has not acked: JetStream's
// pending (not yet delivered to any member) plus ack-pending (delivered,
// unanswered), from one consumer info request (broker.Lagger).
func (c *consumer) Lag(ctx context.Context) (int64, error) {
	c.mu.Lock()
	cons := c.cons
	c.mu.Unlock()
	if cons == nil {
		return 0, fmt.Errorf("natsbroker: lag of %s: consumer not created yet: %w", c.name, broker.ErrUnavailable)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("natsbroker: lag of %s: %w", c.name, withSentinel(err))
	}
	return int64(info.NumPending) + int64(info.NumAckPending), nil
}
