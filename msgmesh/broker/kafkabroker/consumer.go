package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/msgmesh/msgmesh/msgmesh/broker"
)

type consumerState int

const (
	stateRunning consumerState = iota
	statePaused
	stateClosed
)

// Tuning of the consumer. See the package doc for the reasons.
const (
	// fetchMaxWait is how long a fetch waits on the broker for new data.
	// kafka-go's partition readers notice a rebalance or Close only
	// between fetches, so it also bounds how long those take.
	fetchMaxWait = 500 * time.Millisecond
	// fetchMaxBytes bounds one fetch response; it must exceed the largest
	// message (1 MiB by default on Kafka and in Publish). kafka-go streams
	// the response from the socket; it does not buffer it whole.
	fetchMaxBytes = 4 << 20
	// Group membership: heartbeats every second, so that the members
	// notice a rebalance quickly; a member that stops heartbeating is
	// dropped after sessionTimeout.
	heartbeatInterval = time.Second
	sessionTimeout    = 10 * time.Second
	rebalanceTimeout  = 10 * time.Second
	joinGroupBackoff  = time.Second
	// commitInterval is the least time between two commits of one
	// consumer: acks arriving meanwhile are committed together.
	commitInterval = 5 * time.Millisecond
	// commitTimeout bounds one commit; finalCommitTimeout the one Close
	// makes (further bounded by Close's ctx).
	commitTimeout      = 10 * time.Second
	finalCommitTimeout = 5 * time.Second
	// Backoff after a failed fetch or commit.
	retryMinBackoff = 100 * time.Millisecond
	retryMaxBackoff = 5 * time.Second
)

// consumer is one group reading one topic through a kafka-go group Reader.
//
// Concurrency. Next is called by one goroutine at a time; Pause, Resume,
// Close, Ack and Nack by any goroutine. Two locks:
//
//   - mu guards the state, the stash, the retry queue and the wake-up of a
//     blocked Next (cancelFetch, wakeAt). It is never held across a
//     network call or a blocking kafka-go call.
//   - tmu guards the commit trackers (parts) and acksClosed. It is a leaf:
//     it may be taken while mu is held (Next records a hand-out under
//     both), never the other way round.
//
// Broker.mu and Broker.tmu are never taken while either is held.
//
// Goroutines: kafka-go's Reader runs its own (group membership, one
// fetcher per assigned partition), stopped by reader.Close; commitLoop is
// the consumer's own, stopped by Close before its final commit.
type consumer struct {
	b      *Broker
	topic  string
	group  string
	name   string
	log    *slog.Logger
	reader *kafka.Reader
	nulls  nullProbe // tells null keys and values from empty ones (nulls.go)

	mu    sync.Mutex
	state consumerState
	// stash holds messages FetchMessage returned while Pause or Close was
	// interrupting it; they are handed out (in order) after Resume.
	stash []kafka.Message
	// retry holds nacked deliveries until they are due.
	retry    retryQueue
	retrySeq uint64
	// cancelFetch wakes a Next blocked in FetchMessage or in a backoff;
	// nil when none is. wakeAt is the retry due time that Next waits
	// for (zero: none), so a Nack due earlier wakes it.
	cancelFetch context.CancelFunc
	wakeAt      time.Time
	// closed is closed when the first Close is over.
	closed chan struct{}

	tmu        sync.Mutex
	parts      map[int]*partitionTracker
	acksClosed bool // set by Close before its final commit

	commitWake chan struct{} // capacity 1: "there may be something to commit"
	stopCommit context.CancelFunc
	commitCtx  context.Context
	commitDone chan struct{}
}

func newConsumer(b *Broker, topic, group string, prefetch int) *consumer {
	c := &consumer{
		b:          b,
		topic:      topic,
		group:      group,
		name:       group + "@" + topic,
		log:        b.log.With("topic", topic, "group", group),
		closed:     make(chan struct{}),
		parts:      make(map[int]*partitionTracker),
		commitWake: make(chan struct{}, 1),
		commitDone: make(chan struct{}),
		nulls:      nullProbe{client: b.client, topic: topic},
	}
	c.commitCtx, c.stopCommit = context.WithCancel(context.Background())
	c.reader = kafka.NewReader(kafka.ReaderConfig{
		Brokers:               b.cfg.Brokers,
		GroupID:               group,
		Topic:                 topic,
		Dialer:                b.dialer,
		QueueCapacity:         prefetch,
		MinBytes:              1,
		MaxBytes:              fetchMaxBytes,
		MaxWait:               fetchMaxWait,
		ReadLagInterval:       -1,
		HeartbeatInterval:     heartbeatInterval,
		CommitInterval:        0, // synchronous commits, made by commitLoop
		SessionTimeout:        sessionTimeout,
		RebalanceTimeout:      rebalanceTimeout,
		JoinGroupBackoff:      joinGroupBackoff,
		WatchPartitionChanges: true,
		StartOffset:           kafka.FirstOffset,
		ErrorLogger:           warnLogger(b.log.With("client", "reader", "topic", topic, "group", group)),
	})
	return c
}

// start runs the committer. Called once, after Consume registered c.
func (c *consumer) start() {
	go c.commitLoop()
}

// Next returns, in this order: a nacked message whose delay is over, a
// message stashed by Pause, the next message from the reader. It blocks
// until one is available, ctx ends, or Pause or Close is called.
// Messages the reader reads again after a rebalance that this consumer
// already handed out are skipped (their first delivery is still answered).
func (c *consumer) Next(ctx context.Context) (broker.Delivery, error) {
	var backoff time.Duration
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("kafkabroker: next %s: %w", c.name, err)
		}
		c.mu.Lock()
		switch c.state {
		case statePaused:
			c.mu.Unlock()
			return nil, fmt.Errorf("kafkabroker: next %s: %w", c.name, broker.ErrPaused)
		case stateClosed:
			c.mu.Unlock()
			return nil, fmt.Errorf("kafkabroker: next %s: %w", c.name, broker.ErrClosed)
		}
		if d, ok := c.retry.popDue(time.Now()); ok {
			c.mu.Unlock()
			return d.again(), nil
		}
		if len(c.stash) > 0 {
			m := c.stash[0]
			c.stash[0] = kafka.Message{}
			c.stash = c.stash[1:]
			d := c.handOutLocked(&m)
			c.mu.Unlock()
			if d != nil {
				return c.withNulls(ctx, d), nil
			}
			continue
		}
		// Wait in the reader, but no longer than until the next nacked
		// message is due; Pause, Close and an earlier Nack cancel fctx.
		var fctx context.Context
		var cancel context.CancelFunc
		if due, ok := c.retry.nextDue(); ok {
			fctx, cancel = context.WithDeadline(ctx, due)
			c.wakeAt = due
		} else {
			fctx, cancel = context.WithCancel(ctx)
		}
		c.cancelFetch = cancel
		c.mu.Unlock()

		m, err := c.reader.FetchMessage(fctx)

		c.mu.Lock()
		c.cancelFetch, c.wakeAt = nil, time.Time{}
		var d *delivery
		if err == nil {
			switch c.state {
			case stateRunning:
				d = c.handOutLocked(&m)
			case statePaused:
				// Pause interrupted the fetch as it returned a message:
				// keep it for Resume. (After Close it is dropped,
				// uncommitted, like the reader's queue.)
				c.stash = append(c.stash, m)
			}
		}
		c.mu.Unlock()
		interrupted := fctx.Err() != nil
		cancel()
		switch {
		case d != nil:
			return c.withNulls(ctx, d), nil
		case err == nil:
			backoff = 0
			continue
		case ctx.Err() != nil:
			return nil, fmt.Errorf("kafkabroker: next %s: %w", c.name, ctx.Err())
		case interrupted:
			continue // Pause, Close, a Nack, or a redelivery became due
		case errors.Is(err, io.EOF):
			// The reader is closed: only Close does that.
			return nil, fmt.Errorf("kafkabroker: next %s: %w", c.name, broker.ErrClosed)
		}
		// kafka-go gave up on something for now (coordinator or leader
		// not reachable after its own retries): keep waiting, like the
		// other adapters do through outages.
		backoff = min(max(2*backoff, retryMinBackoff), retryMaxBackoff)
		c.log.Warn("fetch failed; retrying", "error", err, "backoff", backoff)
		c.sleep(ctx, backoff)
	}
}

// sleep waits d, or less if ctx ends or Pause, Close or a Nack wakes it.
func (c *consumer) sleep(ctx context.Context, d time.Duration) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	c.mu.Lock()
	if c.state != stateRunning {
		c.mu.Unlock()
		return
	}
	c.cancelFetch = cancel
	c.mu.Unlock()
	<-wctx.Done()
	c.mu.Lock()
	c.cancelFetch = nil
	c.mu.Unlock()
}

// handOutLocked records m in its partition's tracker and returns its
// delivery, or nil if this consumer handed it out before (a re-read after
// a rebalance). c.mu is held on entry.
// withNulls tells d's null key or value from an empty one (nulls.go). If
// the record cannot be looked up, d keeps the Reader's view (no key, an
// empty value), with a warning.
func (c *consumer) withNulls(ctx context.Context, d *delivery) *delivery {
	if err := c.nulls.resolve(ctx, d); err != nil {
		c.log.Warn("could not tell a null key or value from an empty one; delivering it as no key and an empty value",
			"partition", d.partition, "offset", d.offset, "error", err)
	}
	return d
}

func (c *consumer) handOutLocked(m *kafka.Message) *delivery {
	c.tmu.Lock()
	p := c.parts[m.Partition]
	if p == nil {
		p = new(partitionTracker)
		c.parts[m.Partition] = p
	}
	fresh := p.handOut(m.Offset)
	c.tmu.Unlock()
	if !fresh {
		return nil
	}
	return c.newDelivery(m)
}

// ack records an ack and wakes the committer. It returns false when the
// consumer is closed (the ack cannot be committed any more).
func (c *consumer) ack(partition int, offset int64) bool {
	c.tmu.Lock()
	if c.acksClosed {
		c.tmu.Unlock()
		return false
	}
	if p := c.parts[partition]; p != nil {
		p.ack(offset)
	}
	c.tmu.Unlock()
	select {
	case c.commitWake <- struct{}{}:
	default:
	}
	return true
}

// nack queues d for redelivery after delay, and wakes a blocked Next if d
// is due before what it waits for.
func (c *consumer) nack(d *delivery, delay time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return
	}
	due := time.Now().Add(delay)
	c.retrySeq++
	c.retry.push(retryItem{due: due, seq: c.retrySeq, d: d})
	if c.cancelFetch != nil && (c.wakeAt.IsZero() || due.Before(c.wakeAt)) {
		c.cancelFetch()
	}
}

// commitLoop commits what the trackers allow, at most every
// commitInterval, until Close stops it.
func (c *consumer) commitLoop() {
	defer close(c.commitDone)
	var last time.Time
	var backoff time.Duration
	for {
		select {
		case <-c.commitWake:
		case <-c.commitCtx.Done():
			return
		}
		if wait := max(commitInterval-time.Since(last), backoff); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.commitCtx.Done():
				t.Stop()
				return
			}
		}
		last = time.Now()
		err := c.commit(c.commitCtx)
		if err == nil {
			backoff = 0
			continue
		}
		if c.commitCtx.Err() != nil {
			return
		}
		backoff = min(max(2*backoff, retryMinBackoff), retryMaxBackoff)
		level := slog.LevelWarn
		if rebalancing(err) {
			level = slog.LevelInfo // expected while the group rebalances
		}
		c.log.Log(c.commitCtx, level, "commit failed; retrying", "error", err, "backoff", backoff)
		select {
		case c.commitWake <- struct{}{}:
		default:
		}
	}
}

// rebalancing reports whether a commit failed because the group is
// rebalancing (the next generation's commit will carry it).
func rebalancing(err error) bool {
	return errors.Is(err, kafka.RebalanceInProgress) ||
		errors.Is(err, kafka.IllegalGeneration) ||
		errors.Is(err, kafka.UnknownMemberId) ||
		errors.Is(err, kafka.NotCoordinatorForGroup)
}

// commit commits, for each partition, the offset its tracker allows if it
// moved since the last commit. kafka-go's CommitMessages commits
// message.Offset+1, so each message names the offset before the target.
func (c *consumer) commit(ctx context.Context) error {
	c.tmu.Lock()
	var msgs []kafka.Message
	for part, p := range c.parts {
		if t, ok := p.toCommit(); ok {
			msgs = append(msgs, kafka.Message{Topic: c.topic, Partition: part, Offset: t - 1})
		}
	}
	c.tmu.Unlock()
	if len(msgs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	if err := c.reader.CommitMessages(ctx, msgs...); err != nil {
		return err
	}
	c.tmu.Lock()
	for _, m := range msgs {
		c.parts[m.Partition].committedTo(m.Offset + 1)
	}
	c.tmu.Unlock()
	return nil
}

// Pause stops handing out messages: Next returns broker.ErrPaused, and a
// Next blocked meanwhile returns it at once. The consumer stays in the
// group and keeps its partitions, so acks that arrive while paused are
// still committed; kafka-go's reader stops fetching once its queue
// (ConsumerSpec.Prefetch messages) is full. What it fetched stays queued
// for Resume; if Close follows instead, it is dropped uncommitted and the
// group reads it again from the last commit. Idempotent; pausing a closed
// consumer does nothing.
func (c *consumer) Pause(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateRunning {
		c.state = statePaused
		if c.cancelFetch != nil {
			c.cancelFetch()
		}
	}
	return nil
}

// Resume undoes Pause. Resuming a running consumer does nothing; a closed
// one gives broker.ErrClosed.
func (c *consumer) Resume(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateClosed:
		return fmt.Errorf("kafkabroker: resume %s: %w", c.name, broker.ErrClosed)
	case statePaused:
		c.state = stateRunning
	}
	return nil
}

// Close stops the consumer for good: a blocked Next returns
// broker.ErrClosed, the committer stops, a final commit covers every
// contiguously acked offset, and the reader leaves the group (kafka-go
// waits for its fetchers, up to fetchMaxWait). Messages fetched or nacked
// but not acked are dropped uncommitted: the group reads them again. The
// group's committed offsets stay on the cluster. ctx bounds the wait; if
// it ends first, the reader finishes closing in the background (Broker
// Close waits for it). Idempotent: a second Close waits for the first.
func (c *consumer) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		select {
		case <-c.closed:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("kafkabroker: close %s: %w", c.name, ctx.Err())
		}
	}
	c.state = stateClosed
	if c.cancelFetch != nil {
		c.cancelFetch()
	}
	c.stash, c.retry = nil, nil
	c.mu.Unlock()
	defer close(c.closed)
	c.b.removeConsumer(c)

	c.stopCommit()
	<-c.commitDone
	c.tmu.Lock()
	c.acksClosed = true
	c.tmu.Unlock()

	var errs []error
	fctx, cancel := context.WithTimeout(ctx, finalCommitTimeout)
	if err := c.commit(fctx); err != nil {
		c.log.Warn("final commit failed; the group will read acked messages again", "error", err)
		errs = append(errs, fmt.Errorf("kafkabroker: close %s: final commit: %w", c.name, withSentinel(err)))
	}
	cancel()

	done := make(chan struct{})
	go func() {
		defer c.b.wg.Done() // added by Consume
		defer close(done)
		if err := c.reader.Close(); err != nil {
			c.log.Warn("closing reader", "error", err)
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("kafkabroker: close %s: leave group: %w", c.name, ctx.Err()))
	}
	return errors.Join(errs...)
}
