package client

import (
	"context"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/core"
)

// PublishAck says where the broker stored a published message. Which
// fields are set depends on the broker; Partition is -1 when it has none.
type PublishAck = mesh.PublishAck

// publishEnc encodes a Message as a PUBLISH payload without copying it.
type publishEnc Message

func (m *publishEnc) AppendTo(b []byte) []byte {
	p := mesh.Publish{Topic: m.Topic, Key: m.Key, Headers: m.Headers, Body: m.Body,
		Flags: mesh.NewMessageFlags(m.NullBody, m.EmptyKey && m.Key == "")}
	if m.Tag != "" {
		p.Headers = append(p.Headers[:len(p.Headers):len(p.Headers)], mesh.HeaderField{Key: HeaderTag, Value: m.Tag})
	}
	if m.Colour != "" {
		p.Headers = append(p.Headers[:len(p.Headers):len(p.Headers)], mesh.HeaderField{Key: HeaderColour, Value: m.Colour})
	}
	return p.AppendTo(b)
}

func checkMessage(m *Message) error {
	if m == nil || m.Topic == "" {
		return fmt.Errorf("%w: a message needs a topic", errInvalidArg)
	}
	if m.NullBody && len(m.Body) > 0 {
		return fmt.Errorf("%w: a message with a null body (NullBody) has no Body", errInvalidArg)
	}
	return nil
}

// Publish publishes m and returns where the broker stored it. It returns
// only after the broker acknowledged the message durably, or with an error:
// an *Error for an ERROR answer (CodeOf tells which), ErrConnectionLost if
// the connection dropped with the publish outstanding, ErrClosed, or ctx's
// error. While the Client reconnects Publish waits for the new connection,
// until ctx ends. After ErrConnectionLost, a CodeTimeout *Error or a ctx
// error the message may have been stored or not (see the package doc). m is
// not retained after Publish returns. With tracing on (WithTracerProvider)
// Publish is traced by a "publish <topic>" span, child of ctx's span, whose
// context travels in the sent message's headers.
func (c *Client) Publish(ctx context.Context, m *Message) (ack PublishAck, err error) {
	if err := checkMessage(m); err != nil {
		return PublishAck{}, err
	}
	span, m := c.startPublish(ctx, m)
	if span != nil {
		defer func() { endPublish(span, ack, err) }()
	}
	cn, err := c.current(ctx)
	if err != nil {
		return PublishAck{}, err
	}
	id, ch, err := cn.Start(mesh.KindPublish, (*publishEnc)(m))
	if err != nil {
		return PublishAck{}, err
	}
	select {
	case r := <-ch:
		cn.Release(ch)
		return publishResult(r)
	case <-ctx.Done():
		cn.Forget(id)
		return PublishAck{}, ctx.Err()
	}
}

// PublishAsync publishes m without waiting for the broker's answer: it
// returns once the PUBLISH frame is queued on the connection, to be
// written with the frames queued after it (waiting for a connection while
// the Client reconnects, until ctx ends), and done is called exactly once
// with the outcome Publish would have returned. done runs on the Client's
// completion goroutine, in the order the publishes were made, so it must
// not block long; a publish whose ctx ends before its answer completes
// with ctx's error. m is not retained after PublishAsync returns. The
// number of publishes in flight is the caller's to bound. Tracing is as
// for Publish; the span ends just before done is called.
func (c *Client) PublishAsync(ctx context.Context, m *Message, done func(PublishAck, error)) {
	if done == nil {
		done = func(PublishAck, error) {}
	}
	it := asyncItem{ctx: ctx, done: done}
	it.err = checkMessage(m)
	if it.err == nil {
		it.span, m = c.startPublish(ctx, m)
		it.cn, it.err = c.current(ctx)
	}
	if it.err == nil {
		// Queued, not written on the caller's goroutine: an app publishes
		// asynchronously from one goroutine, one message after another,
		// so each frame took a write syscall of its own; queued, the
		// frames published while one syscall runs share the next.
		it.id, it.ch, it.err = it.cn.StartQueued(mesh.KindPublish, (*publishEnc)(m))
	}
	if !c.async.push(it) {
		// Closed: the completion goroutine is gone. Keep the promise that
		// done never runs on the caller's goroutine.
		late := it // only this copy escapes, and only here
		go late.complete(PublishAck{}, ErrClosed)
	}
}

func publishResult(r core.Result[mesh.Frame]) (PublishAck, error) {
	if r.Err != nil {
		return PublishAck{}, r.Err
	}
	if err := answerErr(r.Val, mesh.KindPublishAck); err != nil {
		return PublishAck{}, err
	}
	var ack PublishAck
	if err := ack.Decode(r.Val.Payload); err != nil {
		return PublishAck{}, fmt.Errorf("%w: %w", errUnexpected, err)
	}
	return ack, nil
}

// asyncItem is one PublishAsync waiting for its outcome.
type asyncItem struct {
	ctx  context.Context
	done func(PublishAck, error)
	err  error // set when the publish failed before it was sent
	cn   *conn
	id   uint64
	ch   chan core.Result[mesh.Frame] // only received from, then released
	span trace.Span                   // nil when not traced
}

// complete ends the item's span and calls its done.
func (it *asyncItem) complete(ack PublishAck, err error) {
	endPublish(it.span, ack, err)
	it.done(ack, err)
}

// asyncQueue hands PublishAsync items to the completion goroutine in
// order. Its lock is a leaf.
type asyncQueue struct {
	mu     sync.Mutex
	items  []asyncItem
	closed bool
	wake   chan struct{} // capacity 1: "items were added or the queue closed"
}

func (q *asyncQueue) init() { q.wake = make(chan struct{}, 1) }

func (q *asyncQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// push appends it; false once the queue is closed.
func (q *asyncQueue) push(it asyncItem) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, it)
	q.mu.Unlock()
	q.signal()
	return true
}

// close refuses new items; those queued are still completed.
func (q *asyncQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

// take waits for items and swaps them with spare (an emptied earlier
// batch, so the two slices are reused). It returns false when the queue
// is closed and empty.
func (q *asyncQueue) take(spare []asyncItem) ([]asyncItem, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			batch := q.items
			q.items = spare[:0]
			q.mu.Unlock()
			return batch, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, false
		}
		<-q.wake
	}
}

// completeAsync is the completion goroutine: it waits for each async
// publish's answer in order and calls its done. Close fails every
// outstanding request, so it always drains the queue and returns.
func (c *Client) completeAsync() {
	var spare []asyncItem
	for {
		batch, ok := c.async.take(spare)
		if !ok {
			return
		}
		for i := range batch {
			c.finishAsync(&batch[i])
			batch[i] = asyncItem{}
		}
		spare = batch
	}
}

func (c *Client) finishAsync(it *asyncItem) {
	if it.err != nil {
		it.complete(PublishAck{}, it.err)
		return
	}
	var r core.Result[mesh.Frame]
	select {
	case r = <-it.ch:
	case <-it.ctx.Done():
		it.cn.Forget(it.id)
		select {
		case r = <-it.ch: // answered just in time
		default:
			it.complete(PublishAck{}, it.ctx.Err())
			return
		}
	}
	it.cn.Release(it.ch)
	it.complete(publishResult(r))
}
