// Package sendq lets the publishes waiting for one destination of a broker
// go out as one request. It serves the adapters whose broker takes several
// messages in one request and answers them together: RocketMQ's
// SEND_BATCH_MESSAGE for one queue, and JetStream's atomic batch for one
// stream. A request costs a client and a broker about as much as the
// message in it, so sharing one saves most of what a publish costs.
//
// How a Queue sends (there is no goroutine of its own: the sender is always
// a publishing caller, so nothing needs stopping on Close):
//
//   - A publish whose queue has no request in flight is sent at once,
//     alone (Sender.One): one publish at a time waits for no other.
//   - While a queue's request is in flight, its publishes wait in it.
//     When the request is answered, the publish that sent it hands the
//     waiting ones (up to Limits.MaxMsgs and Limits.MaxBytes) to the first
//     of them, which sends them as one request (Sender.Batch), and so on.
//     A queue has one request in flight at a time, so its messages are
//     stored in the order they were queued.
//   - Each publish gets the request's answer and its place in it, or the
//     request's error (Result.Tried): the adapter's own rules then say
//     whether the message goes on alone, as after a first attempt of its
//     own that failed.
//   - A publish whose ctx ends while it waits leaves unsent
//     (Result.Unsent); one whose ctx ends while its request is in flight
//     gets Result.MaybeStored. It returns only once its request holds a
//     copy of its message (Sender.Batch's copied), since its caller may
//     reuse the body when it returns.
//   - A batch's request is bound by the latest of its members' deadlines,
//     not by their cancellation, since its sender carries the others'
//     messages; the publish that sends it returns when it is answered,
//     even after its own ctx ended.
package sendq

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Sender sends what a Queue hands it: one message, or several as one
// request. M is a message as the adapter holds it, R a request's answer.
type Sender[M, R any] interface {
	// One sends m alone under ctx.
	One(ctx context.Context, m M) (R, error)
	// Batch sends ms (at least one) as one request under ctx, and calls
	// copied once the request holds a copy of every message (before
	// waiting for the answer; at the latest before returning).
	Batch(ctx context.Context, ms []M, copied func()) (R, error)
}

// Limits bound a batch; a message larger than MaxBytes still goes, alone.
type Limits struct {
	MaxMsgs  int // the most messages in one request
	MaxBytes int // the most bytes (as Send's size counts them) in one request
}

// Result is what Send says of one publish.
type Result[R any] struct {
	// R is the answer to the request that carried the message, and Idx
	// the message's place in that request (0 for a message sent alone);
	// valid when Err is nil.
	R   R
	Idx int
	// Err is the request's error (Tried), or the ctx's error (Unsent or
	// MaybeStored).
	Err error
	// Tried: Err is the error of a request that carried the message;
	// whether it was stored is for the adapter's rules to say.
	Tried bool
	// Batch: the request was Sender.Batch's, not One's.
	Batch bool
	// Unsent: ctx ended before the message was sent.
	Unsent bool
	// MaybeStored: ctx ended while the request that carried the message
	// was in flight; its outcome is unknown.
	MaybeStored bool
}

// Batcher sends the publishes of its Queues with one Sender.
type Batcher[M, R any] struct {
	send Sender[M, R]
	lim  Limits
	pool sync.Pool // of *entry[M, R]
}

// New returns a Batcher that sends with s within lim. lim.MaxMsgs below 1
// counts as 1 (every publish alone, at once when its queue is idle).
func New[M, R any](s Sender[M, R], lim Limits) *Batcher[M, R] {
	lim.MaxMsgs = max(lim.MaxMsgs, 1)
	return &Batcher[M, R]{send: s, lim: lim}
}

// Queue is one destination's publishes. The zero value is ready.
type Queue[M, R any] struct {
	mu      sync.Mutex
	pending []*entry[M, R] // waiting for the request in flight to end
	busy    bool           // a request is in flight
}

// Pending counts the publishes waiting for the request in flight.
func (q *Queue[M, R]) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// Busy reports whether a request is in flight.
func (q *Queue[M, R]) Busy() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.busy
}

// entry is one publish in a Queue. Its results are written by the
// goroutine that sends its request, before wake (or, for one whose ctx
// ended before the request went out, before copied is closed).
type entry[M, R any] struct {
	ctx  context.Context
	m    M
	size int
	// wake gets leadBatch when this publish is to send the batch in
	// lead, or sendDone when its request was answered. Buffered: the
	// sender never waits for a publish that gave up.
	wake chan wakeKind
	lead []*entry[M, R]
	// copied is closed once the batch's request holds a copy of every
	// member's message (nil for a publish taken alone): a publish that
	// gives up waits for it.
	copied chan struct{}

	res Result[R]

	self [1]*entry[M, R] // a batch of this publish alone
}

type wakeKind uint8

const (
	sendDone wakeKind = iota
	leadBatch
)

func (b *Batcher[M, R]) get(ctx context.Context, m M, size int) *entry[M, R] {
	e, _ := b.pool.Get().(*entry[M, R])
	if e == nil {
		e = &entry[M, R]{wake: make(chan wakeKind, 1)}
		e.self[0] = e
	}
	e.ctx, e.m, e.size = ctx, m, size
	return e
}

// put returns e to the pool once no other goroutine can touch it: its
// wake was received (or it sent its request alone, or left the queue
// unsent). One that gave up with its request in flight is left to the
// garbage collector, since that request's sender still writes to it.
func (b *Batcher[M, R]) put(e *entry[M, R]) {
	*e = entry[M, R]{wake: e.wake, self: e.self}
	b.pool.Put(e)
}

// Send sends m, of size bytes, through q (see the package doc), and
// returns when its request was answered or ctx ended.
func (b *Batcher[M, R]) Send(ctx context.Context, q *Queue[M, R], m M, size int) Result[R] {
	e := b.get(ctx, m, size)
	q.mu.Lock()
	if !q.busy {
		q.busy = true
		q.mu.Unlock()
		b.lead(q, e.self[:])
		return b.result(e)
	}
	q.pending = append(q.pending, e)
	q.mu.Unlock()
	select {
	case w := <-e.wake:
		return b.woken(q, e, w)
	case <-ctx.Done():
	}
	q.mu.Lock()
	if i := slices.Index(q.pending, e); i >= 0 {
		q.pending = slices.Delete(q.pending, i, i+1)
		q.mu.Unlock()
		b.put(e)
		return Result[R]{Err: ctx.Err(), Unsent: true}
	}
	q.mu.Unlock()
	// Taken from the queue: to send its batch (the wake is sent under
	// q.mu, so it is here by now), or in a batch another publish sends.
	select {
	case w := <-e.wake:
		return b.woken(q, e, w)
	default:
	}
	<-e.copied
	if e.res.Unsent {
		return e.res
	}
	return Result[R]{Err: ctx.Err(), MaybeStored: true}
}

// woken ends Send after e's wake: it sends the batch e leads, or takes
// the result its batch's sender left.
func (b *Batcher[M, R]) woken(q *Queue[M, R], e *entry[M, R], w wakeKind) Result[R] {
	if w == leadBatch {
		b.lead(q, e.lead)
	}
	return b.result(e)
}

// result is Send's return for e's request; e goes back to the pool.
func (b *Batcher[M, R]) result(e *entry[M, R]) Result[R] {
	r := e.res
	b.put(e)
	return r
}

// lead sends batch (whose first member is the caller's) as one request,
// hands what queued meanwhile to its first member, then wakes the batch's
// other members. Members whose ctx has ended are left out (Unsent). A
// publish taken alone is sent with One under its own ctx; a batch under
// batchContext.
func (b *Batcher[M, R]) lead(q *Queue[M, R], batch []*entry[M, R]) {
	if e := batch[0]; len(batch) == 1 && e.copied == nil {
		if cerr := e.ctx.Err(); cerr != nil {
			e.res = Result[R]{Err: cerr, Unsent: true}
		} else {
			r, err := b.send.One(e.ctx, e.m)
			e.res = Result[R]{R: r, Err: err, Tried: err != nil}
		}
	} else {
		sent := make([]*entry[M, R], 0, len(batch))
		ms := make([]M, 0, len(batch))
		for _, e := range batch {
			if cerr := e.ctx.Err(); cerr != nil {
				e.res = Result[R]{Err: cerr, Unsent: true}
				continue
			}
			sent = append(sent, e)
			ms = append(ms, e.m)
		}
		copied := batch[0].copied
		var once sync.Once
		done := func() { once.Do(func() { close(copied) }) }
		if len(sent) > 0 {
			sctx, cancel := batchContext(sent)
			r, err := b.send.Batch(sctx, ms, done)
			cancel()
			for i, e := range sent {
				// Field by field: a member that gave up reads its
				// Unsent once copied is closed.
				e.res.R, e.res.Idx, e.res.Err, e.res.Tried, e.res.Batch = r, i, err, err != nil, true
			}
		}
		done()
	}
	q.mu.Lock()
	if next := q.take(b.lim); len(next) > 0 {
		next[0].lead = next
		next[0].wake <- leadBatch
	} else {
		q.busy = false
	}
	q.mu.Unlock()
	for _, e := range batch[1:] {
		e.wake <- sendDone
	}
}

// batchContext is the context of a batch's request: no cancellation, and
// the latest of the members' deadlines, if they all have one.
func batchContext[M, R any](batch []*entry[M, R]) (context.Context, context.CancelFunc) {
	ctx := context.WithoutCancel(batch[0].ctx)
	var last time.Time
	for _, e := range batch {
		d, ok := e.ctx.Deadline()
		if !ok {
			return ctx, func() {}
		}
		if d.After(last) {
			last = d
		}
	}
	return context.WithDeadline(ctx, last)
}

// take removes the next batch from q.pending: the oldest publishes, within
// lim (at least one). q.mu is held.
func (q *Queue[M, R]) take(lim Limits) []*entry[M, R] {
	n, bytes := 0, 0
	for n < len(q.pending) && n < lim.MaxMsgs {
		s := q.pending[n].size
		if n > 0 && bytes+s > lim.MaxBytes {
			break
		}
		bytes += s
		n++
	}
	if n == 0 {
		return nil
	}
	batch := slices.Clone(q.pending[:n])
	q.pending = slices.Delete(q.pending, 0, n)
	if n > 1 {
		c := make(chan struct{})
		for _, e := range batch {
			e.copied = c
		}
	}
	return batch
}
