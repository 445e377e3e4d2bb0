package rocketmqbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"

	"github.com/msgmesh/msgmesh/broker"
)

type consumerState int

const (
	stateRunning consumerState = iota
	statePaused
	// stateClosing: Close was called while deliveries were outstanding;
	// the client stays up so that their acks still commit.
	stateClosing
	// stateShut: the client is shut down (or shutting down).
	stateShut
)

// pollTimeout is the timeout Next passes to the client's Poll; the Next
// context, which Pause and Close cancel, is what really ends a wait.
const pollTimeout = time.Hour

// shutdownOpsWait bounds how long a shutdown waits for client calls in
// progress (acks, send-backs, offset commits). Only a send-back retrying
// against an unreachable broker takes that long; it is abandoned, and the
// message is redelivered from the committed offset.
const shutdownOpsWait = 5 * time.Second

// expireNackTimeout bounds the send-back of a delivery that outlived
// AckWait.
const expireNackTimeout = 30 * time.Second

// pullClient is what the adapter uses of the client's pull consumer.
type pullClient interface {
	Poll(ctx context.Context, timeout time.Duration) (*rmqconsumer.ConsumeRequest, error)
	ACK(ctx context.Context, cr *rmqconsumer.ConsumeRequest, result rmqconsumer.ConsumeResult)
	PersistOffset(ctx context.Context, topic string) error
	Shutdown() error
}

// batch is what the adapter acks to the client at once: one message of a
// request returned by the client's Poll (ConsumeRequest.Split), so that
// an ack moves the queue's offset past that message alone and a nack
// sends back only that message. The type keeps the general form (it is
// acked when every message of it is settled: success if all were acked,
// retry-later if one was nacked).
type batch struct {
	cr        *rmqconsumer.ConsumeRequest
	remaining int
	nacked    bool
	delay     time.Duration
	ds        []*delivery
	// one backs ds for the batch of one message Next makes, so that a
	// message costs no slice allocation of its own.
	one [1]*delivery
}

// consumer is one group on one topic: a RocketMQ pull consumer of its own
// (own client instance, so its connections close when it closes and the
// broker rebalances the group at once).
//
// Concurrency. Next is called by one goroutine at a time; Pause, Resume,
// Close and the deliveries' Ack and Nack by any goroutine. mu guards the
// fields below it and is held only briefly, never across a client call.
// Every client call that talks to the broker (ACK, PersistOffset) is
// registered in ops while the state is not stateShut, and the shutdown
// waits for ops before it shuts the client down, so no client call
// overlaps the shutdown. Broker.open is never taken while mu is held.
type consumer struct {
	b       *Broker
	topic   string // msgmesh topic
	rtopic  string // RocketMQ topic
	group   string // msgmesh group
	rgroup  string // RocketMQ consumer group
	ackWait time.Duration
	log     *slog.Logger
	pc      pullClient

	mu    sync.Mutex
	state consumerState
	// pending holds messages polled but not yet returned by Next, in
	// queue order; Next returns them first.
	pending []*delivery
	// unsent: what pending held when Close or Release stopped the
	// consumer. Unacked, they keep each queue's commit before them; the
	// shutdown's tokens list those a successor would otherwise take for
	// settled (handover.go, queueTokenLocked).
	unsent []*delivery
	// cancelNext interrupts the Poll of a Next in progress; nil when none.
	cancelNext context.CancelFunc
	// outstanding are the deliveries Next returned that are not settled.
	outstanding map[*delivery]struct{}
	ops         sync.WaitGroup
	// persistMu serialises the adapter's offset commits (persist).
	persistMu sync.Mutex
	// shutDone is closed once the client is shut down.
	shutDone chan struct{}

	// For a hot upgrade (handover.go). handedNext: per queue, one past
	// the last offset handed out; sendingBack: nacked batches whose
	// send-back is in progress; returned: deliveries Return took back
	// that Next has not handed out again; released: per queue, the
	// offset the shutdown committed (set by it); again: deliveries to
	// deliver again after a handover (nacked or returned after the
	// shutdown, returned and not handed out again before it, or whose
	// send-back did not complete), with their next Redelivered; inh: per
	// queue, what a predecessor handed over (nil: nothing, or read past
	// it).
	handedNext  map[queueKey]int64
	sendingBack map[*batch]struct{}
	returned    map[*delivery]struct{}
	released    map[queueKey]int64
	again       map[*delivery]int
	inh         map[queueKey]*inheritance
}

func (c *consumer) stateErrLocked() error {
	switch c.state {
	case statePaused:
		return broker.ErrPaused
	case stateClosing, stateShut:
		return broker.ErrClosed
	}
	return nil
}

// beginOpLocked registers a client call; false once the client is shut
// down. c.mu held on entry.
func (c *consumer) beginOpLocked() bool {
	if c.state == stateShut {
		return false
	}
	c.ops.Add(1)
	return true
}

// Next returns the next message of the group's queues, blocking until one
// is available, ctx ends, or the consumer is paused or closed. Messages
// of one queue come in queue order. Next keeps blocking through broker
// outages (the client retries its pulls).
func (c *consumer) Next(ctx context.Context) (broker.Delivery, error) {
	for {
		c.mu.Lock()
		if err := c.stateErrLocked(); err != nil {
			c.mu.Unlock()
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("rocketmqbroker: next: %w", err)
		}
		if len(c.pending) > 0 {
			d := c.handOutLocked()
			c.mu.Unlock()
			return d, nil
		}
		nctx, cancel := context.WithCancel(ctx)
		c.cancelNext = cancel
		c.mu.Unlock()

		cr, err := c.pc.Poll(nctx, pollTimeout)
		cancel()

		c.mu.Lock()
		c.cancelNext = nil
		var after []func()
		if err == nil && cr != nil && c.state != stateClosing && c.state != stateShut {
			// Kept even when Pause came meanwhile: Next returns it first
			// after Resume, so the queue order holds. After Close it is
			// dropped unacked, and the group gets it again.
			// One batch per message: a pull brings up to the pull
			// batch size, but each message is settled with the client
			// on its own (Split), as with a pull of one.
			for _, part := range cr.Split() {
				b := &batch{cr: part, remaining: 1}
				d := c.newDelivery(b, part.GetMsgList()[0])
				b.one[0] = d
				b.ds = b.one[:]
				deliver, f := c.inheritLocked(d)
				if deliver {
					c.pending = append(c.pending, d)
				} else {
					c.handedNext[d.qk] = max(c.handedNext[d.qk], d.offset+1)
				}
				if f != nil {
					after = append(after, f)
				}
			}
		}
		c.mu.Unlock()
		for _, f := range after {
			f()
		}
		// The loop head reports ctx, pause and close; ErrNoNewMsg (the
		// poll timed out, or its queue was rebalanced away) just loops.
	}
}

// handOutLocked returns the first pending delivery and starts its AckWait
// timer. c.mu held on entry.
func (c *consumer) handOutLocked() *delivery {
	d := c.pending[0]
	c.pending[0] = nil
	c.pending = c.pending[1:]
	delete(c.returned, d)
	d.settled = false // a returned one is answerable again
	c.outstanding[d] = struct{}{}
	c.handedNext[d.qk] = max(c.handedNext[d.qk], d.offset+1)
	d.timer = time.AfterFunc(c.ackWait, d.expire)
	return d
}

// Return implements broker.Returner: d, outstanding and unanswered, goes
// back to the front of the polled messages, so Next hands it out first
// after Resume as the same attempt (its batch is not acked to the client,
// so no send-back counts one, and the queue's commit stays before it).
// After Close it is dropped unacked like the other polled messages (the
// group gets it again, uncounted); after the shutdown (Release) or with
// it, it is listed for a successor to deliver again with its count
// (Token). Until Next hands it out again, an answer to d is refused
// (ErrSettled).
//
// Refused while AckWait's expiry is sending d back, and when Next handed
// out a later message of d's queue since d: the queue's commit stays
// before a returned message, so a successor reading the queue from there
// without a token of it (no delivery of the queue held at the handover)
// would deliver those again if they were acked; a send-back (Nack) moves
// the commit on. The sidecar returns only the last delivery Next gave.
func (c *consumer) Return(bd broker.Delivery) bool {
	d, ok := broker.As[*delivery](bd)
	if !ok || d.c != c {
		return false
	}
	c.mu.Lock()
	if _, out := c.outstanding[d]; !out || d.settled || c.handedNext[d.qk] != d.offset+1 {
		c.mu.Unlock()
		return false
	}
	// The shutdown stopped every timer; before it, a timer that cannot be
	// stopped has fired, and expire is settling d.
	if c.state != stateShut && d.timer != nil && !d.timer.Stop() {
		c.mu.Unlock()
		return false
	}
	delete(c.outstanding, d)
	d.settled = true // until handed out again; an expire that fired before a shutdown finds it answered
	switch c.state {
	case stateShut:
		c.again[d] = d.redelivered
	case stateClosing:
		c.returned[d] = struct{}{}
	default:
		c.returned[d] = struct{}{}
		c.pending = slices.Insert(c.pending, 0, d)
	}
	c.mu.Unlock()
	c.afterSettle() // the last outstanding delivery of a paused or closing consumer
	return true
}

// Pause stops handing out messages: Next returns broker.ErrPaused until
// Resume. Messages polled but not returned stay with the consumer, unacked,
// and come first after Resume (the client stops pulling once its small
// per-queue buffers are full). Deliveries already returned stay valid.
// Pause commits the group's offsets to the broker at once, and again when
// the last outstanding delivery is settled, so that a consumer of the
// group started elsewhere (an upgraded sidecar) starts exactly after what
// was acked. Pausing a paused or closed consumer does nothing.
func (c *consumer) Pause(ctx context.Context) error {
	c.mu.Lock()
	if c.state != stateRunning {
		c.mu.Unlock()
		return nil
	}
	c.state = statePaused
	if c.cancelNext != nil {
		c.cancelNext()
	}
	ok := c.beginOpLocked()
	c.mu.Unlock()
	if ok {
		c.persist()
	}
	return nil
}

// Resume undoes Pause. Resuming a running consumer does nothing; a closed
// one gives broker.ErrClosed.
func (c *consumer) Resume(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case statePaused:
		c.state = stateRunning
	case stateClosing, stateShut:
		return fmt.Errorf("rocketmqbroker: resume %s: %w", c.rgroup, broker.ErrClosed)
	}
	return nil
}

// Close stops the consumer for good: Next returns broker.ErrClosed, and
// messages polled but not returned are dropped unacked (the group gets
// them again). If deliveries are outstanding, the client stays connected
// until each is acked or nacked (or handed back after AckWait), so that
// their acks still commit, and then shuts down; Close waits for that until
// ctx ends, and returns nil either way (the shutdown then finishes in the
// background; Broker.Close forces it). Shutting down commits the offsets
// and closes the client's connections, which makes the broker give the
// consumer's queues to the group's other members. Idempotent.
func (c *consumer) Close(ctx context.Context) error {
	c.mu.Lock()
	switch c.state {
	case stateRunning, statePaused:
		if c.cancelNext != nil {
			c.cancelNext()
		}
		c.unsent, c.pending = append(c.unsent, c.pending...), nil
		if len(c.outstanding) == 0 {
			c.state = stateShut
			c.mu.Unlock()
			c.shutdown()
			return nil
		}
		c.state = stateClosing
		c.log.Debug("closing once outstanding deliveries are settled", "outstanding", len(c.outstanding))
	}
	c.mu.Unlock()
	select {
	case <-c.shutDone:
	case <-ctx.Done():
	}
	return nil
}

// forceClose shuts the client down now, whatever is outstanding (the acks
// of outstanding deliveries then fail and their messages are redelivered).
func (c *consumer) forceClose() {
	c.mu.Lock()
	if c.state == stateShut {
		c.mu.Unlock()
		<-c.shutDone
		return
	}
	c.state = stateShut
	if c.cancelNext != nil {
		c.cancelNext()
	}
	c.unsent, c.pending = append(c.unsent, c.pending...), nil
	c.mu.Unlock()
	c.shutdown()
}

// shutdown shuts the client down. The state is stateShut already, so no
// new client call starts; the ones in progress are waited for (up to
// shutdownOpsWait). The client's shutdown commits the offsets of its
// queues: for each, the lowest offset not yet acked.
func (c *consumer) shutdown() {
	waitGroupFor(&c.ops, shutdownOpsWait)
	c.mu.Lock()
	for d := range c.outstanding {
		d.timer.Stop()
	}
	c.noteShutdownLocked()
	c.mu.Unlock()
	raceFence()
	if err := c.pc.Shutdown(); err != nil {
		c.log.Warn("client shutdown failed", "error", err)
	}
	c.b.removeConsumer(c)
	close(c.shutDone)
	c.log.Debug("consumer shut down")
}

// waitGroupFor waits for wg, at most d.
func waitGroupFor(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// persist commits the consumer's offsets to the broker (one-way). The
// caller registered the call in c.ops.
func (c *consumer) persist() {
	defer c.ops.Done()
	// One commit at a time: the client reads each queue's offset and then
	// sends it, so two commits in parallel (Pause's and the one after the
	// last settle) could reach the broker in the wrong order and move the
	// group's offset back, and an upgraded sidecar would deliver acked
	// messages again.
	c.persistMu.Lock()
	defer c.persistMu.Unlock()
	if err := c.pc.PersistOffset(context.Background(), c.rtopic); err != nil {
		c.log.Debug("committing offsets failed; the client retries every 5 s", "error", err)
	}
}

// afterSettle runs after a delivery was settled: the last outstanding
// delivery of a paused consumer commits the offsets, and that of a closing
// one starts the shutdown.
func (c *consumer) afterSettle() {
	c.mu.Lock()
	var persist, shut bool
	if len(c.outstanding) == 0 {
		switch c.state {
		case statePaused:
			persist = c.beginOpLocked()
		case stateClosing:
			c.state = stateShut
			shut = true
		}
	}
	c.mu.Unlock()
	if persist {
		c.persist()
	}
	if shut {
		c.b.goShutdown(c)
	}
}

// ackBatch hands the settled batch to the client: ACK success commits it
// (in memory; the offsets reach the broker with the client's 5 s commit
// timer, Pause or the shutdown); ACK retry-later sends it back to
// the group's retry topic with the delay level of the longest nack delay.
// The caller registered the call in c.ops; ackBatch ends it. A send-back
// waits for the broker and is retried by the client every 5 s while it
// fails; the wait ends with ctx, the send-back goes on.
func (c *consumer) ackBatch(ctx context.Context, b *batch) error {
	if !b.nacked {
		defer c.ops.Done()
		c.pc.ACK(ctx, b.cr, rmqconsumer.ConsumeSuccess)
		return nil
	}
	lvl := delayLevel(b.delay)
	done := make(chan struct{})
	c.mu.Lock()
	c.sendingBack[b] = struct{}{}
	c.mu.Unlock()
	go func() {
		defer c.ops.Done()
		defer close(done)
		c.pc.ACK(rmqconsumer.WithDelayLevel(context.Background(), lvl), b.cr, rmqconsumer.ConsumeRetryLater)
		c.mu.Lock()
		if c.state != stateShut { // else the shutdown counted it as not sent back
			delete(c.sendingBack, b)
		}
		c.mu.Unlock()
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("send-back still in progress (the message is not lost): %w", withSentinel(ctx.Err()))
	}
}

// withSentinel puts classify's sentinel in front of err.
func withSentinel(err error) error {
	if s := classify(err); s != nil {
		return fmt.Errorf("%w: %w", s, err)
	}
	return err
}

// errDeliveryClosed is the cause when an ack or nack comes after the
// client was shut down.
var errDeliveryClosed = errors.New("the consumer was shut down before; the group gets the message again")
