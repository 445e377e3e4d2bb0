package broker

import (
	"context"
	"fmt"
	"sync"
)

// Open is the part of an adapter's state every adapter keeps the same way:
// whether it was closed, and the consumers open on it, which its Close
// closes. The zero value is open with no consumers; it is safe for
// concurrent use. Its lock is a leaf: no other lock is taken while it is
// held (the callbacks below run under it and must not take one).
type Open[C comparable] struct {
	mu        sync.Mutex
	closed    bool
	consumers map[C]struct{}
}

// Closed reports whether Close was called.
func (o *Open[C]) Closed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closed
}

// Add records c as open, and runs also (may be nil) under the same lock, so
// that Close, which takes it, sees what also did (a WaitGroup.Add, say). It
// reports false, adding nothing, when the adapter is closed: the caller
// then stops c itself and returns ErrClosed.
func (o *Open[C]) Add(c C, also func()) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	if o.consumers == nil {
		o.consumers = make(map[C]struct{})
	}
	o.consumers[c] = struct{}{}
	if also != nil {
		also()
	}
	return true
}

// Remove forgets c (its own Close ran). Removing an unknown one does nothing.
func (o *Open[C]) Remove(c C) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.consumers, c)
}

// Close marks the adapter closed and returns the consumers open at that
// moment, for the adapter's Close to close; first is false on later calls
// (with no consumers), which then only wait for what the first started.
func (o *Open[C]) Close() (open []C, first bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, false
	}
	o.closed = true
	open = make([]C, 0, len(o.consumers))
	for c := range o.consumers {
		open = append(open, c)
	}
	return open, true
}

// CheckPublish is what every adapter's Publish checks before it touches the
// broker: a message, a live ctx, an open adapter (o) and a topic name the
// broker takes (checkTopic, the adapter's own rule, whose error is wrapped
// with ErrRejected). Errors are prefixed "<adapter>: publish".
func CheckPublish[C comparable](ctx context.Context, adapter string, o *Open[C], msg *Message, checkTopic func(string) error) error {
	if msg == nil {
		return fmt.Errorf("%s: publish: nil message: %w", adapter, ErrRejected)
	}
	topic := msg.Topic
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: publish %q: %w", adapter, topic, err)
	}
	if o.Closed() {
		return fmt.Errorf("%s: publish %q: %w", adapter, topic, ErrClosed)
	}
	if err := checkTopic(topic); err != nil {
		return fmt.Errorf("%s: publish %q: %w: %w", adapter, topic, ErrRejected, err)
	}
	return nil
}
