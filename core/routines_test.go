package core

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRoutinesGoRunsAndWaitWaits(t *testing.T) {
	var r Routines
	const n = 50
	release := make(chan struct{})
	var started, finished atomic.Int32
	for range n {
		if !r.Go(func() {
			started.Add(1)
			<-release
			finished.Add(1)
		}) {
			t.Fatal("Go returned false before Stop")
		}
	}
	waitFor(t, 5*time.Second, "every goroutine to start", func() bool { return started.Load() == n })

	waited := make(chan struct{})
	go func() { r.Wait(); close(waited) }()
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(func() { unblock(); <-waited })
	// Nothing has finished yet, so Wait cannot have returned.
	select {
	case <-waited:
		t.Fatal("Wait returned while goroutines were still running")
	default:
	}
	unblock()
	recvWithin(t, waited, 5*time.Second, "Wait to return")
	if got := finished.Load(); got != n {
		t.Fatalf("Wait returned with %d of %d goroutines finished", got, n)
	}
}

func TestRoutinesWaitWithNothingStarted(t *testing.T) {
	var r Routines
	r.Wait()
	r.Stop()
	r.Wait()
}

func TestRoutinesGoAfterStop(t *testing.T) {
	var r Routines
	r.Stop()
	ran := make(chan struct{}, 1)
	if r.Go(func() { ran <- struct{}{} }) {
		t.Fatal("Go returned true after Stop")
	}
	r.Wait()
	select {
	case <-ran:
		t.Fatal("Go ran f after Stop")
	default:
	}
}

func TestRoutinesStopTwice(t *testing.T) {
	var r Routines
	done := make(chan struct{})
	if !r.Go(func() { close(done) }) {
		t.Fatal("Go returned false before Stop")
	}
	r.Stop()
	r.Stop()
	r.Wait()
	select {
	case <-done:
	default:
		t.Fatal("Wait returned before the goroutine finished")
	}
	if r.Go(func() {}) {
		t.Fatal("Go returned true after a second Stop")
	}
}

// Go racing with Stop: every Go that returned true ran f exactly once and
// Wait waited for it; every Go that returned false did not run f; once Stop
// has returned no Go succeeds.
func TestRoutinesConcurrentGoStop(t *testing.T) {
	for range 20 {
		var r Routines
		var accepted, ran, lateAccepted atomic.Int64
		var stopped atomic.Bool
		const callers, perCaller = 16, 200
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range callers {
			wg.Go(func() {
				<-start
				for range perCaller {
					after := stopped.Load() // Stop had returned before this Go
					if r.Go(func() { ran.Add(1) }) {
						accepted.Add(1)
						if after {
							lateAccepted.Add(1)
						}
					}
				}
			})
		}
		wg.Go(func() {
			<-start
			r.Stop()
			stopped.Store(true)
		})
		close(start)
		wg.Wait()
		r.Wait()
		if a, g := accepted.Load(), ran.Load(); a != g {
			t.Fatalf("Go accepted %d goroutines but %d ran by the time Wait returned", a, g)
		}
		if n := lateAccepted.Load(); n != 0 {
			t.Fatalf("Go accepted %d goroutines after Stop returned", n)
		}
		if r.Go(func() {}) {
			t.Fatal("Go returned true after Stop")
		}
	}
}
