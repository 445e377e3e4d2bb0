package core

import "sync"

// Routines owns a set of goroutines, the way nats-server's startGoRoutine
// does: Go refuses new goroutines once Stop has begun, and Wait returns
// when every goroutine it started has returned. The zero value is ready.
type Routines struct {
	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup
}

// Go runs f in a new goroutine owned by r. It returns false, without
// running f, once Stop has been called.
func (r *Routines) Go(f func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
	return true
}

// Stop refuses new goroutines. It does not wait; the owner signals its
// goroutines to return (usually by cancelling a context) and then calls Wait.
// Safe to call more than once.
func (r *Routines) Stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
}

// Wait blocks until every goroutine started by Go has returned.
func (r *Routines) Wait() { r.wg.Wait() }
