package rocketmqbroker

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
)

// Publishes to one queue go out together. RocketMQ's broker takes a
// batch of messages for one queue in one request (SEND_BATCH_MESSAGE) and
// stores them at consecutive offsets, all or none (rocketmq-client-go
// sends one when SendSync is given several messages; the adapter encodes
// it the same way, with MarshalMessageBatch, itself). A request costs the
// client and the broker about as much as a message in it (a frame with a
// JSON header each way, a response future, two wake-ups), so the adapter
// groups the publishes that wait for the same queue:
//
//   - A publish whose queue has no request in flight is sent at once,
//     alone, as before: one publish at a time waits no longer.
//   - While a queue's request is in flight, the publishes for it queue up.
//     When the request is answered, the publish that sent it hands the
//     queued ones (up to Config.MaxBatch, and maxBatchBytes) to the first
//     of them, which sends them as one request, and so on. Each queue has
//     one request in flight at a time; a broker stores one queue's
//     messages in order anyway.
//   - Each publish gets its own answer: the queue, the batch's first
//     offset plus its place in the batch, and its own message id (the
//     UNIQ_KEY the adapter gives each member, as the client gives a
//     message sent alone).
//   - A failed batch is not the members' last word: each member goes on
//     alone from there, as a publish whose first attempt failed with that
//     error (Broker.send), so retries, "not stored" and "outcome unknown"
//     are decided per message by the same rules as before.
//
// Only messages RocketMQ lets into a batch and that the client would send
// alike are grouped: bodies under the client's compression threshold
// (a batch is never compressed; a single message of 4 KiB or more is),
// never delayed or transactional ones (the adapter sends neither). The
// queue of a message is picked by the adapter from the route the client
// last used for its topic (javaHashSelector.pick), with Select's rule, so
// a key keeps its queue; a topic not sent to yet goes alone, through the
// selector, and its route is known from then on.

const (
	// DefaultMaxBatch is Config.MaxBatch's default.
	DefaultMaxBatch = 64
	// maxBatchBytes bounds a batch's bodies and properties, far under a
	// broker's smallest sane maxMessageSize (the batch request's body is
	// checked against it).
	maxBatchBytes = 256 << 10
	// batchableBody is the client's CompressMsgBodyOverHowmuch default: it
	// compresses a body from this size on when sent alone, never in a
	// batch, so larger bodies go alone to stay stored as before.
	batchableBody = 4 << 10
)

// sendQueue groups the publishes waiting for one queue (see above).
type sendQueue struct {
	mu      sync.Mutex
	pending []*queuedSend // waiting for the request in flight to end
	busy    bool          // a request for this queue is in flight
}

// queuedSend is one publish in a sendQueue. Its results are written by
// the goroutine that sends its batch, before wake (or, for one whose ctx
// ended before the batch went out, before encoded is closed).
type queuedSend struct {
	ctx  context.Context
	rm   *primitive.Message
	size int
	// wake gets leadBatch when this publish is to send the batch in
	// lead, or sendDone when its batch was answered. Buffered: the sender
	// never waits for a publish that gave up.
	wake chan wakeKind
	lead []*queuedSend
	// encoded is closed once the batch's request holds a copy of every
	// member's message (nil for a batch of one): a publish that gives up
	// waits for it, since its caller may reuse the body once it returns.
	encoded chan struct{}

	sr     *primitive.SendResult // the batch's result, nil on err
	idx    int                   // place in the batch
	err    error                 // the batch's attempt's error, or ctx's when unsent
	unsent bool                  // ctx ended before the batch went out: not sent

	self [1]*queuedSend // a batch of this publish alone
}

// getSend returns a queuedSend for rm from the Broker's pool.
func (b *Broker) getSend(ctx context.Context, rm *primitive.Message, size int) *queuedSend {
	r, _ := b.sends.Get().(*queuedSend)
	if r == nil {
		r = &queuedSend{wake: make(chan wakeKind, 1)}
		r.self[0] = r
	}
	r.ctx, r.rm, r.size = ctx, rm, size
	return r
}

// putSend returns r to the pool once no other goroutine can touch it: its
// wake was received (or it sent its batch alone, or left the queue
// unsent). One that gave up with its batch in flight is left to the
// garbage collector, since that batch's sender still writes to it.
func (b *Broker) putSend(r *queuedSend) {
	*r = queuedSend{wake: r.wake, self: r.self}
	b.sends.Put(r)
}

type wakeKind uint8

const (
	sendDone wakeKind = iota
	leadBatch
)

// batchSize counts a message against maxBatchBytes: its body, its
// properties, and the 22 bytes of framing each member gets in the batch.
func batchSize(bodyLen, propsLen int) int { return bodyLen + propsLen + 22 }

// sendQueued sends rm, whose queue q was picked, with the publishes
// waiting for q (see above). It returns the result of the request that
// carried rm and rm's place in it, or, with tried set, that request's
// error (rm was not sent alone yet, and Publish goes on with Broker.send).
// When ctx ends before rm's request goes out, rm is not sent; when it
// ends while the request is in flight, the outcome is unknown
// (maybeStored). A publish that sends a batch returns when the batch is
// answered, even after its own ctx ended.
func (b *Broker) sendQueued(ctx context.Context, q *sendQueue, rm *primitive.Message, size int) (sr *primitive.SendResult, idx int, maybeStored, tried bool, err error) {
	r := b.getSend(ctx, rm, size)
	q.mu.Lock()
	if !q.busy {
		q.busy = true
		q.mu.Unlock()
		b.lead(q, r.self[:])
		return b.result(r)
	}
	q.pending = append(q.pending, r)
	q.mu.Unlock()
	select {
	case w := <-r.wake:
		return b.woken(q, r, w)
	case <-ctx.Done():
	}
	q.mu.Lock()
	if i := slices.Index(q.pending, r); i >= 0 {
		q.pending = slices.Delete(q.pending, i, i+1)
		q.mu.Unlock()
		b.putSend(r)
		return nil, 0, false, false, ctx.Err()
	}
	q.mu.Unlock()
	// Taken from the queue: to send its batch (the wake is sent under
	// q.mu, so it is here by now), or in a batch another publish sends.
	select {
	case w := <-r.wake:
		return b.woken(q, r, w)
	default:
	}
	<-r.encoded
	if r.unsent {
		return nil, 0, false, false, r.err
	}
	return nil, 0, true, false, ctx.Err()
}

// woken ends sendQueued after r's wake: it sends the batch r leads, or
// takes the result its batch's sender left.
func (b *Broker) woken(q *sendQueue, r *queuedSend, w wakeKind) (*primitive.SendResult, int, bool, bool, error) {
	if w == leadBatch {
		b.lead(q, r.lead)
	}
	return b.result(r)
}

// result is sendQueued's return for r's batch's outcome; r goes back to
// the pool.
func (b *Broker) result(r *queuedSend) (sr *primitive.SendResult, idx int, maybeStored, tried bool, err error) {
	if r.unsent {
		sr, idx, err = nil, 0, r.err
	} else {
		sr, idx, tried, err = r.sr, r.idx, r.err != nil, r.err
	}
	b.putSend(r)
	return sr, idx, false, tried, err
}

// lead sends batch (whose first member is the caller's) as one request,
// hands what queued meanwhile to its first member, then wakes the batch's
// other members. Members whose ctx has ended are left out (unsent). The
// caller's own message alone is sent as before batching, bound by its
// ctx. A batch is bound by the latest of its members' deadlines instead,
// and not by their cancellation, since its sender carries the others'
// messages: each member stops waiting at its own ctx's end, and the
// client's send timeout (3 s) bounds every request.
func (b *Broker) lead(q *sendQueue, batch []*queuedSend) {
	if r := batch[0]; len(batch) == 1 && r.encoded == nil {
		if cerr := r.ctx.Err(); cerr != nil {
			r.err, r.unsent = cerr, true
		} else {
			r.sr, r.err = b.producer.p.SendSync(r.ctx, r.rm)
		}
	} else {
		sent := make([]*queuedSend, 0, len(batch))
		msgs := make([]*primitive.Message, 0, len(batch))
		for _, r := range batch {
			if cerr := r.ctx.Err(); cerr != nil {
				r.err, r.unsent = cerr, true
				continue
			}
			// The client gives a message sent alone its id; a batch's
			// members need theirs from the sender (Java's client does the
			// same in MessageBatch). A member sent alone later keeps it.
			if r.rm.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex) == "" {
				r.rm.WithProperty(primitive.PropertyUniqueClientMessageIdKeyIndex, primitive.CreateUniqID())
			}
			sent = append(sent, r)
			msgs = append(msgs, r.rm)
		}
		var body []byte
		if len(msgs) > 0 {
			body = producer.MarshalMessageBatch(msgs...)
		}
		if enc := batch[0].encoded; enc != nil {
			close(enc)
		}
		if len(sent) > 0 {
			// One message whose body is the members' encoded one after
			// the other and Batch set: the request SendSync makes of
			// several messages, encoded here so that encoded can be
			// closed before the round trip.
			sctx, cancel := batchContext(sent)
			sr, err := b.producer.p.SendSync(sctx, &primitive.Message{
				Topic: msgs[0].Topic, Queue: msgs[0].Queue, Body: body, Batch: true,
			})
			cancel()
			for i, r := range sent {
				r.sr, r.idx, r.err = sr, i, err
			}
		}
	}
	q.mu.Lock()
	if next := q.take(b.cfg.MaxBatch); len(next) > 0 {
		next[0].lead = next
		next[0].wake <- leadBatch
	} else {
		q.busy = false
	}
	q.mu.Unlock()
	for _, r := range batch[1:] {
		r.wake <- sendDone
	}
}

// batchContext is the context of a batch's request: no cancellation, and
// the latest of the members' deadlines, if they all have one.
func batchContext(batch []*queuedSend) (context.Context, context.CancelFunc) {
	ctx := context.WithoutCancel(batch[0].ctx)
	var last time.Time
	for _, r := range batch {
		d, ok := r.ctx.Deadline()
		if !ok {
			return ctx, func() {}
		}
		if d.After(last) {
			last = d
		}
	}
	return context.WithDeadline(ctx, last)
}

// take removes the next batch from q.pending: the oldest publishes, up to
// maxMsgs of them and maxBatchBytes (at least one). q.mu is held.
func (q *sendQueue) take(maxMsgs int) []*queuedSend {
	n, bytes := 0, 0
	for n < len(q.pending) && n < maxMsgs {
		s := q.pending[n].size
		if n > 0 && bytes+s > maxBatchBytes {
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
		enc := make(chan struct{})
		for _, r := range batch {
			r.encoded = enc
		}
	}
	return batch
}
