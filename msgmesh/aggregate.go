package msgmesh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/msgmesh/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/msgmesh/topology"
)

// upstreamKey identifies one upstream consumer. The sidecar runs exactly one
// per key that some registration consumes (DESIGN.md flow 3).
type upstreamKey struct {
	cluster string
	group   string
	topic   string
}

func (k upstreamKey) route() routeKey { return routeKey{group: k.group, topic: k.topic} }

// upstream is one running upstream consumer and the goroutine that feeds its
// messages into its route.
type upstream struct {
	key      upstreamKey
	consumer broker.Consumer
	route    *route
	cancel   context.CancelFunc
	done     chan struct{}
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
	snap := &snapshot{produce: map[string]string{}, consume: map[routeKey]bool{}}
	want := map[upstreamKey]bool{}
	for _, r := range regs {
		for _, b := range r.Produce {
			snap.produce[b.Topic] = s.clusterOf(b.Topic)
		}
		for _, b := range r.Consume {
			snap.consume[routeKey{group: b.Group, topic: b.Topic}] = true
			want[upstreamKey{cluster: s.clusterOf(b.Topic), group: b.Group, topic: b.Topic}] = true
		}
	}
	s.snap.Store(snap)

	for k, u := range s.upstreams {
		if !want[k] {
			u.stop(ctx)
			delete(s.upstreams, k)
			s.log.Info("upstream consumer stopped", "group", k.group, "topic", k.topic)
		}
	}
	for k := range s.failed {
		if !want[k] {
			delete(s.failed, k)
		}
	}
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

// clusterOf resolves the cluster a topic lives on.
func (s *Sidecar) clusterOf(topic string) string {
	return topology.Resolve(s.cfg.Routes, s.cfg.DefaultCluster, topic)
}

// startUpstream must be called with reconcileMu held.
func (s *Sidecar) startUpstream(ctx context.Context, k upstreamKey) error {
	c, err := s.cfg.Brokers[k.cluster].Consume(ctx, broker.ConsumerSpec{
		Topic:    k.topic,
		Group:    k.group,
		AckWait:  2 * s.cfg.DeliveryTimeout,
		Prefetch: s.cfg.Prefetch,
	})
	if err != nil {
		return err
	}
	uctx, cancel := context.WithCancel(s.ctx)
	u := &upstream{key: k, consumer: c, route: s.acquireRoute(k.route()), cancel: cancel, done: make(chan struct{})}
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

// runningUpstreams lists the keys of running upstream consumers (for tests
// and the HTTP API).
func (s *Sidecar) runningUpstreams() []upstreamKey {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	keys := make([]upstreamKey, 0, len(s.upstreams))
	for k := range s.upstreams {
		keys = append(keys, k)
	}
	return keys
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
		if err := u.route.waitRoom(ctx); err != nil {
			return
		}
		d, err := u.consumer.Next(ctx)
		if err != nil {
			switch {
			case ctx.Err() != nil, errors.Is(err, broker.ErrClosed):
				return
			case errors.Is(err, broker.ErrPaused):
			default:
				log.Warn("upstream consumer error; retrying", "err", err, "backoff", backoff)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		for {
			t, err := u.route.acquire(ctx)
			if err != nil {
				// Stopping: nobody took the message; hand it back now
				// rather than after the broker's ack wait.
				nctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = d.Nack(nctx, 0)
				cancel()
				return
			}
			if t.deliver(u.key.route(), d) {
				break
			}
		}
	}
}
