package rocketmqbroker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// Deliveries move between processes (broker.Portable, broker.Adopter) in
// a hot upgrade. A RocketMQ ack moves the queue offset of the consumer
// that pulled the message, so the old consumer is released first (it
// commits each queue's lowest unsettled offset), a token carries its
// queue's state, and the successor's consumer re-reads the queue from
// that commit, binding held offsets and acking settled ones without a
// delivery; docs/brokers.md ("Hot upgrade") has the scheme and what it
// does not cover. Messages nacked or returned (broker.Returner) after the
// release, returned and not handed out again before it, or whose
// send-back had not completed, are listed in the token and delivered
// again. The successor knows the queue was not committed further
// meanwhile when its first message of the queue is at the token's
// commit. A successor released again before its consumer read all of what it inherited (a
// queue is read a pull batch at a time, and Next stops at the first
// message to hand out) passes the unread rest on in its own tokens
// (queueTokenLocked), so those held deliveries move again too.

var (
	_ broker.Portable = (*delivery)(nil)
	_ broker.Portable = (*adopted)(nil) // moves again at the next upgrade
	_ broker.Adopter  = (*Broker)(nil)
	_ broker.Releaser = (*consumer)(nil)
	_ broker.Returner = (*consumer)(nil)
)

// queueKey names one message queue of one consumer group.
type queueKey struct {
	group, topic, brokerName string // the RocketMQ group and queue topic
	queue                    int
}

// token is a delivery's handed-over form.
type token struct {
	Group      string `json:"group"` // the RocketMQ consumer group
	Topic      string `json:"topic"` // the queue's topic (a retry topic for retries)
	BrokerName string `json:"broker"`
	Queue      int    `json:"queue"`
	Offset     int64  `json:"offset"`
	// Committed is C, what the release committed; Next is F, one past
	// the last offset handed out.
	Committed int64 `json:"committed"`
	Next      int64 `json:"next"`
	// Held counts the queue's deliveries apps held unanswered; Again
	// lists the offsets to deliver again with their Redelivered.
	Held        int           `json:"held"`
	Again       map[int64]int `json:"again,omitempty"`
	ID          string        `json:"id"`
	Redelivered int           `json:"redelivered,omitempty"`
	Timestamp   int64         `json:"ts,omitempty"` // Unix nanoseconds; 0 when unknown
}

// Release implements broker.Releaser: the consumer shuts down now (Close
// would wait for the deliveries apps hold), committing each queue's
// lowest offset not settled. The deliveries still outstanding then move
// (Token). Idempotent.
func (c *consumer) Release(ctx context.Context) error {
	c.forceClose()
	return nil
}

// noteShutdownLocked records, as the client shuts down, each queue's
// commit (the lowest offset of a message handed out and not settled,
// returned and not handed out again, polled and never handed out
// (unsent), or whose send-back is still in progress; else one past the
// last handed out) and marks the returned ones and those send-backs for
// delivery again. It is what the client commits: the lowest offset it
// holds unacked. c.mu held.
func (c *consumer) noteShutdownLocked() {
	c.released = map[queueKey]int64{}
	for k, next := range c.handedNext {
		c.released[k] = next
	}
	low := func(k queueKey, off int64) {
		if cur, ok := c.released[k]; !ok || off < cur {
			c.released[k] = off
		}
	}
	for d := range c.outstanding {
		low(d.qk, d.offset)
	}
	for d := range c.returned {
		low(d.qk, d.offset)
		c.again[d] = d.redelivered
	}
	c.returned = nil
	for _, d := range c.unsent {
		low(d.qk, d.offset)
	}
	for b := range c.sendingBack {
		for _, d := range b.ds {
			low(d.qk, d.offset)
			c.again[d] = d.redelivered + 1
		}
	}
	c.sendingBack = nil
}

// queueTokenLocked is the part of a token its queue decides, the same in
// every token of the queue: from the shutdown's commit to Next, which
// offsets apps hold (Held counts them) and which to deliver again; every
// other offset in between is settled. Next is one past the last offset
// handed out or, while the consumer still reads what a predecessor handed
// over (inh), that handover's Next, so the unread rest of it moves on:
// its adopted deliveries still held, and the offsets it listed again.
// Messages polled but never handed out (unsent) below Next are listed
// again: a batch's later offsets can be settled (the predecessor's app
// acked them, or they were bound to adopted deliveries) while earlier
// ones still wait in pending. false before the shutdown. c.mu held.
func (c *consumer) queueTokenLocked(k queueKey) (token, bool) {
	committed, ok := c.released[k]
	if !ok || c.state != stateShut {
		return token{}, false
	}
	t := token{Group: k.group, Topic: k.topic, BrokerName: k.brokerName, Queue: k.queue,
		Committed: committed, Next: c.handedNext[k]}
	in := c.inh[k]
	if in != nil {
		t.Next = max(t.Next, in.next)
	}
	for o := range c.outstanding {
		if o.qk == k {
			t.Held++
		}
	}
	for a, n := range c.again {
		if a.qk == k {
			t.again(a.offset, n)
		}
	}
	for _, d := range c.unsent {
		if d.qk == k && d.offset < t.Next {
			t.again(d.offset, d.redelivered)
		}
	}
	if in != nil {
		in.unread(&t, in.reached, in.complete)
	}
	return t, true
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

// unread adds to t what in says of its offsets from on, which no
// consumer of this process read (broker.Unread). The caller holds what
// guards in: Broker.hmu while no consumer claimed it, the claiming
// consumer's mu after.
func (in *inheritance) unread(t *token, from int64, complete bool) {
	t.Held += broker.Unread(from, in.next, complete, in.again, in.adopted,
		func(a *adopted) (*broker.Deferred, int) { return &a.p, a.t.Redelivered }, t.again)
}

// Token implements broker.Portable: once the consumer is released (its
// commit made), a delivery apps still hold moves.
func (d *delivery) Token() ([]byte, bool) {
	c := d.c
	c.mu.Lock()
	_, out := c.outstanding[d]
	t, ok := c.queueTokenLocked(d.qk)
	c.mu.Unlock()
	if !out || !ok {
		return nil, false
	}
	t.Offset, t.ID, t.Redelivered = d.offset, d.id, d.redelivered
	if !d.ts.IsZero() {
		t.Timestamp = d.ts.UnixNano()
	}
	b, err := json.Marshal(t)
	return b, err == nil
}

// inheritance is what the predecessor left of one queue: the tokens'
// state and the deliveries adopted from them, by offset.
type inheritance struct {
	committed, next int64
	held            int // the least count the tokens gave (answers only lower it)
	again           map[int64]int
	adopted         map[int64]*adopted
	complete        bool // set by claim: every held delivery was adopted
	// claimed: a consumer reads the queue under it; by: that consumer,
	// nil when it read the queue from another commit (claim). Guarded by
	// Broker.hmu.
	claimed bool
	by      *consumer
	// reached: one past the last offset by read under it. Guarded by
	// by.mu.
	reached int64
}

// Adopt implements broker.Adopter: it records the queue's state for the
// consumer of the token's group that reads the queue, and returns the
// inherited delivery.
func (b *Broker) Adopt(tok []byte) (broker.Delivery, error) {
	var t token
	if err := json.Unmarshal(tok, &t); err != nil {
		return nil, fmt.Errorf("rocketmqbroker: adopt: %w: %w", broker.ErrRejected, err)
	}
	if t.Group == "" || t.Topic == "" || t.BrokerName == "" || t.Queue < 0 || t.Offset < t.Committed || t.Offset >= t.Next || t.Held < 1 {
		return nil, fmt.Errorf("rocketmqbroker: adopt: %w: inconsistent token %s", broker.ErrRejected, tok)
	}
	k := queueKey{t.Group, t.Topic, t.BrokerName, t.Queue}
	b.hmu.Lock()
	defer b.hmu.Unlock()
	if b.inherited == nil {
		b.inherited = map[queueKey]*inheritance{}
	}
	in := b.inherited[k]
	switch {
	case in == nil:
		in = &inheritance{committed: t.Committed, next: t.Next, held: t.Held, again: map[int64]int{}, adopted: map[int64]*adopted{}}
		b.inherited[k] = in
		b.inheriting.Add(1)
	case in.committed != t.Committed || in.next != t.Next:
		return nil, fmt.Errorf("rocketmqbroker: adopt: %w: token of %s queue %d from another handover", broker.ErrRejected, t.Topic, t.Queue)
	case in.adopted[t.Offset] != nil:
		return nil, fmt.Errorf("rocketmqbroker: adopt: %w: %s adopted twice", broker.ErrRejected, t.ID)
	}
	in.held = min(in.held, t.Held)
	for o, n := range t.Again {
		in.again[o] = n
	}
	a := &adopted{b: b, in: in, t: t,
		Handed: broker.NewHanded(t.ID, t.Redelivered, t.Timestamp, t.Topic, int32(t.Queue), t.Offset)}
	in.adopted[t.Offset] = a
	return a, nil
}

// claim hands the inheritance of a queue to the consumer whose first
// message of it is at first, if that is the commit the predecessor left;
// else it is dropped (the group read the queue from a newer commit: the
// held messages come again, and the inherited answers settle nothing).
// nil when there is none.
func (b *Broker) claim(k queueKey, first int64, c *consumer) *inheritance {
	if b.inheriting.Load() == 0 {
		return nil
	}
	b.hmu.Lock()
	defer b.hmu.Unlock()
	in := b.inherited[k]
	if in == nil {
		return nil
	}
	delete(b.inherited, k)
	b.inheriting.Add(-1)
	in.claimed = true
	if first != in.committed {
		b.log.Warn("queue read from another offset than the previous process handed over; the messages apps hold come again",
			"group", k.group, "topic", k.topic, "queue", k.queue, "handed_over_at", in.committed, "read_from", first)
		return nil
	}
	in.by, in.reached = c, first
	in.complete = len(in.adopted) >= in.held
	if !in.complete {
		b.log.Warn("fewer held deliveries adopted than handed over; the queue's messages since the last commit come again",
			"group", k.group, "topic", k.topic, "queue", k.queue, "adopted", len(in.adopted), "held", in.held)
	}
	return in
}

// inheritLocked decides what becomes of d, just polled, under its
// queue's inheritance: true to hand it out as usual; false when it is
// bound to an inherited delivery or settled without a delivery, which
// the returned func (run without c.mu) finishes. c.mu held.
func (c *consumer) inheritLocked(d *delivery) (bool, func()) {
	in, seen := c.inh[d.qk]
	if !seen {
		in = c.b.claim(d.qk, d.offset, c)
		c.inh[d.qk] = in // nil too: the queue is read as usual
	}
	if in == nil {
		return true, nil
	}
	in.reached = d.offset + 1
	if d.offset >= in.next {
		c.inh[d.qk] = nil // read past the handover
		return true, nil
	}
	if a := in.adopted[d.offset]; a != nil {
		d.redelivered = a.t.Redelivered
		c.outstanding[d] = struct{}{}
		d.timer = time.AfterFunc(c.ackWait, d.expire)
		pend := a.p.Bind(d)
		if pend == nil {
			return false, nil
		}
		return false, func() { _ = d.answer(pend.Nack, pend.Delay) }
	}
	if n, ok := in.again[d.offset]; ok || !in.complete {
		d.redelivered = max(d.redelivered, n)
		return true, nil
	}
	return false, func() { _ = d.answer(false, 0) } // the predecessor's app settled it
}

// answer settles d from an answer given elsewhere (an inherited
// delivery's, or the predecessor's), bounded by expireNackTimeout.
func (d *delivery) answer(nack bool, delay time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), expireNackTimeout)
	defer cancel()
	op := "ack"
	if nack {
		op = "nack"
	}
	err := d.settle(ctx, op, nack, delay)
	if err != nil {
		d.c.log.Warn("settling an inherited delivery failed; the group gets the message again", "msg_id", d.id, "error", err)
	}
	return err
}

// adopted is a delivery handed over by another process: until the
// successor's consumer polls its offset, an answer waits
// (broker.Deferred).
type adopted struct {
	broker.Handed
	b  *Broker
	in *inheritance
	t  token
	p  broker.Deferred
}

// Token implements broker.Portable: bound, as its consumer's delivery;
// answered, none (an ack settles the offset, a nack lists it again in
// the queue's other tokens); else as its queue's tokens say at the
// release: while no consumer read the queue, as the inheritance stands
// (the predecessor's commit and Next, with the answers given since);
// once a consumer reads it, from that consumer's state (queueTokenLocked),
// which covers the part of the handover it has not read. None either
// when the queue was read from another commit (claim): the group
// delivers its messages again anyway.
func (a *adopted) Token() ([]byte, bool) {
	if tok, ok, open := a.p.Moved(); !open {
		return tok, ok
	}
	var t token
	a.b.hmu.Lock()
	in, claimed, by := a.in, a.in.claimed, a.in.by
	if !claimed {
		t = token{Group: a.t.Group, Topic: a.t.Topic, BrokerName: a.t.BrokerName, Queue: a.t.Queue,
			Committed: in.committed, Next: in.next}
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
	t.Offset, t.ID, t.Redelivered, t.Timestamp = a.t.Offset, a.t.ID, a.t.Redelivered, a.t.Timestamp
	b, err := json.Marshal(t)
	return b, err == nil
}

// adoptedToken is queueTokenLocked for a, adopted and not bound, in a
// queue c reads under a's inheritance.
func (c *consumer) adoptedToken(a *adopted) (token, bool) {
	k := queueKey{a.t.Group, a.t.Topic, a.t.BrokerName, a.t.Queue}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inh[k] != a.in || a.t.Offset < a.in.reached {
		return token{}, false // read past: its offset never came
	}
	if bound, _ := a.p.State(); bound != nil {
		return token{}, false
	}
	return c.queueTokenLocked(k)
}

// Ack and Nack settle the message as its original delivery's would;
// before the successor's consumer polled the offset, the answer waits for
// it.
func (a *adopted) Ack(ctx context.Context) error {
	if err := a.p.Ack(ctx, ErrSettled); err != nil {
		return fmt.Errorf("rocketmqbroker: ack %s: %w", a.t.ID, err)
	}
	return nil
}

func (a *adopted) Nack(ctx context.Context, delay time.Duration) error {
	if err := a.p.Nack(ctx, delay, ErrSettled); err != nil {
		return fmt.Errorf("rocketmqbroker: nack %s: %w", a.t.ID, err)
	}
	return nil
}
