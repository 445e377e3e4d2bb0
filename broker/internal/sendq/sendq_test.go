package sendq_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/internal/sendq"
)

// The adapters' tests run Queues against real brokers (RocketMQ's test
// broker, an embedded nats-server), faults included. These tests hold the
// request in flight with a destination of their own, to check the
// grouping rules exactly.

// dest is a destination that answers each request with its number, and
// holds the first one until release is closed.
type dest struct {
	mu       sync.Mutex
	requests [][]int // the messages of each request, in order
	release  chan struct{}
	held     bool
	fail     error // the answer to batches, when set
}

func (d *dest) record(ms []int) int {
	d.mu.Lock()
	d.requests = append(d.requests, slices.Clone(ms))
	n, hold := len(d.requests), !d.held
	d.held = true
	d.mu.Unlock()
	if hold {
		<-d.release
	}
	return n
}

func (d *dest) One(_ context.Context, m int) (int, error) { return d.record([]int{m}), nil }

func (d *dest) Batch(_ context.Context, ms []int, copied func()) (int, error) {
	copied()
	n := d.record(ms)
	if d.fail != nil {
		return 0, d.fail
	}
	return n, nil
}

// sendAll sends 0..n-1 through one queue at once, the first held until
// the others wait, and returns each result.
func sendAll(t *testing.T, b *sendq.Batcher[int, int], d *dest, n int, ctxOf func(int) context.Context) []sendq.Result[int] {
	t.Helper()
	var q sendq.Queue[int, int]
	res := make([]sendq.Result[int], n)
	var wg sync.WaitGroup
	wg.Go(func() { res[0] = b.Send(context.Background(), &q, 0, 1) })
	waitFor(t, "the first send in flight", q.Busy)
	for i := 1; i < n; i++ {
		ctx := context.Background()
		if ctxOf != nil {
			ctx = ctxOf(i)
		}
		wg.Go(func() { res[i] = b.Send(ctx, &q, i, 1) })
	}
	waitFor(t, "the others waiting", func() bool { return q.Pending() == n-1 })
	close(d.release)
	wg.Wait()
	return res
}

// waitFor polls cond until it holds, failing t after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestWaitingSendsShareRequests(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lim   sendq.Limits
		sizes []int // requests after the first
	}{
		{"by count", sendq.Limits{MaxMsgs: 4, MaxBytes: 100}, []int{4, 4, 1}},
		{"by bytes", sendq.Limits{MaxMsgs: 100, MaxBytes: 3}, []int{3, 3, 3}},
		{"off", sendq.Limits{MaxMsgs: 1, MaxBytes: 100}, []int{1, 1, 1, 1, 1, 1, 1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &dest{release: make(chan struct{})}
			res := sendAll(t, sendq.New[int, int](d, tc.lim), d, 10, nil)
			var sizes []int
			for _, r := range d.requests[1:] {
				sizes = append(sizes, len(r))
			}
			if !slices.Equal(sizes, tc.sizes) {
				t.Fatalf("requests after the first carry %v, want %v", sizes, tc.sizes)
			}
			for i, r := range res {
				if r.Err != nil || r.Unsent || r.MaybeStored {
					t.Fatalf("send %d: %+v", i, r)
				}
				if got := d.requests[r.R-1][r.Idx]; got != i {
					t.Fatalf("send %d answered as place %d of request %d, which holds %d", i, r.Idx, r.R, got)
				}
				if r.Batch != (len(d.requests[r.R-1]) > 1) {
					t.Fatalf("send %d: Batch %v", i, r.Batch)
				}
			}
		})
	}
}

func TestFailedBatchIsEachMembersTriedError(t *testing.T) {
	refused := errors.New("refused")
	d := &dest{release: make(chan struct{}), fail: refused}
	res := sendAll(t, sendq.New[int, int](d, sendq.Limits{MaxMsgs: 10, MaxBytes: 100}), d, 5, nil)
	for i, r := range res[1:] {
		if !errors.Is(r.Err, refused) || !r.Tried || !r.Batch {
			t.Fatalf("member %d: %+v", i+1, r)
		}
	}
}

func TestSendLeavesQueueAtItsContext(t *testing.T) {
	d := &dest{release: make(chan struct{})}
	b := sendq.New[int, int](d, sendq.Limits{MaxMsgs: 10, MaxBytes: 100})
	var q sendq.Queue[int, int]
	first := make(chan sendq.Result[int], 1)
	go func() { first <- b.Send(context.Background(), &q, 0, 1) }()
	waitFor(t, "the first send in flight", q.Busy)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	r := b.Send(ctx, &q, 1, 1)
	if !r.Unsent || !errors.Is(r.Err, context.DeadlineExceeded) || q.Pending() != 0 {
		t.Fatalf("send at its deadline: %+v, %d still wait", r, q.Pending())
	}
	close(d.release)
	if r := <-first; r.Err != nil {
		t.Fatal(r.Err)
	}
	if len(d.requests) != 1 {
		t.Fatalf("requests %v: the send that left was sent", d.requests)
	}
}
