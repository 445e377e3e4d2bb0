package broker

import (
	"context"
	"sync"
	"time"
)

// Handing deliveries over. In a hot upgrade the old process passes the
// deliveries apps still hold to its successor, which settles them when the
// apps answer; so an upgrade waits for no app. A delivery whose broker
// allows it is Portable: its Token is all another process connected to the
// same cluster needs, and that process's adapter, an Adopter, turns the
// token back into a Delivery. The adopted Delivery is Inherited: it has
// the message's id, redelivery count and timestamp but no message (the
// app already has it).

// Portable is implemented by a delivery another process can settle.
type Portable interface {
	// Token is what Adopter.Adopt needs; ok is false when this delivery
	// cannot move after all (the message came without its broker handle).
	Token() (token []byte, ok bool)
}

// Adopter is implemented by a Broker that settles deliveries handed over
// by another process, from their Token.
type Adopter interface {
	// Adopt returns the delivery token names. Its Ack and Nack settle the
	// message at the broker as the original's would have; it is Inherited.
	// A token the adapter cannot read is refused with ErrRejected.
	Adopt(token []byte) (Delivery, error)
}

// Releaser is implemented by a Consumer whose Close waits for the
// deliveries apps still hold, so that their answers still reach the
// broker (RocketMQ). Release closes it without waiting, for a hot upgrade
// whose successor settles those deliveries (Portable): their tokens are
// made after the release, from the state it committed.
type Releaser interface {
	Release(ctx context.Context) error
}

// Returner is implemented by a Consumer that takes back a delivery Next
// returned and nobody took (the caller fetched it just as a pause
// began), to hand it out again as the same attempt. A Nack would do
// too, but Kafka's and RocketMQ's adapters and JetStream count a nack
// as a redelivery, so every pause (every hot upgrade) would add an
// attempt to a message no app saw.
type Returner interface {
	// Return takes d back and reports whether it did: false if d is not
	// the consumer's own, was answered, or cannot be kept (the adapter
	// says when); the caller then hands d back as usual (Nack). After
	// true, d is the consumer's again: the caller answers it no more.
	// Wrappers of d are the caller's to release (Detach). Safe to call
	// concurrently with Pause, Resume, Close and Release, and after them.
	Return(d Delivery) bool
}

// Keeper is implemented by a Consumer that can pass the messages it
// fetched but Next never returned to the consumer of the same cluster,
// group and topic in a successor process (hot upgrade), which gives them
// to apps as the first deliveries they are, rather than hand them back
// to a broker that counts each hand-back as a delivery (NATS).
type Keeper interface {
	// Keep makes Pause and Close keep, until Resume, what they would
	// hand back.
	Keep()
	// Kept takes what the consumer kept, as a JSON value for
	// ConsumerSpec.Carry of at most limit bytes (nil: nothing kept); what
	// does not fit goes back to the broker. Called after Close; kept
	// messages nobody takes come back after the broker's ack wait.
	Kept(ctx context.Context, limit int) ([]byte, error)
	// Returner: a delivery returned while keeping goes first into what
	// is kept; one returned while not keeping is refused.
	Returner
}

// Deferred is the answer side of an adopted delivery whose adapter
// settles it through a delivery of its own consumer, once that consumer
// reads the message again (Kafka, RocketMQ): until then (Bind) an app's
// answer waits, and Bind hands it over. Safe for concurrent use; its lock
// is a leaf.
type Deferred struct {
	mu       sync.Mutex
	answered bool
	bound    Delivery
	pending  *Answer
}

// Answer is an app's answer kept by a Deferred.
type Answer struct {
	Nack  bool
	Delay time.Duration
	At    time.Time // when it was given
}

// Ack settles the delivery through the bound one, or keeps the answer
// for Bind. A second answer is refused with answered.
func (p *Deferred) Ack(ctx context.Context, answered error) error {
	return p.answer(ctx, false, 0, answered)
}

// Nack is Ack's counterpart.
func (p *Deferred) Nack(ctx context.Context, delay time.Duration, answered error) error {
	return p.answer(ctx, true, max(delay, 0), answered)
}

func (p *Deferred) answer(ctx context.Context, nack bool, delay time.Duration, answered error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	if p.answered {
		p.mu.Unlock()
		return answered
	}
	p.answered = true
	d := p.bound
	if d == nil {
		p.pending = &Answer{Nack: nack, Delay: delay, At: time.Now()}
	}
	p.mu.Unlock()
	switch {
	case d == nil:
		return nil
	case nack:
		return d.Nack(ctx, delay)
	default:
		return d.Ack(ctx)
	}
}

// Bind makes d the delivery later answers go to, and returns the answer
// given before, if any, for the caller to apply to d. A second Bind
// changes nothing and returns nil.
func (p *Deferred) Bind(d Delivery) *Answer {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bound != nil {
		return nil
	}
	p.bound = d
	return p.pending
}

// State reports the bound delivery (nil: none yet) and whether the app
// answered.
func (p *Deferred) State() (bound Delivery, answered bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bound, p.answered
}

// Moved says how the adopted delivery p answers for moves on at the
// next handover: once bound, as the bound delivery (its Token); once
// answered, not at all (the answer settled it, or lists it again); else
// open, and the adapter makes its token from the state of the handover it
// came with.
func (p *Deferred) Moved() (token []byte, ok, open bool) {
	bound, answered := p.State()
	switch {
	case bound != nil:
		if pt, portable := bound.(Portable); portable {
			token, ok = pt.Token()
		}
		return token, ok, false
	case answered:
		return nil, false, false
	}
	return nil, false, true
}

// Kept is the answer waiting for Bind: nil when there is none (no answer
// yet, or it went to the bound delivery).
func (p *Deferred) Kept() *Answer {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bound != nil {
		return nil
	}
	return p.pending
}

// Unread is what a predecessor's handover of one partition or queue says
// of its offsets from `from` on, which no consumer of this process read,
// for the tokens of the next handover (Kafka, RocketMQ): it returns how
// many of its adopted deliveries apps still hold, and calls again for each
// offset to deliver again, with the Redelivered of that delivery: those
// the predecessor listed (listed), adopted ones an app nacked before they
// were bound, and, when the predecessor's held deliveries were not all
// adopted (!complete), every offset below next not adopted, as a consumer
// reading the partition would have delivered it. The other offsets are
// settled. answer gives an adopted delivery's Deferred and Redelivered.
func Unread[A any](from, next int64, complete bool, listed map[int64]int, adopted map[int64]A,
	answer func(A) (*Deferred, int), again func(off int64, n int)) (held int) {
	for o, n := range listed {
		if o >= from {
			again(o, n)
		}
	}
	for o, a := range adopted {
		if o < from {
			continue
		}
		p, n := answer(a)
		bound, answered := p.State()
		switch {
		case bound != nil:
			// Bound when its offset was read, so below from.
		case !answered:
			held++
		default:
			if ans := p.Kept(); ans != nil && ans.Nack {
				again(o, n+1)
			}
		}
	}
	if !complete {
		for o := from; o < next; o++ {
			if _, ok := adopted[o]; !ok {
				again(o, 0)
			}
		}
	}
	return held
}

// Handed is what an adopted delivery shows of its message: the id, count
// and time the predecessor's delivery had, and a Message with no body (the
// app has it). Adapters embed it in their adopted deliveries.
type Handed struct {
	ID       string
	Count    int
	At       time.Time
	Msg      Message
	position [2]int64
}

// NewHanded fills a Handed; at is Unix nanoseconds (0: unknown), and
// partition/offset the message's position (broker.Positioner).
func NewHanded(id string, redelivered int, at int64, topic string, partition int32, offset int64) Handed {
	h := Handed{ID: id, Count: redelivered, Msg: Message{Topic: topic}, position: [2]int64{int64(partition), offset}}
	if at != 0 {
		h.At = time.Unix(0, at)
	}
	return h
}

func (h *Handed) Inherited()               {}
func (h *Handed) Message() *Message        { return &h.Msg }
func (h *Handed) MessageID() string        { return h.ID }
func (h *Handed) Redelivered() int         { return h.Count }
func (h *Handed) Timestamp() time.Time     { return h.At }
func (h *Handed) Position() (int32, int64) { return int32(h.position[0]), h.position[1] }

// Inherited marks a delivery made by Adopter.Adopt. Its Message has no
// body, so a failed attempt is a plain Nack (the dead-letter policy meets
// the message when the broker offers it again).
type Inherited interface{ Inherited() }

// Detacher is implemented by the sidecar's delivery wrappers that hold
// something of their own (a span, a flow-control slot): Detach lets go of
// it without settling the delivery, for a delivery that moves to another
// process.
type Detacher interface{ Detach() }

// As returns d, or the first delivery it wraps (through an Unwrap()
// Delivery method, as the sidecar's wrappers have), that is a T.
func As[T any](d Delivery) (T, bool) {
	for range 8 { // wrappers nest a few levels at most
		if t, ok := d.(T); ok {
			return t, true
		}
		u, isWrapper := d.(interface{ Unwrap() Delivery })
		if !isWrapper {
			break
		}
		d = u.Unwrap()
	}
	var zero T
	return zero, false
}

// Detach calls Detach on every wrapper of d that is a Detacher, outermost
// first; d itself is left unsettled.
func Detach(d Delivery) {
	for range 8 {
		if dt, ok := d.(Detacher); ok {
			dt.Detach()
		}
		u, isWrapper := d.(interface{ Unwrap() Delivery })
		if !isWrapper {
			return
		}
		d = u.Unwrap()
	}
}
