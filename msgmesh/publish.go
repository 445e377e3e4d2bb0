package msgmesh

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/observe"
)

// checkPublish applies the checks every publish passes before it reaches
// the broker, whichever listener it came in on, and returns the broker the
// topic lives on. id is the app the publish acts as (identity.go); nil for
// an HTTP publish that names none.
func (sc *Sidecar) checkPublish(id *identity, m *broker.Message) (broker.Broker, error) {
	if sc.draining.Load() {
		return nil, ErrShuttingDown
	}
	cluster, err := sc.mayProduce(id, m.Topic)
	if err != nil {
		sc.metrics().Rejected(context.Background(), "", refusalReason(err))
		return nil, err
	}
	if err := sc.checkSize(m, cluster); err != nil {
		sc.metrics().Rejected(context.Background(), m.Topic, "message_too_big")
		return nil, err
	}
	// One header rule for every broker: nothing an app sets reaches a
	// broker as an instruction (broker.CheckHeaders).
	if err := broker.CheckHeaders(m.Headers); err != nil {
		sc.metrics().Rejected(context.Background(), m.Topic, "invalid_header")
		return nil, fmt.Errorf("msgmesh: publish to %q: %w", m.Topic, err)
	}
	// The stages' own checks (a topic's size limit, flowctl), before
	// anything is queued.
	if err := sc.pipe.CheckPublish(m); err != nil {
		sc.metrics().Rejected(context.Background(), m.Topic, observe.ReasonOf(err))
		return nil, err
	}
	return sc.cfg.Brokers[cluster], nil
}

// publish sends a checked message to its broker through the pipeline's
// stages (schema validation, tracing, flow control, metrics: the order
// is in New) and waits for the ack. Nothing reaches the broker if a stage
// refuses it. contentType is how the body is encoded when no message
// header says it (an HTTP publish's own Content-Type); "" for none.
func (sc *Sidecar) publish(ctx context.Context, b broker.Broker, m *broker.Message, contentType string) (broker.PublishResult, error) {
	ctx, cancel := context.WithTimeout(ctx, sc.cfg.PublishTimeout)
	defer cancel()
	return sc.publishWithin(ctx, b, m, contentType)
}

// publishWithin is publish under a context that already carries the
// publish's deadline: a mesh connection's publishes get theirs from
// Sidecar.deadlines.
func (sc *Sidecar) publishWithin(ctx context.Context, b broker.Broker, m *broker.Message, contentType string) (broker.PublishResult, error) {
	res, err := sc.pipe.Publish(ctx, m, sc.clusterOf(m.Topic), contentType, func(ctx context.Context) (broker.PublishResult, error) {
		res, err := b.Publish(ctx, m)
		if err != nil {
			sc.stats.errors.Add(1)
			if !broker.NotStored(err) {
				// The sidecar's own deadline, or anything the adapter
				// could not place: the broker may have stored it.
				err = broker.OutcomeUnknown(err)
			}
		}
		return res, err
	})
	if err != nil {
		return res, fmt.Errorf("msgmesh: publish to %q: %w", m.Topic, err)
	}
	sc.stats.published.Add(1)
	return res, nil
}

// deadlines hands out the contexts of calls that have no context of
// their own (a mesh connection's publishes, and the broker calls settling
// its apps' answers, which nothing cancels but their deadline): one
// context, ending at least timeout after the call starts, serves every
// call that starts within the same slack. A context.WithTimeout per publish cost a context, a timer and a
// channel (four allocations) and two operations on the runtime's timer
// heap, about 5% of the sidecar's CPU under the publish benchmark
// (docs/benchmarks.md). A call may so get up to slack longer than
// timeout, never less.
type deadlines struct {
	timeout, slack time.Duration
	mu             sync.Mutex // serialises making the next context
	cur            atomic.Pointer[sharedDeadline]
}

type sharedDeadline struct {
	ctx context.Context
	// cancel is never called: the context ends at its deadline, and
	// publishes still running under it must keep it until then.
	cancel context.CancelFunc
	until  time.Time // it serves publishes starting before until
}

func newDeadlines(timeout time.Duration) *deadlines {
	return &deadlines{timeout: timeout, slack: max(timeout/100, time.Microsecond)}
}

// get returns a context whose deadline is at least timeout from now.
func (d *deadlines) get() context.Context {
	now := time.Now()
	if c := d.cur.Load(); c != nil && now.Before(c.until) {
		return c.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.cur.Load(); c != nil && now.Before(c.until) {
		return c.ctx
	}
	until := now.Add(d.slack)
	ctx, cancel := context.WithDeadline(context.Background(), until.Add(d.timeout))
	d.cur.Store(&sharedDeadline{ctx: ctx, cancel: cancel, until: until})
	return ctx
}
