package stream

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// This file is the stream layer's call without a goroutine (Cluster.Start),
// for multiplexed codecs whose connections queue writes (RequestQueuer).
// RoundTrip makes its caller wait for the answer, so a proxy serving a
// call that way spends a goroutine, a channel hand-off and a timer per
// call and hop; those were the largest cost of the two sidecars after the
// write and read syscalls (docs/benchmarks.md, RPC). With Start the
// request is queued on the upstream connection and the answer handed to a
// Done from the connection's read loop. Timeouts are found by one sweeper
// goroutine per cluster, which runs while calls are outstanding and checks
// them every sweepEvery.
//
// Lock order: Cluster.connsMu before asyncTable.mu; neither is held
// across a write, a Done or a channel wait.

// Done receives the outcome of a call started with Cluster.Start: the
// answer (which the receiver releases) or an *Error. CallDone is called
// exactly once, from the upstream connection's read loop, the cluster's
// sweeper, or the goroutine failing the connection; it must not wait
// (queue its writes: ResponseQueuer).
type Done interface {
	CallDone(resp *Message, err error)
}

// sweepEvery is how often the sweeper looks for calls past their
// deadline: a Start call may time out up to this much late.
const sweepEvery = 5 * time.Millisecond

// asyncCall is a call started with Start, outstanding on uc.
type asyncCall struct {
	ctx      context.Context
	req      *Message
	x        *Exchange
	done     Done
	h        *host
	uc       *uconn
	timeout  time.Duration
	deadline int64 // unix nanoseconds

	// state keeps a call Start is still sending from being finished under
	// it (its request released, its Done freeing it): an answer, a
	// timeout or a connection failure that comes first is parked in
	// resp and err, and Start finishes the call once the request is out.
	state atomic.Int32
	resp  *Message
	err   error
}

// asyncCall.state values.
const (
	callSending int32 = iota // Start is writing the request
	callSent                 // whoever takes the call finishes it
	callParked               // taken while sending: Start finishes it
)

var asyncCallPool = sync.Pool{New: func() any { return new(asyncCall) }}

// asyncTable holds a connection's calls started with Start.
type asyncTable struct {
	mu     sync.Mutex
	m      map[uint64]*asyncCall
	closed bool // the connection failed: no more calls
	n      atomic.Int64
}

// Start sends req like RoundTrip and hands the answer to done instead of
// waiting for it. It never waits: a call that cannot be queued at once
// (the codec does not queue, the host picked has no open connection yet,
// the connection's writer is full) goes through RoundTrip on a goroutine
// of the cluster's. ctx is not watched while the call is queued: Close
// fails the calls outstanding with ErrShuttingDown. An answer with
// Refused set is retried on another host (with RoundTrip, on a goroutine
// of the cluster's) while one is left. x.Upstream is set as RoundTrip
// does.
func (c *Cluster) Start(ctx context.Context, req *Message, timeout time.Duration, x *Exchange, done Done) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if c.mux && !c.closed.Load() {
		now := time.Now().UnixNano()
		var tried hostSet
		h := c.lb.pick(&tried, now)
		if h != nil && c.queue(ctx, req, timeout, x, done, h, now) {
			return
		}
		if h != nil {
			c.wait(ctx, req, timeout, x, done, h)
			return
		}
	}
	c.wait(ctx, req, timeout, x, done, nil)
}

// wait serves a call RoundTrip's way, on a goroutine of the cluster's,
// starting with host first if not nil.
func (c *Cluster) wait(ctx context.Context, req *Message, timeout time.Duration, x *Exchange, done Done, first *host) {
	if !c.routines.Go(func() { done.CallDone(c.roundTripFrom(ctx, req, timeout, x, first)) }) {
		done.CallDone(nil, Errorf(ErrShuttingDown, "cluster %s is closed", c.name))
	}
}

// queue queues the call on an open connection to h, or returns false
// having sent nothing.
func (c *Cluster) queue(ctx context.Context, req *Message, timeout time.Duration, x *Exchange, done Done, h *host, now int64) bool {
	h.mu.Lock()
	if n := len(h.conns); n == 0 || n < c.connsPerHost && h.dialing == nil {
		h.mu.Unlock()
		return false // RoundTrip dials
	}
	uc := h.pickLocked(c.roundRobin)
	h.mu.Unlock()
	if uc == nil {
		return false
	}
	q, ok := uc.cc.(RequestQueuer)
	if !ok {
		return false
	}
	a := asyncCallPool.Get().(*asyncCall)
	a.ctx, a.req, a.x, a.done, a.h, a.uc, a.timeout, a.deadline = ctx, req, x, done, h, uc, timeout, now+int64(timeout)
	a.state.Store(callSending)
	if x != nil {
		x.Upstream = h.addr
	}
	id := uc.ids.Next()
	if !uc.async.add(id, a) {
		putAsync(a)
		return false
	}
	h.active.Add(1)
	uc.inflight.Add(1)
	c.outstanding.Add(1)
	queued, err := q.QueueRequest(id, req)
	switch {
	case err != nil:
		// fail takes a (and every other call on uc): ErrUpstreamReset.
		uc.fail(err)
	case !queued:
		if uc.async.take(id) == a {
			c.settle(a)
			putAsync(a)
			return false
		}
		// Taken meanwhile (the connection failed, or the deadline passed):
		// parked below.
	}
	if !a.state.CompareAndSwap(callSending, callSent) {
		c.finish(a, a.resp, a.err) // taken while sending
	}
	c.sweepSoon()
	return true
}

// complete ends a call taken from its table, or parks the outcome for
// Start if it is still sending the request (asyncCall.state).
func (c *Cluster) complete(a *asyncCall, resp *Message, err error) {
	a.resp, a.err = resp, err
	if a.state.CompareAndSwap(callSending, callParked) {
		return
	}
	a.resp, a.err = nil, nil
	c.finish(a, resp, err)
}

func putAsync(a *asyncCall) {
	a.ctx, a.req, a.x, a.done, a.h, a.uc, a.resp, a.err = nil, nil, nil, nil, nil, nil, nil, nil
	asyncCallPool.Put(a)
}

// settle undoes Start's counts for a call that is over.
func (c *Cluster) settle(a *asyncCall) {
	a.h.active.Add(-1)
	a.uc.inflight.Add(-1)
	c.outstanding.Add(-1)
}

// finish ends a call with its answer or error: a refused answer is retried
// on another host, anything else goes to its Done.
func (c *Cluster) finish(a *asyncCall, resp *Message, err error) {
	c.settle(a)
	if err == nil && resp.Refused && len(c.hosts) > 1 {
		a.h.markDown()
		resp.Release()
		left := time.Duration(a.deadline - time.Now().UnixNano())
		ctx, req, x, done := a.ctx, a.req, a.x, a.done
		putAsync(a)
		if left <= 0 || !c.routines.Go(func() { done.CallDone(c.RoundTrip(ctx, req, left, x)) }) {
			done.CallDone(nil, Errorf(ErrNoHealthyHost, "cluster %s: refused, and no time or host left to retry", c.name))
		}
		return
	}
	done := a.done
	putAsync(a)
	done.CallDone(resp, err)
}

// add records a call; false if the connection has failed.
func (t *asyncTable) add(id uint64, a *asyncCall) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.m == nil {
		t.m = make(map[uint64]*asyncCall)
	}
	t.m[id] = a
	t.n.Add(1)
	return true
}

// take removes and returns call id, or nil.
func (t *asyncTable) take(id uint64) *asyncCall {
	if t.n.Load() == 0 {
		return nil
	}
	t.mu.Lock()
	a := t.m[id]
	if a != nil {
		delete(t.m, id)
		t.n.Add(-1)
	}
	t.mu.Unlock()
	return a
}

// closeAll takes every call and refuses new ones.
func (t *asyncTable) closeAll() []*asyncCall {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	out := make([]*asyncCall, 0, len(t.m))
	for id, a := range t.m {
		out = append(out, a)
		delete(t.m, id)
	}
	t.n.Store(0)
	return out
}

// expired takes the calls whose deadline is before now.
func (t *asyncTable) expired(now int64, out []*asyncCall) []*asyncCall {
	if t.n.Load() == 0 {
		return out
	}
	t.mu.Lock()
	for id, a := range t.m {
		if a.deadline <= now {
			out = append(out, a)
			delete(t.m, id)
			t.n.Add(-1)
		}
	}
	t.mu.Unlock()
	return out
}

// sweepSoon starts the sweeper unless it runs.
func (c *Cluster) sweepSoon() {
	if c.sweeping.Load() || !c.sweeping.CompareAndSwap(false, true) {
		return
	}
	if !c.routines.Go(c.sweep) {
		c.sweeping.Store(false) // closed: Close fails the calls
	}
}

// sweep times out the calls past their deadline every sweepEvery, while
// any call started with Start is outstanding.
func (c *Cluster) sweep() {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	var due []*asyncCall
	for {
		select {
		case <-t.C:
		case <-c.stop:
			c.sweeping.Store(false)
			return
		}
		now := time.Now().UnixNano()
		due = due[:0]
		c.connsMu.Lock()
		for uc := range c.live {
			due = uc.async.expired(now, due)
		}
		c.connsMu.Unlock()
		for i, a := range due {
			due[i] = nil
			err := Errorf(ErrTimeout, "cluster %s: no answer from %s within %s", c.name, a.h.addr, a.timeout)
			c.complete(a, nil, err)
		}
		if c.outstanding.Load() > 0 {
			continue
		}
		c.sweeping.Store(false)
		// A Start between the check and the store found the sweeper
		// running: go on for it.
		if c.outstanding.Load() == 0 || !c.sweeping.CompareAndSwap(false, true) {
			return
		}
	}
}
