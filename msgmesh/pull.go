package msgmesh

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/observe"
	"go.opentelemetry.io/otel/trace"
)

// maxPullWait caps a PULL's wait so a request cannot pin a slot forever.
const maxPullWait = 5 * time.Minute

// pullWaiter is one PULL waiting on a route. The upstream consumer fills it
// like any other target; it answers when full, when its wait ends, or
// PullLinger after its first message.
type pullWaiter struct {
	s        *session
	r        *route
	max      int
	deadline time.Time

	span trace.Span // the pull span; deliveries link to it
	// reply sends the answer: a PULL_RESULT frame on the connection, or
	// the body of an HTTP pull (httppull.go). Called once, by finish,
	// with no lock held.
	reply func(mesh.PullResult) error

	mu       sync.Mutex
	reserved int // slots reserved by the upstream consumer, not yet filled
	msgs     []mesh.Message
	done     bool
	timer    *time.Timer
}

func (s *session) onPull(f mesh.Frame) error {
	var p mesh.Pull
	if err := p.Decode(f.Payload); err != nil {
		return err
	}
	if s.sc.draining.Load() {
		return ErrShuttingDown
	}
	k := routeKey{group: p.Group, topic: p.Topic}
	if s.subs[k] != mesh.ModePull {
		return fmt.Errorf("%w: declare %s:%s in pull mode before pulling", ErrNotDeclared, p.Group, p.Topic)
	}
	if err := s.sc.mayConsume(s.sc.snap.Load(), s.who.Load(), k); err != nil {
		return err // the registration changed since DECLARE
	}
	if p.Max == 0 {
		return fmt.Errorf("%w: pull of 0 messages", ErrInvalid)
	}
	wait := min(time.Duration(p.WaitMillis)*time.Millisecond, maxPullWait)
	reqID := f.ID
	s.startPull(context.Background(), s.routes[k], int(p.Max), wait, func(res mesh.PullResult) error {
		err := s.send(mesh.KindPullResult, mesh.FlagResponse, reqID, &res)
		if err != nil {
			s.close(err) // the messages in res go back to the broker with the connection
		}
		return err
	})
	return nil
}

// startPull makes a pull of up to max messages (at most the session's
// in-flight limit) from route r, answered by reply within wait; its span
// is a child of the trace context in ctx, if any. The mesh PULL and the
// HTTP pull (httppull.go) both start here; the caller has checked that the
// session's app may consume r.
func (s *session) startPull(ctx context.Context, r *route, max int, wait time.Duration, reply func(mesh.PullResult) error) *pullWaiter {
	w := &pullWaiter{s: s, r: r, max: min(max, int(s.maxInflight.Load())),
		deadline: time.Now().Add(wait), reply: reply}
	_, w.span = s.sc.cfg.Telemetry.StartPull(ctx, r.key.group, r.key.topic)
	s.mu.Lock()
	s.pulls[w] = struct{}{}
	s.mu.Unlock()
	// Join the route before arming the timer, so a finish can never run
	// before the waiter is there to be removed.
	w.r.addPull(w)
	w.mu.Lock()
	if !w.done {
		w.timer = time.AfterFunc(w.nextWake(), w.finish)
	}
	w.mu.Unlock()
	return w
}

// reserve takes room for one more message in the answer.
func (w *pullWaiter) reserve() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done || w.reserved+len(w.msgs) >= w.max {
		return false
	}
	w.reserved++
	return true
}

func (w *pullWaiter) hasRoom() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.done && w.reserved+len(w.msgs) < w.max
}

// nextWake is when the answer is due: the deadline, or PullLinger once a
// message is held, whichever comes first. Call with w.mu held.
func (w *pullWaiter) nextWake() time.Duration {
	d := time.Until(w.deadline)
	if len(w.msgs) > 0 {
		d = min(d, w.s.sc.cfg.PullLinger)
	}
	return max(d, 0)
}

// add puts d into the answer on a slot reserved by the caller; false if the
// pull was answered in the meantime (the slot is then released).
func (w *pullWaiter) add(k routeKey, d broker.Delivery) bool {
	w.mu.Lock()
	w.reserved--
	if w.done {
		w.mu.Unlock()
		w.s.release()
		return false
	}
	id, d, ok := w.s.track(k, d)
	if !ok {
		w.mu.Unlock()
		w.s.release()
		return false
	}
	observe.LinkDelivery(w.span, d)
	w.msgs = append(w.msgs, w.s.toWire(id, k, d))
	full := len(w.msgs) >= w.max
	if len(w.msgs) == 1 && !full && w.timer != nil {
		// The first message is here: answer soon rather than at the end of
		// a long poll. A timer that fired already is harmless: finish runs
		// once.
		w.timer.Reset(w.nextWake())
	}
	w.mu.Unlock()
	if full {
		w.finish()
	}
	return true
}

// finish answers the PULL with what it holds. It runs once; later calls do
// nothing. Messages it holds are tracked on the session, so if the answer
// cannot be written they go back to the broker (with the connection, or as
// the HTTP pull hands them back).
func (w *pullWaiter) finish() {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	w.done = true
	if w.timer != nil {
		w.timer.Stop()
	}
	res := mesh.PullResult{Messages: w.msgs}
	w.mu.Unlock()
	w.r.removePull(w)
	w.s.mu.Lock()
	delete(w.s.pulls, w)
	w.s.mu.Unlock()
	err := w.reply(res)
	observe.EndPull(w.span, len(res.Messages), err)
}
