package msgmesh

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
	"github.com/msgmesh/msgmesh/topology"
)

// upstreamKey identifies one upstream consumer. The sidecar runs exactly one
// per key that some registration consumes (docs/design.md flow 3).
type upstreamKey struct {
	cluster string
	group   string
	topic   string
	// brokerGroup is the binding's broker_group (empty: the adapter
	// derives the broker-side group from group). Part of the key so that
	// re-registering with another one moves the upstream consumer.
	brokerGroup string
}

func (k upstreamKey) route() routeKey { return routeKey{group: k.group, topic: k.topic} }

// upstream is one running upstream consumer and the goroutine that feeds its
// messages into its route.
type upstream struct {
	key      upstreamKey
	consumer broker.Consumer
	// tags is the group's tag filter; filter says the sidecar applies it
	// (the adapter does not: broker.TagFiltering).
	tags   broker.TagFilter
	filter bool
	route  *route
	ctx    context.Context // ends when the upstream stops
	cancel context.CancelFunc
	done   chan struct{}

	// mu guards the pause state. Lock order: after Sidecar.reconcileMu;
	// nothing is locked under it (sidecar.go).
	// lastErr is the last error of Next (readiness.go); written by run.
	lastErr atomic.Pointer[timedErr]

	mu      sync.Mutex
	cond    sync.Cond          // signalled when busy turns false
	paused  bool               // no new delivery may start
	busy    bool               // run holds a fetched message it is handing over
	pctx    context.Context    // cancelled by pause: aborts a wait for room
	pcancel context.CancelFunc //
	resumed chan struct{}      // closed when a pause ends
}

// reconcile makes the running upstream consumers exactly the set the stored
// registrations ask for, and refreshes the snapshot used by per-request
// checks. Every registration change calls it after writing the store, and
// it reads the store afresh under reconcileMu, so concurrent changes end in
// the state of the last write whatever their interleaving. A consumer that
// fails to start is remembered in s.failed and retried by retryLoop; its
// error does not fail reconcile.
func (s *Sidecar) reconcile(ctx context.Context) error {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	if s.ctx.Err() != nil {
		return ErrShuttingDown
	}
	regs, err := s.store.List()
	if err != nil {
		return fmt.Errorf("msgmesh: reconcile: %w", err)
	}
	snap := &snapshot{produce: map[string]string{}, consume: map[routeKey]bool{}, policy: map[routeKey]deadLetterPolicy{}}
	want := map[upstreamKey]bool{}
	for _, r := range regs {
		for _, b := range r.Produce {
			snap.produce[b.Topic] = s.clusterOf(b.Topic)
		}
		for _, b := range r.Consume {
			rk := routeKey{group: b.Group, topic: b.Topic}
			snap.consume[rk] = true
			if _, ok := snap.policy[rk]; !ok { // Register keeps them equal
				snap.policy[rk] = s.policyFor(b)
			}
			want[s.upstreamKeyOf(b)] = true
		}
	}
	snap.addGrants(regs)
	s.snap.Store(snap)
	s.knownSeries(snap)
	s.capLog.update(s.log, &s.cfg, len(regs), len(want))
	s.wakeRoutes() // who may receive what may have changed
	s.push.sync(regs, snap)

	gone := map[upstreamKey]*upstream{}
	for k, u := range s.upstreams {
		if !want[k] || u.tags.String() != snap.policy[k.route()].tags {
			// Gone, or its tag filter changed: a consumer's filter is
			// fixed when it starts, so it starts again below.
			gone[k] = u
		}
	}
	_ = eachUpstream(gone, func(u *upstream) error { u.stop(ctx); return nil })
	for k := range gone {
		delete(s.upstreams, k)
		s.log.Info("upstream consumer stopped", "group", k.group, "topic", k.topic)
	}
	for k := range s.failed {
		if !want[k] {
			delete(s.failed, k)
		}
	}
	s.publishUpstreamsLocked(want) // before the broker calls below, which may take long
	defer s.publishUpstreamsLocked(want)
	for k := range want {
		if _, ok := s.upstreams[k]; ok {
			continue
		}
		if err := s.startUpstream(ctx, k); err != nil {
			s.failed[k] = err
			s.log.Warn("upstream consumer failed to start; will retry", "group", k.group, "topic", k.topic, "err", err)
			select {
			case s.retry <- struct{}{}:
			default:
			}
			continue
		}
		delete(s.failed, k)
		s.log.Info("upstream consumer started", "group", k.group, "topic", k.topic)
	}
	return nil
}

// knownSeries creates the metric series of the registered topics, groups
// and the clusters at zero (observe.Metrics.Known).
func (s *Sidecar) knownSeries(snap *snapshot) {
	m := s.metrics()
	if m == nil {
		return
	}
	produced := make([]string, 0, len(snap.produce))
	for t := range snap.produce {
		produced = append(produced, t)
	}
	consumed := make([][2]string, 0, len(snap.consume))
	for k := range snap.consume {
		consumed = append(consumed, [2]string{k.topic, k.group})
	}
	clusters := make([]string, 0, len(s.cfg.Brokers))
	for c := range s.cfg.Brokers {
		clusters = append(clusters, c)
	}
	m.Known(produced, consumed, clusters)
}

// clusterOf resolves the cluster a topic lives on.
func (s *Sidecar) clusterOf(topic string) string {
	return topology.Resolve(s.cfg.Routes, s.cfg.DefaultCluster, topic)
}

// ClusterOf names the broker cluster topic lives on, by the routes this
// Sidecar was configured with.
func (s *Sidecar) ClusterOf(topic string) string { return s.clusterOf(topic) }

// Registrations returns the stored registrations (GET /v1/registrations),
// sorted by app.
func (s *Sidecar) Registrations() ([]registry.Registration, error) { return s.store.List() }

// startUpstream must be called with reconcileMu held.
func (s *Sidecar) startUpstream(ctx context.Context, k upstreamKey) error {
	tags, _ := broker.ParseTagExpression(s.snap.Load().policy[k.route()].tags) // checked at registration
	b := s.cfg.Brokers[k.cluster]
	c, err := b.Consume(ctx, broker.ConsumerSpec{
		Topic:       k.topic,
		Group:       k.group,
		BrokerGroup: k.brokerGroup,
		AckWait:     2 * s.cfg.DeliveryTimeout,
		Prefetch:    s.cfg.Prefetch,
		Tags:        tags,
		Carry:       s.carried[k],
	})
	if err != nil {
		return err // the carry waits for the retry
	}
	delete(s.carried, k)
	tf, native := b.(broker.TagFiltering)
	uctx, cancel := context.WithCancel(s.ctx)
	u := &upstream{key: k, consumer: c, tags: tags, filter: !tags.All() && !(native && tf.FiltersTags()),
		route: s.acquireRoute(k.route()), ctx: uctx, cancel: cancel, done: make(chan struct{}), resumed: make(chan struct{})}
	u.cond.L = &u.mu
	u.pctx, u.pcancel = context.WithCancel(uctx)
	if s.paused {
		if err := u.pause(ctx); err != nil {
			s.log.Warn("pausing new upstream consumer", "group", k.group, "topic", k.topic, "err", err)
		}
	}
	s.upstreams[k] = u
	go func() {
		defer close(u.done)
		u.run(uctx, s)
	}()
	return nil
}

// retryLoop retries upstream consumers that failed to start, with backoff,
// until they run, their registration goes away, or the sidecar stops.
func (s *Sidecar) retryLoop() {
	backoff := 250 * time.Millisecond
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.retry:
		}
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(backoff):
			}
			s.reconcileMu.Lock()
			n := len(s.failed)
			s.reconcileMu.Unlock()
			if n == 0 {
				backoff = 250 * time.Millisecond
				break
			}
			if err := s.reconcile(s.ctx); err != nil {
				return
			}
			backoff = min(backoff*2, 10*time.Second)
		}
	}
}

// eachUpstream runs f on every upstream of ups at once and joins their
// errors. Pausing or closing a consumer can wait on its broker (a NATS
// consumer waits for its pull requests in flight to end, up to 200 ms;
// Kafka's partition readers for their fetch), and over many groups those
// waits must not add up: a hot upgrade pauses them all.
func eachUpstream[K comparable](ups map[K]*upstream, f func(*upstream) error) error {
	errs := make([]error, len(ups))
	var wg sync.WaitGroup
	i := 0
	for _, u := range ups {
		slot := &errs[i]
		wg.Go(func() { *slot = f(u) })
		i++
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stop ends the feeding goroutine and closes the consumer (prefetched
// messages go back to the broker). Deliveries already handed to apps stay
// valid: their acks still reach the broker.
func (u *upstream) stop(ctx context.Context) {
	u.cancel()
	if err := u.consumer.Close(ctx); err != nil {
		// The broker redelivers whatever it had handed out after its ack wait.
		_ = err
	}
	<-u.done
	u.route.s.releaseRoute(u.route)
}

// run moves messages from the consumer to the route. It waits until some
// connection (or pull request) of the route has room before it takes a
// message, so the broker is read only as fast as apps answer, and it
// reserves the slot only once it holds a message, so an idle group never
// sits on a slot another group of the same connection could use. At most
// one message per route waits for a slot that was taken meanwhile.
func (u *upstream) run(ctx context.Context, s *Sidecar) {
	log := s.log.With("group", u.key.group, "topic", u.key.topic)
	backoff := 50 * time.Millisecond
	for {
		pctx, ok := u.waitUnpaused(ctx)
		if !ok {
			return
		}
		// Wait for local room first, unless the weights may send this
		// delivery to a sibling: a draining node (weight 0) reads on even
		// when its own app is busy or not connected. A weight change ends
		// the wait, to look again.
		changed := s.forwardingChanged()
		if !s.forwards(u.key.route()) {
			if err := u.route.waitRoom(pctx, changed); err != nil {
				continue // paused, stopping, or the weights changed
			}
		}
		// The pipeline's fetch stages (a group's delivery rate and
		// in-flight bound) hold the broker back the same way a full
		// connection does; what they hold is released when d is settled.
		d, err := s.pipe.Fetch(pctx, u.key.group, u.key.topic, u.consumer.Next)
		if err != nil {
			switch {
			case ctx.Err() != nil, errors.Is(err, broker.ErrClosed):
				return
			case pctx.Err() != nil, errors.Is(err, broker.ErrPaused):
				continue
			}
			u.noteNext(err)
			log.Warn("upstream consumer error; retrying", "err", err, "backoff", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		u.noteNext(nil)
		if u.filter && !u.tags.Match(broker.TagOf(d.Message())) {
			// Not for this group: settled as RocketMQ's broker-side filter
			// would, without a delivery.
			filteredOut(d)
			continue
		}
		if !u.startHandover() {
			u.handBack(d) // fetched just as a pause began
			continue
		}
		s.stats.fromBroker.Add(1)
		if p, over := s.overLimit(u.key.route(), d); over {
			// Its last allowed attempt ended without a verdict (connection
			// lost, sidecar restarted, dead-letter publish failed).
			s.deadLetter(u.key.route(), d, p, d.Redelivered(), mesh.DeadLetterRedelivered)
			u.endHandover()
			continue
		}
		if s.tryForward(pctx, u.key.route(), d) {
			u.endHandover()
			continue
		}
		for {
			t, err := u.route.acquire(pctx)
			if err != nil {
				// Paused or stopping: nobody took the message; hand it back
				// now rather than after the broker's ack wait.
				u.handBack(d)
				break
			}
			if t.deliver(u.key.route(), d) {
				break
			}
		}
		u.endHandover()
	}
}

// filteredOut acks a message the group's tag filter does not take.
func filteredOut(d broker.Delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = d.Ack(ctx) // if it fails the broker offers it again, and it is filtered again
}

// handBack gives back a delivery nobody took: to the consumer, which
// hands it out again (or keeps it for a successor) as the first delivery
// it is (broker.Returner); else to the broker (a NACK, so that it comes
// again now rather than after the ack wait, with a redelivery counted).
func (u *upstream) handBack(d broker.Delivery) {
	if r, ok := u.consumer.(broker.Returner); ok && r.Return(d) {
		broker.Detach(d) // the pipeline's holds on it
		return
	}
	handBack(d)
}

// handBack NACKs d, for the broker to offer it again now.
func handBack(d broker.Delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = d.Nack(ctx, 0)
}

// waitUnpaused blocks while the upstream is paused and returns the context
// that the next pause cancels; false when ctx ends.
func (u *upstream) waitUnpaused(ctx context.Context) (context.Context, bool) {
	u.mu.Lock()
	for u.paused {
		ch := u.resumed
		u.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false
		}
		u.mu.Lock()
	}
	pctx := u.pctx
	u.mu.Unlock()
	return pctx, ctx.Err() == nil
}

func (u *upstream) startHandover() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.paused {
		return false
	}
	u.busy = true
	return true
}

func (u *upstream) endHandover() {
	u.mu.Lock()
	u.busy = false
	u.cond.Broadcast()
	u.mu.Unlock()
}

// pause stops new deliveries: once it returns, run pushes nothing more
// until resume. A message run holds but has not handed over goes back to
// the broker; so do the consumer's prefetched ones.
func (u *upstream) pause(ctx context.Context) error {
	u.mu.Lock()
	if !u.paused {
		u.paused = true
		u.resumed = make(chan struct{})
		u.pcancel()
	}
	for u.busy {
		u.cond.Wait()
	}
	u.mu.Unlock()
	return u.consumer.Pause(ctx)
}

func (u *upstream) resume(ctx context.Context) error {
	if err := u.consumer.Resume(ctx); err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.paused {
		u.paused = false
		u.pctx, u.pcancel = context.WithCancel(u.ctx)
		close(u.resumed)
	}
	return nil
}
