package core

import (
	"sync"
	"sync/atomic"
)

// IDs hands out request ids unique on one connection. Zero is never handed
// out, so it can mean "no id". The zero value is ready.
type IDs struct{ n atomic.Uint64 }

// Next returns a fresh id.
func (g *IDs) Next() uint64 {
	for {
		if id := g.n.Add(1); id != 0 {
			return id
		}
	}
}

// Last returns the last id handed out (0 if none).
func (g *IDs) Last() uint64 { return g.n.Load() }

// Continue makes Next go on above last: a connection adopted from another
// process keeps its id sequence, so no id is reused on it.
func (g *IDs) Continue(last uint64) { g.n.Store(last) }

// Pending matches answers to outstanding requests by id. Each request gets
// a channel with room for one answer, so resolving never blocks the read
// loop. T is the decoded answer. The zero value is not ready; use
// NewPending.
//
// Exactly one value is ever sent on a request's channel (by Resolve, by
// FailAll, or by Add on a failed table), so once its caller has received
// that value nothing refers to the channel any more: Done gives it back
// and Add hands it to a later request instead of allocating one per
// request (a proxy makes one per call and hop).
type Pending[T any] struct {
	mu     sync.Mutex
	m      map[uint64]chan Result[T]
	free   []chan Result[T] // answered channels given back by Done
	closed error
}

// maxFree bounds Pending.free: a burst of requests does not leave its
// channels behind for good.
const maxFree = 256

// Result is an answer or the reason none will come.
type Result[T any] struct {
	Val T
	Err error
}

// NewPending returns an empty table.
func NewPending[T any]() *Pending[T] {
	return &Pending[T]{m: make(map[uint64]chan Result[T])}
}

// Add registers id and returns the channel its answer will arrive on; the
// caller only receives from it. If the table was failed already, the
// channel holds that error at once.
func (p *Pending[T]) Add(id uint64) chan Result[T] {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ch chan Result[T]
	if n := len(p.free); n > 0 {
		ch = p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
	} else {
		ch = make(chan Result[T], 1)
	}
	if p.closed != nil {
		ch <- Result[T]{Err: p.closed}
		return ch
	}
	p.m[id] = ch
	return ch
}

// Resolve delivers the answer for id. It returns false if no request with
// that id is outstanding (answered already, abandoned, or never sent).
func (p *Pending[T]) Resolve(id uint64, r Result[T]) bool {
	p.mu.Lock()
	ch, ok := p.m[id]
	delete(p.m, id)
	p.mu.Unlock()
	if ok {
		ch <- r
	}
	return ok
}

// Done gives back the channel Add returned, after the caller received its
// answer from it. A channel whose caller gave up waiting (Remove) must not
// be given back: its answer may still be on its way.
func (p *Pending[T]) Done(ch chan Result[T]) {
	p.mu.Lock()
	if len(p.free) < maxFree {
		p.free = append(p.free, ch)
	}
	p.mu.Unlock()
}

// Remove forgets id, for a caller that gave up waiting.
func (p *Pending[T]) Remove(id uint64) {
	p.mu.Lock()
	delete(p.m, id)
	p.mu.Unlock()
}

// Len returns the number of outstanding requests.
func (p *Pending[T]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}

// FailAll answers every outstanding request with err, and every later Add
// too: the connection they were sent on is gone.
func (p *Pending[T]) FailAll(err error) {
	p.mu.Lock()
	m := p.m
	p.m = make(map[uint64]chan Result[T])
	p.closed = err
	p.mu.Unlock()
	for _, ch := range m {
		ch <- Result[T]{Err: err}
	}
}
