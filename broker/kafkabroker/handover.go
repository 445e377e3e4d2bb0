package kafkabroker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// Deliveries move between processes (broker.Portable, broker.Adopter) in
// a hot upgrade. A Kafka ack is a commit by the partition's owner that
// covers every earlier offset, so a token carries the partition's state
// after the old consumer's final commit, and the successor's consumer
// re-reads the partition from that commit, binding held offsets and
// skipping acked ones; docs/brokers.md ("Hot upgrade") has the scheme and
// what it does not cover. Nacked (and returned, broker.Returner)
// messages waiting in the old consumer's retry queue are listed in the
// token and delivered again, with the count of their next delivery.
//
// Why not hand over the group membership (member id, generation,
// assignment) instead: the successor would heartbeat as the old member
// and keep its partitions without a rebalance, but it would still need
// each partition's tracker (which offsets are acked) to commit correctly,
// so the state to pass is the same, and a successor that dies after
// taking the membership over would leave the old process a generation it
// can no longer use. The old member leaves (LeaveGroup), and with a
// single member per group the successor's join is immediate.

var (
	_ broker.Portable = (*delivery)(nil)
	_ broker.Portable = (*adopted)(nil) // moves again at the next upgrade
	_ broker.Adopter  = (*Broker)(nil)
	_ broker.Returner = (*consumer)(nil)
)

// token is a delivery's handed-over form.
type token struct {
	Group     string `json:"group"` // the Kafka group
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	// Committed is C, the partition's committed offset (0: none); Next
	// is F, one past the last offset handed out.
	Committed int64 `json:"committed"`
	Next      int64 `json:"next"`
	// Held counts the deliveries of the partition apps held unanswered;
	// Again lists the nacked ones with the Redelivered of their next
	// delivery.
	Held        int           `json:"held"`
	Again       map[int64]int `json:"again,omitempty"`
	Redelivered int           `json:"redelivered,omitempty"`
	Timestamp   int64         `json:"ts,omitempty"` // Unix nanoseconds; 0 when unknown
}

// Token implements broker.Portable. A delivery moves only once its
// consumer is closed (its final commit made), so that the partition's
// state in the token is the last one; before, or when the group took the
// partition away meanwhile, it does not.
func (d *delivery) Token() ([]byte, bool) {
	c := d.c
	c.tmu.Lock()
	if !c.acksClosed || c.parts[d.partition] != d.t || d.answered.Load() {
		c.tmu.Unlock()
		return nil, false
	}
	t := c.partTokenLocked(d.partition, d.t)
	c.tmu.Unlock()
	t.Offset, t.Redelivered = d.offset, d.redelivered
	if !d.ts.IsZero() {
		t.Timestamp = d.ts.UnixNano()
	}
	b, err := json.Marshal(t)
	return b, err == nil
}

// partTokenLocked is the part of a token its partition decides, the same
// in every token of the partition (Adopt refuses tokens that disagree):
// from the last commit to Next, which offsets apps hold (Held counts
// them) and which to deliver again; every other offset in between is
// acked. Next is one past the last offset read or, while the consumer
// still reads what a predecessor handed over, that handover's Next, so
// that the unread rest of it moves on: its adopted deliveries still held
// and the offsets it listed again (inheritance.unread). t is the
// partition's tracker; c.tmu held.
func (c *consumer) partTokenLocked(p int, t *partitionTracker) token {
	tk := token{Group: c.group, Topic: c.topic, Partition: p, Committed: t.committed, Next: t.next}
	tk.Held, tk.Again = t.unanswered()
	if in := c.inh[p]; in != nil {
		// The fetcher hands out (and so records) every offset it reads
		// under the inheritance at once: t.next is how far it read.
		tk.Next = max(tk.Next, in.next)
		in.unread(&tk, t.next, in.complete)
	}
	return tk
}

// again lists off to deliver again with Redelivered n, unless it is
// listed already.
func (t *token) again(off int64, n int) {
	if t.Again == nil {
		t.Again = map[int64]int{}
	}
	if _, ok := t.Again[off]; !ok {
		t.Again[off] = n
	}
}

// partKey names one partition of one group's topic.
type partKey struct {
	group, topic string
	partition    int
}

// inheritance is what the predecessor left of one partition: the tokens'
// state and the deliveries adopted from them, by offset. A consumer
// claims it when the group assigns it the partition.
type inheritance struct {
	committed, next int64
	held            int // the least count the tokens gave (acks only lower it)
	again           map[int64]int
	adopted         map[int64]*adopted
	// complete: every held delivery was adopted, so the offsets of
	// [committed, next) neither adopted nor nacked were acked. Set by
	// claim.
	complete bool
	// claimed: a consumer was assigned the partition; by: that
	// consumer, nil when it read the partition from a newer commit
	// (claim). Guarded by Broker.hmu.
	claimed bool
	by      *consumer
}

// unread adds to t what in says of its offsets from on, which no
// consumer of this process read (broker.Unread). The caller holds what
// guards in: Broker.hmu while no consumer claimed it, the claiming
// consumer's tmu after.
func (in *inheritance) unread(t *token, from int64, complete bool) {
	t.Held += broker.Unread(from, in.next, complete, in.again, in.adopted,
		func(a *adopted) (*broker.Deferred, int) { return &a.p, a.t.Redelivered }, t.again)
}

// Adopt implements broker.Adopter: it records the partition's state for
// the consumer of the token's group and topic that is assigned the
// partition, and returns the inherited delivery.
func (b *Broker) Adopt(tok []byte) (broker.Delivery, error) {
	var t token
	if err := json.Unmarshal(tok, &t); err != nil {
		return nil, fmt.Errorf("kafkabroker: adopt: %w: %w", broker.ErrRejected, err)
	}
	if t.Group == "" || t.Topic == "" || t.Partition < 0 || t.Offset < t.Committed || t.Offset >= t.Next || t.Held < 1 {
		return nil, fmt.Errorf("kafkabroker: adopt: %w: inconsistent token %s", broker.ErrRejected, tok)
	}
	k := partKey{t.Group, t.Topic, t.Partition}
	b.hmu.Lock()
	defer b.hmu.Unlock()
	if b.inherited == nil {
		b.inherited = map[partKey]*inheritance{}
	}
	in := b.inherited[k]
	switch {
	case in == nil:
		in = &inheritance{committed: t.Committed, next: t.Next, held: t.Held, again: map[int64]int{}, adopted: map[int64]*adopted{}}
		b.inherited[k] = in
	case in.committed != t.Committed || in.next != t.Next:
		return nil, fmt.Errorf("kafkabroker: adopt: %w: token of %s/%d from another handover", broker.ErrRejected, t.Topic, t.Partition)
	case in.adopted[t.Offset] != nil:
		return nil, fmt.Errorf("kafkabroker: adopt: %w: %s adopted twice", broker.ErrRejected, messageID(t.Topic, t.Partition, t.Offset))
	}
	in.held = min(in.held, t.Held)
	for o, n := range t.Again {
		in.again[o] = n
	}
	a := &adopted{b: b, in: in, t: t,
		Handed: broker.NewHanded(messageID(t.Topic, t.Partition, t.Offset), t.Redelivered, t.Timestamp, t.Topic, int32(t.Partition), t.Offset)}
	in.adopted[t.Offset] = a
	return a, nil
}

// claim hands the inheritance of a partition to c, the consumer the
// group assigned it, if the partition's committed offset is still the one the
// predecessor left (committed: the one read, negative for none). Else the
// inheritance is dropped: the group reads the partition from the newer
// commit, the held messages come again, and the inherited deliveries'
// answers commit nothing. nil when there is none.
func (b *Broker) claim(c *consumer, partition int, committed int64) *inheritance {
	group, topic := c.group, c.topic
	k := partKey{group, topic, partition}
	b.hmu.Lock()
	defer b.hmu.Unlock()
	in := b.inherited[k]
	if in == nil {
		return nil
	}
	delete(b.inherited, k)
	in.claimed = true
	if in.committed != max(committed, 0) {
		b.log.Warn("partition committed past what the previous process handed over; the messages apps hold come again",
			"topic", topic, "group", group, "partition", partition, "handed_over_at", in.committed, "committed", committed)
		return nil
	}
	in.by = c
	in.complete = len(in.adopted) >= in.held
	if !in.complete {
		b.log.Warn("fewer held deliveries adopted than handed over; the partition's messages since the last commit come again",
			"topic", topic, "group", group, "partition", partition, "adopted", len(in.adopted), "held", in.held)
	}
	return in
}

// fetchInherited is the fetcher's look at a message of a partition read
// under an inheritance (see the top of this file), as soon as it is read,
// so that held deliveries are bound and acked messages skipped however
// busy the apps are: it reports whether f goes to the queue (with the
// delivery handed out already, f.pre); if not, it was bound to an
// inherited delivery or settled without one.
func (c *consumer) fetchInherited(f *fetched) bool {
	c.mu.Lock()
	c.tmu.Lock()
	if c.inh[f.m.Partition] == nil || c.parts[f.m.Partition] != f.t || !f.t.owned || f.epoch != c.epoch {
		c.tmu.Unlock()
		c.mu.Unlock()
		return true
	}
	d, settled := c.inheritedLocked(f)
	c.tmu.Unlock()
	c.mu.Unlock()
	if settled {
		c.wakeCommitter()
	}
	f.pre = d
	return d != nil
}

// inheritedLocked hands f's message out under the partition's
// inheritance: it returns the delivery to hand out, or nil when the
// message is settled without one; settled reports whether an ack moved
// the tracker. c.mu and c.tmu are held.
func (c *consumer) inheritedLocked(f *fetched) (d *delivery, settled bool) {
	p, off, t := f.m.Partition, f.m.Offset, f.t
	in := c.inh[p]
	if off >= in.next {
		delete(c.inh, p) // read past the handover
		if !t.handOut(off) {
			return nil, false
		}
		return c.newDelivery(&f.m, t), false
	}
	if !t.handOut(off) {
		return nil, false
	}
	if a := in.adopted[off]; a != nil {
		d = c.newDelivery(&f.m, t)
		d.redelivered = a.t.Redelivered
		pend := a.p.Bind(d)
		switch {
		case pend == nil:
		case pend.Nack:
			d.answered.Store(true)
			c.requeueLocked(d, d.redelivered+1, pend.At.Add(pend.Delay))
		default:
			d.answered.Store(true)
			t.ack(off)
			settled = true
		}
		return nil, settled
	}
	if n, ok := in.again[off]; ok || !in.complete {
		d = c.newDelivery(&f.m, t)
		d.redelivered = n
		return d, false
	}
	t.ack(off) // the predecessor's app acked it
	return nil, true
}

// adopted is a delivery handed over by another process: until the
// successor's consumer reads its offset, an answer waits (broker.Deferred).
type adopted struct {
	broker.Handed
	b  *Broker
	in *inheritance
	t  token
	p  broker.Deferred
}

// Token implements broker.Portable: bound, as its consumer's delivery;
// answered, none (an ack settles the offset, a nack lists it again in the
// partition's other tokens); else as its partition's tokens say at the
// close: while no consumer was assigned the partition, as the
// inheritance stands (the predecessor's commit and Next, with the answers
// given since); once one is, from that consumer's state
// (partTokenLocked), which covers the part of the handover it has not
// read. None either when the partition was read from a newer commit
// (claim): the group delivers its messages again anyway.
func (a *adopted) Token() ([]byte, bool) {
	if tok, ok, open := a.p.Moved(); !open {
		return tok, ok
	}
	var t token
	a.b.hmu.Lock()
	in, claimed, by := a.in, a.in.claimed, a.in.by
	if !claimed {
		t = token{Group: a.t.Group, Topic: a.t.Topic, Partition: a.t.Partition, Committed: in.committed, Next: in.next}
		in.unread(&t, in.committed, len(in.adopted) >= in.held)
	}
	a.b.hmu.Unlock()
	if claimed {
		if by == nil {
			return nil, false
		}
		var ok bool
		if t, ok = by.adoptedToken(a); !ok {
			return nil, false
		}
	}
	t.Offset, t.Redelivered, t.Timestamp = a.t.Offset, a.t.Redelivered, a.t.Timestamp
	b, err := json.Marshal(t)
	return b, err == nil
}

// adoptedToken is partTokenLocked for a, adopted and not bound, in a
// partition c reads under a's inheritance; false before c is closed, or
// when c no longer reads the partition under it (the group gave the
// partition away, or c read past a's offset and a's message never came).
func (c *consumer) adoptedToken(a *adopted) (token, bool) {
	p := a.t.Partition
	c.tmu.Lock()
	defer c.tmu.Unlock()
	t := c.parts[p]
	if !c.acksClosed || t == nil || c.inh[p] != a.in || a.t.Offset < t.next {
		return token{}, false
	}
	if bound, _ := a.p.State(); bound != nil {
		return token{}, false // bound meanwhile: its delivery moves
	}
	return c.partTokenLocked(p, t), true
}

// Ack and Nack settle the message as its original delivery's would (no
// network round trip); before the successor's consumer read the offset,
// the answer waits for it.
func (a *adopted) Ack(ctx context.Context) error {
	if err := a.p.Ack(ctx, ErrAnswered); err != nil {
		return fmt.Errorf("kafkabroker: ack %s: %w", a.ID, err)
	}
	return nil
}

func (a *adopted) Nack(ctx context.Context, delay time.Duration) error {
	if err := a.p.Nack(ctx, delay, ErrAnswered); err != nil {
		return fmt.Errorf("kafkabroker: nack %s: %w", a.ID, err)
	}
	return nil
}
