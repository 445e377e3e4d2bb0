package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fetchWait is how long one pull request waits at the server for
// messages. It bounds how long Pause and Close wait for the requests in
// flight to end (see fetcher), and it is the pace at which a consumer
// with nothing to read asks again.
const fetchWait = 200 * time.Millisecond

// fetchLost: requests that brought nothing, not even the server's timeout
// status, this long after Next began to wait for them are taken as lost
// (the connection dropped): the pace at which a consumer without a server
// asks again. nats.go's Fetch gives up on a request as late, and shares
// its one weakness: a server that answers later still, on a live
// connection, sends what it picked to an inbox no longer read, and those
// messages come again after the ack wait.
const fetchLost = fetchWait + time.Second

// fetcher reads a durable consumer with bounded pull requests of its own
// on one subscription, rather than nats.go's endless message iterator, so
// that it can stop without losing a message, or its Fetch, which
// subscribes and unsubscribes for every request and leaves the server
// idle while the next one is sent.
//
// JetStream cannot withdraw a pull request. The server checks that the
// request's reply subject has interest when it picks a message for it,
// then queues the message for the connection; a message picked just
// before the unsubscribe is processed is counted delivered and dropped,
// and comes again only after the ack wait. With the iterator, whose
// requests stay open across the unsubscribe, that happened at a hot
// upgrade: about half of the upgrades of a caught-up consumer had one
// such message, and once 57 messages of a batch in flight waited the ack
// wait. A fetcher that is drained instead lets its requests end at the
// server (batch filled, or fetchWait over: the server's timeout status
// says how many it did not bring, on the same queue as the messages it
// picked), reads the rest of them, and only then unsubscribes: nothing can
// be picked for a request that is over.
//
// The window: at most window messages are asked for and not yet returned
// by Next (held in the subscription's channel, or still to come). Each
// request asks for half of it, and one is sent whenever that much of the
// window is free, so while Next reads what one request brought, the
// server already serves the next: it is never left without a request
// while the consumer has room. Both are read from one channel, in the
// order the server sent them.
//
// Next is called by one goroutine at a time, except that a hand-back
// (consumer.handBack) reads a drained fetcher while the consumer's Next,
// cancelled, lets go of it; next serialises them.
type fetcher struct {
	nc      *nats.Conn
	subject string // the consumer's pull subject
	window  int
	size    int    // messages one request asks for
	req     []byte // the request

	next sync.Mutex     // held by Next
	msgs chan *nats.Msg // the subscription's; guarded by next
	open int            // asked for, not yet returned or ended; guarded by next
	lost *time.Timer    // fetchLost while Next waits; guarded by next

	sub      atomic.Pointer[nats.Subscription] // nil before the first request and once over
	draining atomic.Bool                       // Drain: no new request
	stopped  atomic.Bool                       // Stop: nothing more is read
	given    atomic.Int64                      // requests taken as lost (tests)
}

func newFetcher(nc *nats.Conn, cons jetstream.Consumer, window int) *fetcher {
	info := cons.CachedInfo()
	size := max(window/2, 1)
	return &fetcher{
		nc:      nc,
		subject: jetstream.DefaultAPIPrefix + "CONSUMER.MSG.NEXT." + info.Stream + "." + info.Name,
		window:  window,
		size:    size,
		req:     fmt.Appendf(nil, `{"batch":%d,"expires":%d}`, size, fetchWait.Nanoseconds()),
	}
}

// errInterrupted: Next's wait ended because its interrupt channel was
// closed (the consumer stopped running).
var errInterrupted = errors.New("natsbroker: next interrupted")

// Next returns the next message the requests in flight bring, sending new
// requests as the window frees. After Drain it returns what the requests
// in flight bring, then jetstream.ErrMsgIteratorClosed; after Stop,
// ErrMsgIteratorClosed at once. A request the server ends with an error
// status (consumer deleted, ...) or one that cannot be sent (connection
// closed) gives that error. A wait ends with ctx's error when ctx ends,
// and with errInterrupted when interrupt (nil: never) is closed: a channel
// the caller keeps across calls, so that a wait needs no context of its
// own.
func (f *fetcher) Next(ctx context.Context, interrupt <-chan struct{}) (*nats.Msg, error) {
	f.next.Lock()
	defer f.next.Unlock()
	for {
		if f.stopped.Load() || (f.draining.Load() && f.open == 0) {
			f.unsubscribe()
			return nil, jetstream.ErrMsgIteratorClosed
		}
		if err := f.ask(); err != nil {
			return nil, fmt.Errorf("pull request: %w", err)
		}
		var m *nats.Msg
		select {
		case m = <-f.msgs: // what has come goes first, whatever else is ready
		default:
			var err error
			if m, err = f.wait(ctx, interrupt); err != nil {
				return nil, err
			}
			if m == nil {
				continue
			}
		}
		if ok, err := f.ended(m); err != nil {
			return nil, fmt.Errorf("pull request: %w", err)
		} else if ok {
			continue
		}
		f.open = max(f.open-1, 0)
		return m, nil
	}
}

// ask sends requests while the window has room for one, subscribing
// first if there is no subscription yet.
func (f *fetcher) ask() error {
	if f.draining.Load() {
		return nil
	}
	sub := f.sub.Load()
	for f.open+f.size <= f.window {
		if sub == nil {
			var err error
			if sub, err = f.subscribe(); err != nil {
				return err
			}
		}
		if err := f.nc.PublishRequest(f.subject, sub.Subject, f.req); err != nil {
			return err
		}
		f.open += f.size
	}
	return nil
}

// subscribe makes the inbox the requests are answered on. Each
// subscription has an inbox of its own: requests taken as lost may still
// reach the server later (sent from the reconnect buffer), and must find
// no interest there rather than fill a window counted as free.
func (f *fetcher) subscribe() (*nats.Subscription, error) {
	if f.msgs == nil {
		// A request's timeout status may come beside the window's
		// messages; stale ones of an earlier subscription never do.
		f.msgs = make(chan *nats.Msg, f.window+f.window/f.size+1)
	}
	sub, err := f.nc.ChanSubscribe(f.nc.NewInbox(), f.msgs)
	if err != nil {
		return nil, err
	}
	f.sub.Store(sub)
	if f.stopped.Load() { // Stop came meanwhile, and found no subscription
		f.unsubscribe() // a request to sub's inbox then finds no interest
	}
	return sub, nil
}

// unsubscribe ends the subscription, if any.
func (f *fetcher) unsubscribe() {
	if sub := f.sub.Swap(nil); sub != nil {
		_ = sub.Unsubscribe()
	}
}

// wait blocks for a message. A nil message and no error: the requests in
// flight are taken as lost (fetchLost), their inbox dropped, and the
// window is free again.
func (f *fetcher) wait(ctx context.Context, interrupt <-chan struct{}) (*nats.Msg, error) {
	if f.lost == nil {
		f.lost = time.NewTimer(fetchLost)
	} else {
		f.lost.Reset(fetchLost)
	}
	defer f.lost.Stop()
	select {
	case m := <-f.msgs:
		return m, nil
	case <-f.lost.C:
		f.unsubscribe()
		f.drop()
		f.open = 0
		f.given.Add(1)
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-interrupt:
		return nil, errInterrupted
	}
}

// drop discards what an unsubscribed inbox left in the channel (nothing
// more comes for it): only a message that arrived in the instant its
// requests were given up, which comes again after the ack wait; kept, it
// would sit beside a window asked for again in full.
func (f *fetcher) drop() {
	for {
		select {
		case <-f.msgs:
		default:
			return
		}
	}
}

// ended reports whether m is a status message, and the error it ends the
// fetcher with. A request the server ends early (its timeout) says how
// many messages it did not bring; a request it refuses, brought none.
// Statuses that end the consumer's requests for good (deleted, ...) are
// errors, as they are for nats.go's Fetch. A message with an ack subject
// is a delivery, whatever its headers: another producer's empty message
// with a Status header is not taken for the server's.
func (f *fetcher) ended(m *nats.Msg) (bool, error) {
	if m.Reply != "" || len(m.Data) > 0 || len(m.Header) == 0 {
		return false, nil
	}
	status := m.Header.Get(statusHdr)
	if status == "" {
		return false, nil
	}
	switch status {
	case "100": // a heartbeat: never asked for
		return true, nil
	case "404", "408": // no messages, the request's timeout
	default:
		return true, fmt.Errorf("status %s %s", status, m.Header.Get(descrHdr))
	}
	left := f.size // no count: the whole request
	if v := m.Header.Get(pendingMsgsHdr); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return true, fmt.Errorf("status %s: %s %q: %w", status, pendingMsgsHdr, v, err)
		}
		left = n
	}
	f.open = max(f.open-left, 0)
	return true, nil
}

// The headers of a status message, as nats.go reads its status line
// (statusHdr, descrHdr), and pendingMsgsHdr: the messages a request
// ended by the server did not bring.
const (
	statusHdr      = "Status"
	descrHdr       = "Description"
	pendingMsgsHdr = "Nats-Pending-Messages"
)

// Drain sends no new request; Next returns the rest of the ones in flight.
func (f *fetcher) Drain() { f.draining.Store(true) }

// Stop reads nothing more and unsubscribes. Requests in flight end at the
// server; what they picked is dropped and comes again after the ack wait.
func (f *fetcher) Stop() {
	f.stopped.Store(true)
	f.unsubscribe()
}
