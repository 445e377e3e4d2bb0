package flowctl

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/msgmesh/msgmesh/topology"
)

// Controller applies a Config: topic rate and size limits on publishes,
// group rate and in-flight limits on deliveries, and one circuit breaker
// per broker cluster. It is safe for concurrent use.
//
// Lookups on the hot path are lock-free: the state of each topic and
// (group, topic) seen lives in copy-on-write maps read with one atomic
// load, created on first use. Callers pass registered topics and groups
// only (the sidecar checks registrations first), so these maps stay as
// small as the registrations; past maxStates entries new names share one
// state per configuration key instead of getting their own.
//
// Lock order: Controller.mu, then limMu, then a Breaker's or an inflight
// semaphore's mutex. mu is held only to create state and in Apply, never
// while waiting.
type Controller struct {
	now func() time.Time

	// limMu is held from reading the clock to handing that time to a rate
	// limiter, so that limiters get their times in order. x/time/rate
	// takes the time from its caller and moves its clock back to an
	// earlier time it is given: a goroutine that read the clock, was
	// descheduled and reserved after another that read it later made the
	// time between count twice, and the limiter let more through than
	// its rate (CI: 2,502 publishes in 5.001 s at 500/s with a burst of
	// 1). Never held while waiting.
	limMu sync.Mutex

	mu       sync.Mutex // serialises Apply and the creation of state
	gen      atomic.Pointer[generation]
	breakers atomic.Pointer[map[string]*Breaker] // copy-on-write under mu
}

// generation is one applied Config and the states created under it.
type generation struct {
	c      *compiled
	topics atomic.Pointer[map[string]*topicState]    // copy-on-write under Controller.mu
	groups atomic.Pointer[map[[2]string]*groupState] // by (group, topic); copy-on-write under mu
	// shared holds group states by stateKey (several (group, topic) may
	// share one); guarded by Controller.mu.
	shared map[stateKey]*groupState
}

// maxStates bounds the topic and (group, topic) states kept.
const maxStates = 1 << 16

// topicState is the publish state of one topic under one generation.
type topicState struct {
	limits TopicLimits
	lim    *rate.Limiter // nil: no rate limit; carried over by Apply
}

// groupState is the delivery state of one stateKey.
type groupState struct {
	key    stateKey
	limits GroupLimits
	lim    *rate.Limiter // nil: no rate limit; carried over by Apply
	sem    *semaphore    // nil: no in-flight bound; carried over by Apply
}

// Option configures New.
type Option interface{ apply(*Controller) }

type optionFunc func(*Controller)

func (f optionFunc) apply(c *Controller) { f(c) }

// WithClock replaces time.Now for rate limits and breakers (tests). Waits
// still use real timers.
func WithClock(now func() time.Time) Option { return optionFunc(func(c *Controller) { c.now = now }) }

// New returns a Controller applying cfg; an invalid cfg is an error
// wrapping ErrInvalidConfig.
func New(cfg Config, opts ...Option) (*Controller, error) {
	c := &Controller{now: time.Now}
	for _, o := range opts {
		o.apply(c)
	}
	comp, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	c.gen.Store(newGeneration(comp))
	c.breakers.Store(&map[string]*Breaker{})
	return c, nil
}

func newGeneration(comp *compiled) *generation {
	g := &generation{c: comp, shared: map[stateKey]*groupState{}}
	g.topics.Store(&map[string]*topicState{})
	g.groups.Store(&map[[2]string]*groupState{})
	return g
}

// Apply replaces the configuration at once, without a restart. Topics and
// groups keep their state where they keep a limit: a rate limiter keeps
// its tokens (its rate and burst are updated in place), an in-flight bound
// keeps its count of deliveries in flight (a lower bound only stops new
// ones), and breakers keep their state (the new breaker settings apply
// from their next transition). Requests waiting under the old limits
// finish under them. An invalid cfg changes nothing and returns an error
// wrapping ErrInvalidConfig.
func (c *Controller) Apply(cfg Config) error {
	comp, err := compile(cfg)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.gen.Load()
	ng := newGeneration(comp)
	c.limMu.Lock() // the carried limiters get now in order (limMu)
	defer c.limMu.Unlock()
	now := c.now()

	topics := make(map[string]*topicState, len(*old.topics.Load()))
	for topic, st := range *old.topics.Load() {
		topics[topic] = carryTopic(st, comp.topicLimits(topic), now)
	}
	ng.topics.Store(&topics)

	groups := make(map[[2]string]*groupState, len(*old.groups.Load()))
	for gt, st := range *old.groups.Load() {
		l, key, ok := comp.groupLimits(gt[0], gt[1])
		if !ok {
			groups[gt] = nil
			continue
		}
		ns := ng.shared[key]
		if ns == nil {
			prev := old.shared[key]
			if prev == nil && st != nil && st.key == key {
				prev = st
			}
			ns = carryGroup(prev, key, l, now)
			ng.shared[key] = ns
		}
		groups[gt] = ns
	}
	ng.groups.Store(&groups)
	c.gen.Store(ng)
	return nil
}

// Config returns the configuration in force.
func (c *Controller) Config() Config { return c.gen.Load().c.cfg }

func carryTopic(old *topicState, l TopicLimits, now time.Time) *topicState {
	st := &topicState{limits: l}
	if l.PublishRate > 0 {
		st.lim = carryLimiter(old.lim, l.PublishRate, l.Burst, now)
	}
	return st
}

func carryGroup(old *groupState, key stateKey, l GroupLimits, now time.Time) *groupState {
	st := &groupState{key: key, limits: l}
	var oldLim *rate.Limiter
	var oldSem *semaphore
	if old != nil {
		oldLim, oldSem = old.lim, old.sem
	}
	if l.DeliveryRate > 0 {
		st.lim = carryLimiter(oldLim, l.DeliveryRate, l.Burst, now)
	}
	if l.MaxInflight > 0 {
		st.sem = oldSem
		if st.sem == nil {
			st.sem = newSemaphore()
		}
		st.sem.setMax(l.MaxInflight)
	}
	return st
}

// carryLimiter returns lim updated to rate r and burst b, keeping its
// tokens, or a new full limiter when lim is nil.
func carryLimiter(lim *rate.Limiter, r float64, b int, now time.Time) *rate.Limiter {
	burst := burstOf(r, b)
	if lim == nil {
		return rate.NewLimiter(rate.Limit(r), burst)
	}
	if lim.Limit() != rate.Limit(r) {
		lim.SetLimitAt(now, rate.Limit(r))
	}
	if lim.Burst() != burst {
		lim.SetBurstAt(now, burst)
	}
	return lim
}

// topic returns the state of topic under the current generation.
func (c *Controller) topic(topic string) *topicState {
	g := c.gen.Load()
	if st, ok := (*g.topics.Load())[topic]; ok {
		return st
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g = c.gen.Load() // Apply may have run meanwhile
	m := *g.topics.Load()
	if st, ok := m[topic]; ok {
		return st
	}
	st := carryTopic(&topicState{}, g.c.topicLimits(topic), c.now())
	if len(m) >= maxStates {
		return c.overflowTopic(g, topic, st)
	}
	nm := make(map[string]*topicState, len(m)+1)
	maps.Copy(nm, m)
	nm[topic] = st
	g.topics.Store(&nm)
	return st
}

// overflowTopic is topic's state when maxStates topics have state already:
// one shared per configuration key, kept under the key "\x00" + key.
// Controller.mu must be held.
func (c *Controller) overflowTopic(g *generation, topic string, st *topicState) *topicState {
	key := "\x00" + topic
	if _, exact := g.c.topicExact[topic]; !exact {
		key = "\x00"
		for _, p := range g.c.topicPats {
			if topology.Match(p.pattern, topic) {
				key += p.pattern
				break
			}
		}
	}
	m := *g.topics.Load()
	if shared, ok := m[key]; ok {
		return shared
	}
	nm := make(map[string]*topicState, len(m)+1)
	maps.Copy(nm, m)
	nm[key] = st
	g.topics.Store(&nm)
	return st
}

// group returns the state of (group, topic) under the current generation,
// nil when no limit applies.
func (c *Controller) group(group, topic string) *groupState {
	gt := [2]string{group, topic}
	g := c.gen.Load()
	if st, ok := (*g.groups.Load())[gt]; ok {
		return st
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g = c.gen.Load()
	m := *g.groups.Load()
	if st, ok := m[gt]; ok {
		return st
	}
	l, key, ok := g.c.groupLimits(group, topic)
	if !ok {
		return c.cacheGroup(g, m, gt, nil)
	}
	full := len(m) >= maxStates
	if full && key[1] != wholeGroup {
		// Past the bound, the group's further topics share one state.
		key = stateKey{group, wholeGroup + "overflow"}
	}
	st := g.shared[key]
	if st == nil {
		st = carryGroup(nil, key, l, c.now())
		g.shared[key] = st
	}
	if full {
		return st
	}
	return c.cacheGroup(g, m, gt, st)
}

// cacheGroup publishes m plus gt → st as the generation's group map and
// returns st. Controller.mu must be held.
func (c *Controller) cacheGroup(g *generation, m map[[2]string]*groupState, gt [2]string, st *groupState) *groupState {
	if len(m) >= maxStates {
		return st
	}
	nm := make(map[[2]string]*groupState, len(m)+1)
	maps.Copy(nm, m)
	nm[gt] = st
	g.groups.Store(&nm)
	return st
}

// MaxMessageBytes returns the size limit of topic, 0 when none is
// configured here.
func (c *Controller) MaxMessageBytes(topic string) int {
	return c.topic(topic).limits.MaxMessageBytes
}

// CheckSize returns a *LimitError (ErrTooLarge) when a message of size
// bytes is over topic's size limit. It does not wait and takes no token:
// call it before anything is sent or queued.
func (c *Controller) CheckSize(topic string, size int) error {
	return checkSize(c.topic(topic), topic, size)
}

func checkSize(st *topicState, topic string, size int) error {
	if max := st.limits.MaxMessageBytes; max > 0 && size > max {
		return &LimitError{Kind: KindSize, Topic: topic, Limit: float64(max), Size: size}
	}
	return nil
}

// WaitPublish takes one publish from topic's rate. Over the rate, in
// OnLimitWait mode it waits for its turn until ctx ends (ctx's error); a
// turn that would come after ctx's deadline fails at once with a
// *LimitError (ErrRateLimited) and leaves the rate as it was. In
// OnLimitReject mode it fails at once. Without a rate it returns nil at
// once.
func (c *Controller) WaitPublish(ctx context.Context, topic string) error {
	return c.waitPublish(ctx, c.topic(topic), topic)
}

func (c *Controller) waitPublish(ctx context.Context, st *topicState, topic string) error {
	if st.lim == nil {
		return nil
	}
	return c.take(ctx, st.lim, st.limits.OnLimit == OnLimitReject, func(retry time.Duration) error {
		return &LimitError{Kind: KindRate, Topic: topic, Limit: st.limits.PublishRate, RetryAfter: retry}
	})
}

// AllowPublish is CheckSize then WaitPublish: the flow-control checks of a
// publish of size bytes to topic, in one call.
func (c *Controller) AllowPublish(ctx context.Context, topic string, size int) error {
	st := c.topic(topic)
	if err := checkSize(st, topic, size); err != nil {
		return err
	}
	return c.waitPublish(ctx, st, topic)
}

// WaitDelivery takes one delivery from the rate of group on topic, waiting
// for its turn until ctx ends (ctx's error); a turn after ctx's deadline
// fails at once with a *LimitError. Call it before taking the next message
// from the broker, so that a capped group leaves its messages there.
func (c *Controller) WaitDelivery(ctx context.Context, group, topic string) error {
	st := c.group(group, topic)
	if st == nil || st.lim == nil {
		return nil
	}
	return c.take(ctx, st.lim, false, func(retry time.Duration) error {
		return &LimitError{Kind: KindRate, Topic: topic, Group: group, Limit: st.limits.DeliveryRate, RetryAfter: retry}
	})
}

// take reserves one token of lim: at once, or after waiting (unless
// reject), or fails with fail(delay).
func (c *Controller) take(ctx context.Context, lim *rate.Limiter, reject bool, fail func(time.Duration) error) error {
	c.limMu.Lock()
	now := c.now()
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		c.limMu.Unlock()
		return fail(0)
	}
	d := r.DelayFrom(now)
	if d == 0 {
		c.limMu.Unlock()
		return nil
	}
	dl, ok := ctx.Deadline()
	if reject || ok && dl.Sub(now) < d {
		r.CancelAt(now)
		c.limMu.Unlock()
		return fail(d)
	}
	c.limMu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		c.limMu.Lock()
		r.CancelAt(c.now())
		c.limMu.Unlock()
		return ctx.Err()
	}
}

// Permit is one delivery slot of a group's in-flight bound. The zero
// Permit (no bound applies) is valid; Release does nothing then.
type Permit struct{ s *semaphore }

// Release gives the slot back. Call it exactly once, when the delivery is
// settled (acked, nacked or handed back); the pipeline does it for you
// when Stage returned it from OnFetch.
func (p Permit) Release() {
	if p.s != nil {
		p.s.release()
	}
}

// AcquireInflight takes a slot of the in-flight bound of group on topic
// without waiting; false when the bound is reached. With no bound it
// returns the zero Permit and true.
func (c *Controller) AcquireInflight(group, topic string) (Permit, bool) {
	st := c.group(group, topic)
	if st == nil || st.sem == nil {
		return Permit{}, true
	}
	if !st.sem.tryAcquire() {
		return Permit{}, false
	}
	return Permit{st.sem}, true
}

// WaitInflight takes a slot of the in-flight bound of group on topic,
// waiting for one to be released until ctx ends (ctx's error). With no
// bound it returns the zero Permit at once. Call it before taking the next
// message from the broker, and release the Permit when that delivery is
// settled.
func (c *Controller) WaitInflight(ctx context.Context, group, topic string) (Permit, error) {
	st := c.group(group, topic)
	if st == nil || st.sem == nil {
		return Permit{}, nil
	}
	if err := st.sem.acquire(ctx); err != nil {
		return Permit{}, err
	}
	return Permit{st.sem}, nil
}

// Inflight returns the deliveries in flight under the bound of group on
// topic and the bound; 0, 0 when none applies.
func (c *Controller) Inflight(group, topic string) (n, max int) {
	st := c.group(group, topic)
	if st == nil || st.sem == nil {
		return 0, 0
	}
	return st.sem.state()
}

// semaphore is a counting semaphore whose bound can change while slots
// are held. Waiters wait on wake, which is closed and replaced whenever a
// slot may have become free.
type semaphore struct {
	mu      sync.Mutex
	n       int
	max     int
	waiters int
	wake    chan struct{}
}

func newSemaphore() *semaphore { return &semaphore{wake: make(chan struct{})} }

func (s *semaphore) tryAcquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n >= s.max {
		return false
	}
	s.n++
	return true
}

func (s *semaphore) acquire(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.n < s.max {
			s.n++
			s.mu.Unlock()
			return nil
		}
		wake := s.wake
		s.waiters++
		s.mu.Unlock()
		var err error
		select {
		case <-wake:
		case <-ctx.Done():
			err = ctx.Err()
		}
		s.mu.Lock()
		s.waiters--
		s.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

func (s *semaphore) release() {
	s.mu.Lock()
	if s.n > 0 {
		s.n--
	}
	s.broadcast()
	s.mu.Unlock()
}

func (s *semaphore) setMax(n int) {
	s.mu.Lock()
	grew := n > s.max
	s.max = n
	if grew {
		s.broadcast()
	}
	s.mu.Unlock()
}

// broadcast wakes every waiter. s.mu must be held.
func (s *semaphore) broadcast() {
	if s.waiters == 0 {
		return
	}
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *semaphore) state() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, s.max
}
