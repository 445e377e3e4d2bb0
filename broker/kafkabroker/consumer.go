package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/msgmesh/msgmesh/broker"
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
	fetchMaxWait = 500 * time.Millisecond
	// fetchMaxBytes bounds one fetch response, which kafka-go reads whole
	// into pooled memory before the fetcher hands its records out: about
	// 900 messages of 1 KiB. A larger first batch (a message above it)
	// still comes whole: brokers answer a fetch with at least one batch
	// (fetch v3 and later).
	fetchMaxBytes = 1 << 20
	// Group membership: heartbeats every second, so that the members
	// notice a rebalance quickly; a member that stops heartbeating is
	// dropped after sessionTimeout; the coordinator waits rebalanceTimeout
	// for this member to rejoin when the group rebalances.
	heartbeatInterval = time.Second
	sessionTimeout    = 10 * time.Second
	rebalanceTimeout  = 30 * time.Second
	// partitionWatchInterval: how often a group leader looks for new
	// partitions of the topics the group subscribes to.
	partitionWatchInterval = 5 * time.Second
	// commitInterval is the least time between two commits of one
	// consumer: acks arriving meanwhile are committed together.
	commitInterval = 5 * time.Millisecond
	// commitTimeout bounds one commit; finalCommitTimeout the one Close
	// makes (further bounded by Close's ctx).
	commitTimeout      = 10 * time.Second
	finalCommitTimeout = 5 * time.Second
	// Backoff after a failed fetch, commit or join.
	retryMinBackoff = 100 * time.Millisecond
	retryMaxBackoff = 5 * time.Second
	// maxImmediateRejoins bounds the joins in a row made without backoff.
	maxImmediateRejoins = 5
)

// errNotMember: a commit was due while the consumer holds no generation of
// its group (joining, or rebalancing); it is made after the next join.
var errNotMember = errors.New("not a member of the group right now")

// consumer is one group member reading one topic: a member of the Kafka
// consumer group (member.go) that the group's assignment gives
// partitions, each read by a fetcher of its own (fetch: this consumer,
// not kafka-go, manages the membership and the offsets).
//
// Concurrency. Next is called by one goroutine at a time; Pause, Resume,
// Close, Ack and Nack by any goroutine. Two locks:
//
//   - mu guards the state, the stash, the retry queue, the parked
//     deliveries and the wake-up of a blocked Next (cancelFetch, wakeAt).
//     It is never held across a network call or a blocking kafka-go call.
//   - tmu guards the commit trackers (parts), the generation (gen, epoch)
//     and acksClosed. It is a leaf: it may be taken while mu is held,
//     never the other way round.
//
// Broker.open and Broker.tmu are never taken while either is held.
//
// Goroutines: groupLoop (membership: join, heartbeats, rebalances, and on
// Close the final commit and LeaveGroup), one fetcher per assigned
// partition (started and stopped by groupLoop around each generation),
// and commitLoop. Close stops commitLoop, then groupLoop, which stops
// the fetchers; Broker.wg counts groupLoop.
type consumer struct {
	b        *Broker
	topic    string
	group    string // the Kafka group
	name     string
	log      *slog.Logger
	prefetch int
	// msgs holds fetched messages Next has not taken: at most prefetch.
	msgs chan fetched

	mu    sync.Mutex
	state consumerState
	// stash holds messages Next received while Pause was interrupting
	// it; they are handed out (in order) after Resume.
	stash []fetched
	// retry holds the next deliveries of nacked and returned messages
	// until they are due; parked those due while their partition is
	// between two generations (kept for the next one if the partition
	// stays here).
	retry    retryQueue
	retrySeq uint64
	parked   []*delivery
	// cancelFetch wakes a Next blocked on msgs or on a due time; nil
	// when none is. wakeAt is the retry due time that Next waits for
	// (zero: none), so a Nack due earlier wakes it.
	cancelFetch context.CancelFunc
	wakeAt      time.Time
	// closed is closed when the first Close is over.
	closed chan struct{}

	tmu sync.Mutex
	// parts has one tracker per partition this consumer owns, or owned
	// in the previous generation until the next one is assigned.
	parts map[int]*partitionTracker
	// gen is the generation offsets are committed in (generation -1:
	// none); epoch counts assignments, so that messages fetched in an
	// earlier generation are never handed out in a later one.
	gen        generation
	epoch      uint64
	acksClosed bool // set by Close before its final commit
	// inh holds, per partition, what a predecessor process handed over
	// (handover.go) until this consumer has read past it.
	inh map[int]*inheritance

	commitWake chan struct{} // capacity 1: "there may be something to commit"
	stopCommit context.CancelFunc
	commitCtx  context.Context
	commitDone chan struct{}

	groupCtx  context.Context
	stopGroup context.CancelFunc
	groupDone chan struct{}
	finalErr  error // the final commit's error; written by groupLoop before groupDone

	// fetchers of the current generation; owned by groupLoop.
	fetchers []*fetcher
	// leader: this member assigned the current generation (tests, logs).
	leader atomic.Bool
}

// generation is a generation of the group as this member is in it.
type generation struct {
	memberID string
	id       int32
}

// fetched is a message a fetcher read, with the tracker and epoch of the
// assignment it was read under.
type fetched struct {
	m     kafka.Message
	t     *partitionTracker
	epoch uint64
	// pre is the message's delivery when the fetcher handed it out
	// already (a partition read under an inheritance, handover.go).
	pre *delivery
}

// fetcher reads one assigned partition into consumer.msgs (fetch).
type fetcher struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newConsumer(b *Broker, topic, group string, prefetch int) *consumer {
	c := &consumer{
		b:          b,
		topic:      topic,
		group:      group,
		name:       group + "@" + topic,
		log:        b.log.With("topic", topic, "group", group),
		prefetch:   prefetch,
		msgs:       make(chan fetched, prefetch),
		closed:     make(chan struct{}),
		parts:      make(map[int]*partitionTracker),
		inh:        make(map[int]*inheritance),
		gen:        generation{id: -1},
		commitWake: make(chan struct{}, 1),
		commitDone: make(chan struct{}),
		groupDone:  make(chan struct{}),
	}
	c.commitCtx, c.stopCommit = context.WithCancel(context.Background())
	c.groupCtx, c.stopGroup = context.WithCancel(context.Background())
	return c
}

// start runs the committer and the group membership. Called once, after
// Consume registered c (and added groupLoop to Broker.wg).
func (c *consumer) start() {
	go c.commitLoop()
	go c.groupLoop()
}

// Next returns, in this order: a nacked message whose delay is over (or
// a returned one), a message stashed by Pause, the next fetched message. It blocks until one
// is available, ctx ends, or Pause or Close is called. Messages fetched
// under an earlier assignment, and messages of a partition read again
// that this consumer already handed out, are skipped (the first delivery
// of the latter is still answered).
func (c *consumer) Next(ctx context.Context) (broker.Delivery, error) {
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
		if d := c.popRetryLocked(time.Now()); d != nil {
			c.mu.Unlock()
			return d, nil
		}
		if len(c.stash) > 0 {
			f := c.stash[0]
			c.stash[0] = fetched{}
			c.stash = c.stash[1:]
			d := c.handOutLocked(&f)
			c.mu.Unlock()
			if d != nil {
				return d, nil
			}
			continue
		}
		// Wait for a message, but no longer than until the next nacked
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

		var f fetched
		got := false
		select {
		case f = <-c.msgs:
			got = true
		case <-fctx.Done():
		}

		c.mu.Lock()
		c.cancelFetch, c.wakeAt = nil, time.Time{}
		var d *delivery
		if got {
			switch c.state {
			case stateRunning:
				d = c.handOutLocked(&f)
			case statePaused:
				// Pause interrupted the wait as a message came: keep
				// it for Resume.
				c.stash = append(c.stash, f)
			default:
				// After Close it is dropped, uncommitted, like the
				// rest of msgs.
				c.dropLocked(&f)
			}
		}
		c.mu.Unlock()
		cancel()
		switch {
		case d != nil:
			return d, nil
		case got:
			continue
		case ctx.Err() != nil:
			return nil, fmt.Errorf("kafkabroker: next %s: %w", c.name, ctx.Err())
		}
		// Pause, Close, a Nack, or a redelivery became due.
	}
}

// popRetryLocked returns the earliest due delivery of the retry queue of
// a partition this consumer owns. Due deliveries of a partition between two
// generations are parked; those of a partition the group gave to another
// member are dropped (it reads them from the last commit). c.mu is held.
func (c *consumer) popRetryLocked(now time.Time) *delivery {
	for {
		d, ok := c.retry.popDue(now)
		if !ok {
			return nil
		}
		c.tmu.Lock()
		current := c.parts[d.partition] == d.t
		owned := current && d.t.owned
		if owned {
			d.t.handedAgain(d.offset)
		}
		c.tmu.Unlock()
		switch {
		case owned:
			return d
		case current:
			c.parked = append(c.parked, d)
		}
	}
}

// handOutLocked records f's message in its partition's tracker and
// returns its delivery, or nil if it was fetched under an earlier
// assignment or this consumer handed it out before (a re-read). c.mu is
// held on entry.
func (c *consumer) handOutLocked(f *fetched) *delivery {
	c.tmu.Lock()
	t := f.t
	current := c.parts[f.m.Partition] == t && t.owned && f.epoch == c.epoch
	if f.pre != nil {
		c.tmu.Unlock()
		if !current {
			c.dropLocked(f)
			return nil
		}
		return f.pre
	}
	fresh := current && t.handOut(f.m.Offset)
	c.tmu.Unlock()
	if !fresh {
		return nil
	}
	return c.newDelivery(&f.m, t)
}

// dropLocked lets go of f, fetched and not handed out by Next. One the
// fetcher handed out already (f.pre: read under an inheritance, see
// fetchInherited) is in its tracker as handed out, below offsets the
// fetcher may have settled since, so that the tracker holds the commit
// back for it and would count it as held by an app at a handover: it
// goes to the retry queue as the same attempt, like a Return, to be
// handed out again or, after Close, listed again in the partition's
// tokens. c.mu is held.
func (c *consumer) dropLocked(f *fetched) {
	if f.pre != nil {
		c.requeueLocked(f.pre, f.pre.redelivered, time.Now())
	}
}

// ack records an ack in the tracker the message was handed out under and
// wakes the committer. It returns false when the consumer is closed (the
// ack cannot be committed any more). An ack for a partition the group
// gave to another member lands in a tracker no longer used: it is not
// committed (the new owner reads the message again).
func (c *consumer) ack(t *partitionTracker, offset int64) bool {
	c.tmu.Lock()
	t.ack(offset) // after Close too: a handover (Token) tells the successor
	if c.acksClosed {
		c.tmu.Unlock()
		return false
	}
	c.tmu.Unlock()
	c.wakeCommitter()
	return true
}

func (c *consumer) wakeCommitter() {
	select {
	case c.commitWake <- struct{}{}:
	default:
	}
}

// nack queues d's message for redelivery after delay, and wakes a
// blocked Next if it is due before what it waits for.
func (c *consumer) nack(d *delivery, delay time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requeueLocked(d, d.redelivered+1, time.Now().Add(delay))
}

// Return implements broker.Returner: d's message goes back to the retry
// queue, due now, as the same attempt (Redelivered unchanged), so Next
// hands it out first after Resume. After Close (or Pause then Close) it
// is recorded the same way for a handover: a token lists it to be
// delivered again with the same count, and without one the successor
// reads it from the commit, which it holds back. d itself is answered by
// the Return: the message comes again as a new delivery.
func (c *consumer) Return(bd broker.Delivery) bool {
	d, ok := broker.As[*delivery](bd)
	if !ok || d.c != c {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !d.answered.CompareAndSwap(false, true) {
		return false
	}
	c.requeueLocked(d, d.redelivered, time.Now())
	return true
}

// requeueLocked records that d's message waits to be handed out again
// with Redelivered n, and queues that delivery for due; after Close only
// the record is kept, for a handover (Token). c.mu is held.
func (c *consumer) requeueLocked(d *delivery, n int, due time.Time) {
	c.tmu.Lock()
	d.t.waits(d.offset, n)
	c.tmu.Unlock()
	if c.state == stateClosed {
		return
	}
	c.pushRetryLocked(d.next(n), due)
}

// pushRetryLocked queues d, a delivery to hand out, for due. c.mu is held.
func (c *consumer) pushRetryLocked(d *delivery, due time.Time) {
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
		err := c.commit(c.commitCtx, commitTimeout)
		if err == nil || errors.Is(err, errNotMember) {
			// Not a member: the next assignment wakes the committer.
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
		c.wakeCommitter()
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

// commit commits, in the current generation, for each owned partition the
// offset its tracker allows if it moved since the last commit. It returns
// an error wrapping errNotMember if something is to be committed while the
// consumer holds no generation.
func (c *consumer) commit(ctx context.Context, timeout time.Duration) error {
	type item struct {
		part int
		t    *partitionTracker
		to   int64
	}
	c.tmu.Lock()
	g := c.gen
	var items []item
	for part, t := range c.parts {
		if !t.owned {
			continue
		}
		if to, ok := t.toCommit(); ok {
			items = append(items, item{part, t, to})
		}
	}
	if g.id < 0 {
		pending := slices.ContainsFunc(slices.Collect(maps.Values(c.parts)), func(t *partitionTracker) bool { return t.dirty })
		c.tmu.Unlock()
		if pending {
			return errNotMember
		}
		return nil
	}
	c.tmu.Unlock()
	if len(items) == 0 {
		return nil
	}
	offsets := make([]kafka.OffsetCommit, len(items))
	for i, it := range items {
		offsets[i] = kafka.OffsetCommit{Partition: it.part, Offset: it.to}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := c.b.client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID:      c.group,
		GenerationID: int(g.id),
		MemberID:     g.memberID,
		Topics:       map[string][]kafka.OffsetCommit{c.topic: offsets},
	})
	if err != nil {
		return err
	}
	failed := map[int]error{}
	for _, p := range res.Topics[c.topic] {
		if p.Error != nil {
			failed[p.Partition] = p.Error
		}
	}
	c.tmu.Lock()
	for _, it := range items {
		if failed[it.part] == nil {
			it.t.committedTo(it.to)
		}
	}
	c.tmu.Unlock()
	for _, it := range items {
		if err := failed[it.part]; err != nil {
			return fmt.Errorf("commit partition %d: %w", it.part, err)
		}
	}
	return nil
}

// groupLoop is the consumer's life in its group: join, take the assigned
// partitions, heartbeat until the group rebalances, give them back, and
// again, until Close; then the final commit and LeaveGroup.
func (c *consumer) groupLoop() {
	defer c.b.wg.Done() // added by Consume
	defer close(c.groupDone)
	ctx := c.groupCtx
	m := newMember(c.b, c.group, c.topic, c.log)
	var owned []int32
	var backoff time.Duration
	rejoins := 0 // in a row
	for ctx.Err() == nil {
		parts, err := m.join(ctx, owned)
		if err == nil {
			err = c.assigned(ctx, m, parts)
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			// The protocol asks for an immediate rejoin (a new member's
			// id, a rebalance that began during the join); a coordinator
			// that keeps asking gets backoff like any failure.
			if rejoins++; errors.Is(err, errRejoin) && rejoins <= maxImmediateRejoins {
				c.log.Debug("rejoining the group", "reason", err)
				continue
			}
			backoff = min(max(2*backoff, retryMinBackoff), retryMaxBackoff)
			c.log.Warn("joining the consumer group failed; retrying", "error", err, "backoff", backoff)
			sleepCtx(ctx, backoff)
			continue
		}
		backoff, rejoins = 0, 0
		owned = parts
		err = c.heartbeatLoop(ctx, m)
		if ctx.Err() != nil {
			break
		}
		c.log.Debug("group rebalancing; giving the partitions back", "reason", err)
		if err := c.revoke(commitTimeout); err != nil {
			c.log.Info("commit before rebalance failed; the group reads the acked messages again", "error", err)
		}
	}
	c.finalErr = c.revoke(finalCommitTimeout)
	lctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if err := m.leave(lctx); err != nil {
		c.log.Info("leaving the group failed; the coordinator drops this member after the session timeout", "error", err)
	}
}

// heartbeatLoop heartbeats until the group rebalances (an error wrapping
// errRejoin), the coordinator cannot be reached for a session timeout, a
// group leader sees new partitions, or ctx ends.
func (c *consumer) heartbeatLoop(ctx context.Context, m *member) error {
	t := time.NewTicker(heartbeatInterval)
	defer t.Stop()
	lastOK, lastWatch := time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		err := m.heartbeat(ctx)
		switch {
		case err == nil:
			lastOK = time.Now()
		case errors.Is(err, errRejoin) || ctx.Err() != nil:
			return err
		case time.Since(lastOK) > sessionTimeout:
			return fmt.Errorf("no heartbeat answered for %v: %w", time.Since(lastOK).Round(time.Second), err)
		default:
			c.log.Info("heartbeat failed; retrying", "error", err)
		}
		if time.Since(lastWatch) >= partitionWatchInterval {
			lastWatch = time.Now()
			if m.metadataChanged(ctx) {
				return fmt.Errorf("%w: partitions changed", errRejoin)
			}
		}
	}
}

// assigned takes the partitions the group gave this member in m's
// generation: it reads their committed offsets, keeps the tracker of a
// partition it owned before when nobody committed on it since (so that
// its messages still with the app are not delivered twice and their acks
// still count), starts every other partition afresh from its committed
// offset (the oldest retained message when none), and starts the
// fetchers.
func (c *consumer) assigned(ctx context.Context, m *member, parts []int32) error {
	committed := map[int]int64{}
	if len(parts) > 0 {
		ps := make([]int, len(parts))
		for i, p := range parts {
			ps[i] = int(p)
		}
		res, err := c.b.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: c.group, Topics: map[string][]int{c.topic: ps}})
		if err == nil {
			err = res.Error
		}
		if err != nil {
			return fmt.Errorf("read committed offsets: %w", err)
		}
		for _, p := range res.Topics[c.topic] {
			if p.Error != nil {
				return fmt.Errorf("read committed offset of partition %d: %w", p.Partition, p.Error)
			}
			committed[p.Partition] = p.CommittedOffset
		}
	}

	start := make(map[int]int64, len(parts))
	trackers := make(map[int]*partitionTracker, len(parts))
	var kept, fresh []int
	c.tmu.Lock()
	c.epoch++
	epoch := c.epoch
	c.gen = generation{memberID: m.id, id: m.generation}
	c.leader.Store(m.leader)
	mine := make(map[int]bool, len(parts))
	for _, p32 := range parts {
		p := int(p32)
		mine[p] = true
		co, ok := committed[p]
		if !ok {
			co = -1
		}
		t := c.parts[p]
		if t != nil && (t.committed == co || co < 0 && t.committed == 0) {
			kept = append(kept, p)
		} else {
			t = newPartitionTracker(co)
			c.parts[p] = t
			fresh = append(fresh, p)
			c.inh[p] = c.b.claim(c, p, co)
			if c.inh[p] == nil {
				delete(c.inh, p)
			}
		}
		t.owned = true
		trackers[p] = t
		start[p] = t.resumeAt()
	}
	for p := range c.parts {
		if !mine[p] {
			delete(c.parts, p)
			delete(c.inh, p)
		}
	}
	c.tmu.Unlock()

	c.mu.Lock()
	parked := c.parked
	c.parked = nil
	for _, d := range parked {
		if trackers[d.partition] == d.t {
			c.pushRetryLocked(d, time.Now())
		}
	}
	c.mu.Unlock()

	c.log.Info("partitions assigned", "generation", m.generation, "member", m.id, "leader", m.leader,
		"partitions", parts, "kept", kept, "fresh", fresh)
	for _, p32 := range parts {
		p := int(p32)
		c.startFetcher(p, start[p], trackers[p], epoch)
	}
	c.wakeCommitter() // acks that came while no generation was held
	return nil
}

// revoke gives the partitions back before a rejoin (or Close): it stops
// the fetchers, commits what is acked (bounded by timeout), and stops
// handing out and committing until the next assignment. Trackers stay, so
// that a partition assigned here again continues where it was. Messages
// fetched and not handed out are dropped: the next owner reads them from
// the commit (those the fetcher handed out already wait in the retry
// queue, dropLocked).
func (c *consumer) revoke(timeout time.Duration) error {
	c.stopFetchers()
	err := c.commit(context.Background(), timeout)
	if errors.Is(err, errNotMember) {
		err = fmt.Errorf("%w: acked messages of the last generation could not be committed", err)
	}
	c.tmu.Lock()
	for _, t := range c.parts {
		t.owned = false
	}
	c.gen = generation{id: -1}
	c.tmu.Unlock()
	c.leader.Store(false)
	c.mu.Lock()
	for i := range c.stash {
		c.dropLocked(&c.stash[i])
	}
	c.stash = nil
drain:
	for {
		select {
		case f := <-c.msgs:
			c.dropLocked(&f)
		default:
			break drain
		}
	}
	c.mu.Unlock()
	return err
}

// startFetcher starts reading partition from offset (kafka.FirstOffset:
// the oldest retained message) into msgs. groupLoop only.
func (c *consumer) startFetcher(partition int, offset int64, t *partitionTracker, epoch uint64) {
	ctx, cancel := context.WithCancel(c.groupCtx)
	f := &fetcher{cancel: cancel, done: make(chan struct{})}
	c.fetchers = append(c.fetchers, f)
	go func() {
		defer close(f.done)
		c.fetch(ctx, partition, offset, t, epoch)
	}()
}

// fetch reads partition from offset into msgs with protocol-level Fetch
// requests (fetchMaxBytes, fetchMaxWait) through the Broker's client,
// until ctx ends. The client's transport runs one request at a time per
// connection and opens another for a request that finds none idle, so a
// fetch waiting for new data holds up no publish, commit or other fetch. Not kafka-go's Reader: it reads a null key or value as
// an empty one, which the adapter then had to look up again with a second
// fetch of the same records; a Fetch's records keep the difference.
//
// Like the Reader it tries again with backoff after a failure, and an
// offset below the oldest retained message (deleted by retention) moves
// on to the oldest one. Control records (transaction markers) are read
// past, not handed out.
func (c *consumer) fetch(ctx context.Context, partition int, offset int64, t *partitionTracker, epoch uint64) {
	log := c.log.With("partition", partition)
	var backoff time.Duration
	fail := func(what string, err error) {
		backoff = min(max(2*backoff, retryMinBackoff), retryMaxBackoff)
		log.Warn(what+"; retrying", "offset", offset, "error", err, "backoff", backoff)
		sleepCtx(ctx, backoff)
	}
	for ctx.Err() == nil {
		if offset < 0 { // kafka.FirstOffset
			first, err := c.firstOffset(ctx, partition)
			if err != nil {
				if ctx.Err() == nil {
					fail("looking up the partition's oldest offset", err)
				}
				continue
			}
			offset = first
		}
		res, err := c.b.client.Fetch(ctx, &kafka.FetchRequest{
			Topic:     c.topic,
			Partition: partition,
			Offset:    offset,
			MinBytes:  1,
			MaxBytes:  fetchMaxBytes,
			MaxWait:   fetchMaxWait,
		})
		if err == nil {
			err = res.Error
		}
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, kafka.OffsetOutOfRange):
			first, ferr := c.firstOffset(ctx, partition)
			switch {
			case ferr != nil:
				fail("looking up the partition's oldest offset", ferr)
			case offset < first:
				log.Warn("the offset to read from was deleted (retention): reading on from the oldest retained message",
					"offset", offset, "oldest", first)
				offset, backoff = first, 0
			default:
				fail("fetch past the partition's end", err)
			}
			continue
		case err != nil:
			fail("fetch failed", err)
			continue
		}
		next, err := c.deliverRecords(ctx, res.Records, partition, offset, t, epoch)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			offset = next
			fail("reading a fetched record", err)
			continue
		}
		backoff, offset = 0, next
	}
}

// firstOffset is the offset of partition's oldest retained message.
func (c *consumer) firstOffset(ctx context.Context, partition int) (int64, error) {
	res, err := c.b.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{c.topic: {kafka.FirstOffsetOf(partition)}},
	})
	if err != nil {
		return 0, err
	}
	for _, p := range res.Topics[c.topic] {
		if p.Partition == partition {
			return p.FirstOffset, p.Error
		}
	}
	return 0, fmt.Errorf("no offsets of partition %d in the answer", partition)
}

// deliverRecords queues for Next the records of one fetch at or past
// offset (a fetch answers from the start of the batch that holds offset),
// and returns the offset to fetch next. It returns early when ctx ends
// (what was not queued is read again from the commit by the partition's
// next owner) or a record cannot be read. Every record's key and value
// are closed, so the response's pages go back to kafka-go's pool.
//
// A batch whose records all lie below offset (a compaction emptied the
// rest of it) moves next on by one past offset, so that the next fetch
// does not answer with the same batch again; no record lies in between.
// A fetch that decoded no record at all leaves next at offset.
func (c *consumer) deliverRecords(ctx context.Context, rr kafka.RecordReader, partition int, offset int64, t *partitionTracker, epoch uint64) (next int64, err error) {
	next = offset
	if rr == nil {
		return next, nil
	}
	batches := []kafka.RecordReader{rr}
	if s, ok := rr.(*protocol.RecordStream); ok {
		batches = s.Records
	}
	below := false
	defer func() {
		if below && next == offset && err == nil {
			next = offset + 1
		}
	}()
	for _, batch := range batches {
		_, control := batch.(*protocol.ControlBatch)
		for {
			rec, rerr := batch.ReadRecord()
			if rerr != nil {
				// io.EOF, or a batch the response cut short: fetched
				// again from next. An error before any record was read
				// is a failure (fetch backs off), not a fetch to repeat
				// at once.
				if !errors.Is(rerr, io.EOF) && next == offset && !below {
					return next, fmt.Errorf("offset %d: %w", offset, rerr)
				}
				break
			}
			if rec.Offset < offset || control {
				closeBytes(rec.Key)
				closeBytes(rec.Value)
				if rec.Offset < offset {
					below = true
				} else {
					next = rec.Offset + 1
				}
				continue
			}
			m, merr := recordMessage(c.topic, partition, rec)
			if merr != nil {
				return next, fmt.Errorf("offset %d: %w", rec.Offset, merr)
			}
			next = rec.Offset + 1
			f := fetched{m: m, t: t, epoch: epoch}
			if !c.fetchInherited(&f) {
				continue // bound to an inherited delivery, or acked before
			}
			select {
			case c.msgs <- f:
			case <-ctx.Done():
				c.mu.Lock()
				c.dropLocked(&f)
				c.mu.Unlock()
				return next, ctx.Err()
			}
		}
	}
	return next, nil
}

// stopFetchers stops every fetcher and waits for them (a fetch in flight
// is abandoned). groupLoop only.
func (c *consumer) stopFetchers() {
	for _, f := range c.fetchers {
		f.cancel()
	}
	for _, f := range c.fetchers {
		<-f.done
	}
	c.fetchers = nil
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Pause stops handing out messages: Next returns broker.ErrPaused, and a
// Next blocked meanwhile returns it at once. The consumer stays in the
// group and keeps its partitions, so acks that arrive while paused are
// still committed; the fetchers stop once msgs (ConsumerSpec.Prefetch
// messages) is full. What was fetched stays queued for Resume; if Close
// follows instead, it is dropped uncommitted and the group reads it again
// from the last commit. Idempotent; pausing a closed consumer does
// nothing.
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
// broker.ErrClosed, the committer stops, the fetchers stop (a fetch in
// flight is abandoned), a final commit covers
// every contiguously acked offset, and the member leaves the group (its
// partitions go to other members at once). Messages fetched or nacked but
// not acked are dropped uncommitted: the group reads them again. The
// group's committed offsets stay on the cluster. ctx bounds the wait; if
// it ends first, the member finishes leaving in the background (Broker
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
	for i := range c.stash {
		c.dropLocked(&c.stash[i]) // recorded for a handover
	}
	c.stash, c.retry, c.parked = nil, nil, nil
	c.mu.Unlock()
	defer close(c.closed)
	c.b.removeConsumer(c)

	c.stopCommit()
	<-c.commitDone
	c.tmu.Lock()
	c.acksClosed = true
	c.tmu.Unlock()

	c.stopGroup() // groupLoop makes the final commit and leaves the group
	select {
	case <-c.groupDone:
	case <-ctx.Done():
		return fmt.Errorf("kafkabroker: close %s: leave group: %w", c.name, ctx.Err())
	}
	if err := c.finalErr; err != nil {
		c.log.Warn("final commit failed; the group will read acked messages again", "error", err)
		return fmt.Errorf("kafkabroker: close %s: final commit: %w", c.name, withSentinel(err))
	}
	return nil
}
