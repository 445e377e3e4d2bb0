package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// fetchWait is how long one pull request waits at the server for
// messages. It bounds how long Pause and Close wait for the request in
// flight to end (see fetcher), and it is the pace at which a consumer
// with nothing to read asks again.
const fetchWait = 200 * time.Millisecond

// fetcher reads a durable consumer with one bounded pull request at a
// time (jetstream's Fetch), rather than nats.go's endless message
// iterator, so that it can stop without losing a message.
//
// JetStream cannot withdraw a pull request. The server checks that the
// request's reply subject has interest when it picks a message for it,
// then queues the message for the connection; a message picked just
// before the unsubscribe is processed is counted delivered and dropped,
// and comes again only after the ack wait. With the iterator, whose
// request stays open across the unsubscribe, that happened at a hot
// upgrade: about half of the upgrades of a caught-up consumer had one
// such message, and once 57 messages of a batch in flight waited the ack
// wait. A fetcher that is drained instead lets its request end at the
// server (batch filled, or fetchWait over: the server's timeout status
// follows the messages it picked, on the same queue), then reads the
// rest of it, and only then unsubscribes: nothing can be picked for a
// request that is over.
//
// At most batch messages are held that Next has not returned: a new
// request is sent once the previous one is over and read.
//
// Next is called by one goroutine at a time, except that a hand-back
// (consumer.handBack) reads a drained fetcher while the consumer's Next,
// cancelled, lets go of it; next serialises them.
type fetcher struct {
	cons  jetstream.Consumer
	batch int

	next sync.Mutex             // held by Next
	cur  jetstream.MessageBatch // the request being read; guarded by next

	draining atomic.Bool // Drain: no new request
	stopped  atomic.Bool // Stop: nothing more is read
}

func newFetcher(cons jetstream.Consumer, batch int) *fetcher {
	return &fetcher{cons: cons, batch: batch}
}

// errInterrupted: Next's wait ended because its interrupt channel was
// closed (the consumer stopped running).
var errInterrupted = errors.New("natsbroker: next interrupted")

// Next returns the next message of the request in flight, sending a new
// request once that one is over. After Drain it returns what the last
// request brings, then jetstream.ErrMsgIteratorClosed; after Stop,
// ErrMsgIteratorClosed at once. A request that ends with an error status
// (consumer deleted, ...) or cannot be sent (connection closed) gives
// that error. A wait ends with ctx's error when ctx ends, and with
// errInterrupted when interrupt (nil: never) is closed: a channel the
// caller keeps across calls, so that a wait needs no context of its own.
func (f *fetcher) Next(ctx context.Context, interrupt <-chan struct{}) (jetstream.Msg, error) {
	f.next.Lock()
	defer f.next.Unlock()
	for {
		if f.stopped.Load() || (f.draining.Load() && f.cur == nil) {
			return nil, jetstream.ErrMsgIteratorClosed
		}
		if f.cur == nil {
			// While the connection is down the request is buffered and
			// the fetch ends after its wait (nats.go's own timer), so
			// this loop keeps asking at that pace until a reconnect.
			b, err := f.cons.Fetch(f.batch, jetstream.FetchMaxWait(fetchWait))
			if err != nil {
				return nil, fmt.Errorf("pull request: %w", err)
			}
			f.cur = b
		}
		select {
		case m, ok := <-f.cur.Messages():
			if ok {
				return m, nil
			}
			err := f.cur.Error()
			f.cur = nil
			if err != nil {
				return nil, fmt.Errorf("pull request: %w", err)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-interrupt:
			return nil, errInterrupted
		}
	}
}

// Drain sends no new request; Next returns the rest of the one in flight.
func (f *fetcher) Drain() { f.draining.Store(true) }

// Stop reads nothing more. A request in flight is left to end on its own
// (within fetchWait); what it brings is not read and comes again after
// the ack wait.
func (f *fetcher) Stop() { f.stopped.Store(true) }
