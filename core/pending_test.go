package core

import (
	"errors"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestIDsNeverZeroAndUnique(t *testing.T) {
	var g IDs
	const goroutines, perG = 16, 5000
	got := make([][]uint64, goroutines)
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Go(func() {
			ids := make([]uint64, perG)
			for j := range ids {
				ids[j] = g.Next()
			}
			got[i] = ids
		})
	}
	wg.Wait()
	seen := make(map[uint64]bool, goroutines*perG)
	for _, ids := range got {
		for _, id := range ids {
			if id == 0 {
				t.Fatal("Next returned 0")
			}
			if seen[id] {
				t.Fatalf("Next returned %d twice", id)
			}
			seen[id] = true
		}
	}
}

func TestIDsSkipZeroOnWrap(t *testing.T) {
	var g IDs
	g.n.Store(math.MaxUint64 - 1)
	if id := g.Next(); id != math.MaxUint64 {
		t.Fatalf("Next = %d, want MaxUint64", id)
	}
	if id := g.Next(); id != 1 {
		t.Fatalf("Next after MaxUint64 = %d, want 1 (0 skipped)", id)
	}
}

var errConnGone = errors.New("connection gone")

// expectResult receives from ch and checks what arrives; it also checks that
// nothing else is queued behind it.
func expectResult(t *testing.T, ch <-chan Result[string], wantVal string, wantErr error) {
	t.Helper()
	r := recvWithin(t, ch, 5*time.Second, "a result")
	if r.Val != wantVal || !errors.Is(r.Err, wantErr) || (wantErr == nil && r.Err != nil) {
		t.Fatalf("got %+v, want {Val:%q Err:%v}", r, wantVal, wantErr)
	}
	select {
	case r := <-ch:
		t.Fatalf("second result %+v on one request", r)
	default:
	}
}

func expectNoResult(t *testing.T, ch <-chan Result[string]) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("unexpected result %+v", r)
	default:
	}
}

func TestPending(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, p *Pending[string])
	}{
		{"add then resolve delivers", func(t *testing.T, p *Pending[string]) {
			ch := p.Add(7)
			expectNoResult(t, ch)
			if !p.Resolve(7, Result[string]{Val: "seven"}) {
				t.Fatal("Resolve of an outstanding id returned false")
			}
			expectResult(t, ch, "seven", nil)
			if p.Resolve(7, Result[string]{Val: "again"}) {
				t.Fatal("second Resolve of one id returned true")
			}
		}},
		{"resolve carries an error", func(t *testing.T, p *Pending[string]) {
			ch := p.Add(1)
			if !p.Resolve(1, Result[string]{Err: errConnGone}) {
				t.Fatal("Resolve returned false")
			}
			expectResult(t, ch, "", errConnGone)
		}},
		{"resolve of unknown id", func(t *testing.T, p *Pending[string]) {
			ch := p.Add(1)
			if p.Resolve(2, Result[string]{Val: "stray"}) {
				t.Fatal("Resolve of an unknown id returned true")
			}
			expectNoResult(t, ch)
			if p.Len() != 1 {
				t.Fatalf("Len = %d, want 1", p.Len())
			}
		}},
		{"remove then resolve", func(t *testing.T, p *Pending[string]) {
			ch := p.Add(3)
			p.Remove(3)
			if p.Resolve(3, Result[string]{Val: "late"}) {
				t.Fatal("Resolve after Remove returned true")
			}
			expectNoResult(t, ch)
			p.Remove(3) // removing twice is harmless
			p.Remove(99)
		}},
		{"len", func(t *testing.T, p *Pending[string]) {
			if p.Len() != 0 {
				t.Fatalf("Len of empty table = %d", p.Len())
			}
			for id := uint64(1); id <= 5; id++ {
				p.Add(id)
			}
			if p.Len() != 5 {
				t.Fatalf("Len = %d, want 5", p.Len())
			}
			p.Resolve(2, Result[string]{})
			p.Remove(4)
			p.Resolve(42, Result[string]{})
			if p.Len() != 3 {
				t.Fatalf("Len = %d, want 3", p.Len())
			}
			p.FailAll(errConnGone)
			if p.Len() != 0 {
				t.Fatalf("Len after FailAll = %d, want 0", p.Len())
			}
			p.Add(6)
			if p.Len() != 0 {
				t.Fatalf("Len after Add on a failed table = %d, want 0", p.Len())
			}
		}},
		{"fail all", func(t *testing.T, p *Pending[string]) {
			var chs []<-chan Result[string]
			for id := uint64(1); id <= 10; id++ {
				chs = append(chs, p.Add(id))
			}
			resolved := chs[0]
			p.Resolve(1, Result[string]{Val: "first"})
			p.FailAll(errConnGone)
			expectResult(t, resolved, "first", nil)
			for _, ch := range chs[1:] {
				expectResult(t, ch, "", errConnGone)
			}
			// Every later Add is answered at once.
			for id := uint64(1); id <= 3; id++ {
				expectResult(t, p.Add(id), "", errConnGone)
			}
			// Nothing is outstanding, so Resolve finds nothing.
			if p.Resolve(2, Result[string]{Val: "too late"}) {
				t.Fatal("Resolve after FailAll returned true")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, NewPending[string]()) })
	}
}

// Many goroutines add and resolve while another fails the table: every
// request gets exactly one answer, Resolve reports true exactly for the
// requests it answered, and nothing blocks.
func TestPendingConcurrent(t *testing.T) {
	const goroutines, perG = 16, 300
	p := NewPending[uint64]()
	var ids IDs
	var resolvedTrue, gotVal, gotErr, finished atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, goroutines)
	for range goroutines {
		wg.Go(func() {
			defer finished.Add(1)
			<-start
			for range perG {
				id := ids.Next()
				ch := p.Add(id)
				if p.Resolve(id, Result[uint64]{Val: id}) {
					resolvedTrue.Add(1)
				}
				select {
				case r := <-ch:
					switch {
					case r.Err == nil && r.Val == id:
						gotVal.Add(1)
					case errors.Is(r.Err, errConnGone):
						gotErr.Add(1)
					default:
						errs <- errors.New("wrong result")
						return
					}
				case <-time.After(5 * time.Second):
					errs <- errors.New("no result")
					return
				}
				select {
				case r := <-ch:
					errs <- errors.New("second result: " + r.Err.Error())
					return
				default:
				}
				_ = p.Len()
			}
		})
	}
	wg.Go(func() {
		<-start
		// Fail part-way through.
		for ids.n.Load() < goroutines*perG/3 && finished.Load() < goroutines {
			runtime.Gosched()
		}
		p.FailAll(errConnGone)
	})
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got, want := gotVal.Load()+gotErr.Load(), int64(goroutines*perG); got != want {
		t.Fatalf("%d answers for %d requests", got, want)
	}
	if gotVal.Load() != resolvedTrue.Load() {
		t.Fatalf("%d values delivered but Resolve returned true %d times", gotVal.Load(), resolvedTrue.Load())
	}
	if p.Len() != 0 {
		t.Fatalf("Len = %d after everything was answered", p.Len())
	}
}

// A channel given back with Done serves a later request, which gets its
// own answer and nothing of the earlier one's.
func TestPendingDoneReusesChannel(t *testing.T) {
	p := NewPending[string]()
	ch := p.Add(1)
	p.Resolve(1, Result[string]{Val: "first"})
	expectResult(t, ch, "first", nil)
	p.Done(ch)
	ch2 := p.Add(2)
	if ch2 != ch {
		t.Fatal("Add did not reuse the channel given back")
	}
	if p.Resolve(1, Result[string]{Val: "stale"}) {
		t.Fatal("the first request's id resolved again")
	}
	p.Resolve(2, Result[string]{Val: "second"})
	expectResult(t, ch2, "second", nil)
	p.Done(ch2)
	p.FailAll(errConnGone)
	expectResult(t, p.Add(3), "", errConnGone)
}

// Many callers reusing channels concurrently each get their own answer.
func TestPendingDoneConcurrent(t *testing.T) {
	p := NewPending[uint64]()
	var ids IDs
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 2000 {
				id := ids.Next()
				ch := p.Add(id)
				go p.Resolve(id, Result[uint64]{Val: id})
				if r := <-ch; r.Val != id {
					t.Errorf("request %d got the answer of %d", id, r.Val)
					return
				}
				p.Done(ch)
			}
		})
	}
	wg.Wait()
}
