package sidecartest

import (
	"context"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
)

// App is the app most tests register and connect as; Dial uses it unless
// told otherwise.
const App = "orders"

// Dial connects an SDK client to the sidecar at addr, as App unless opts
// say WithApp, reconnecting quickly; it closes in t.Cleanup.
func Dial(t testing.TB, addr string, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts = append([]client.Option{client.WithApp(App), client.WithLogger(Logger()), client.WithReconnectBackoff(10*time.Millisecond, 200*time.Millisecond)}, opts...)
	c, err := client.Dial(ctx, addr, opts...)
	if err != nil {
		t.Fatalf("client.Dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// PublishN publishes n messages with bodies "<prefix>-<i>" through c,
// keeping up to window in flight, and fails the test on any error.
func PublishN(t testing.TB, c *client.Client, topic, prefix string, n, window int) {
	t.Helper()
	PublishEach(t, c, n, window, func(i int) *client.Message {
		return &client.Message{Topic: topic, Body: []byte(fmt.Sprintf("%s-%d", prefix, i))}
	})
}

// PublishEach publishes msg(i) for i < n through c, keeping up to window
// in flight, and fails the test on any error.
func PublishEach(t testing.TB, c *client.Client, n, window int, msg func(i int) *client.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Scaled(60*time.Second))
	defer cancel()
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		c.PublishAsync(ctx, msg(i), func(_ client.PublishAck, err error) {
			defer wg.Done()
			<-sem
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("publish: %v", firstErr)
	}
}

// Subscribe subscribes c to (group, topic), counting every delivery in
// into under who and acking it.
func Subscribe(t *testing.T, c *client.Client, group, topic, who string, into *Tally) {
	t.Helper()
	if _, err := c.Subscribe(context.Background(), group, topic, func(_ context.Context, d *client.Delivery) error {
		into.Add(who, string(d.Body))
		return nil
	}); err != nil {
		t.Fatalf("subscribe %s:%s: %v", group, topic, err)
	}
}

// CountingDialer counts the connections an SDK client opens
// (client.WithDialer(d.Dial)), so a test can tell that it never had to
// reconnect.
type CountingDialer struct{ n atomic.Int32 }

// Dial opens a connection to addr, TCP or unix:/path as the SDK's own
// dialer would, and counts it.
func (d *CountingDialer) Dial(ctx context.Context, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return nd.DialContext(ctx, "unix", path)
	}
	return nd.DialContext(ctx, "tcp", addr)
}

// Count is how many connections were dialled.
func (d *CountingDialer) Count() int32 { return d.n.Load() }

// Tally counts deliveries per body and per consumer; safe for the
// handlers of many subscriptions at once.
type Tally struct {
	mu     sync.Mutex
	bodies map[string]int
	by     map[string]int
	total  int
}

// NewTally returns an empty tally.
func NewTally() *Tally { return &Tally{bodies: map[string]int{}, by: map[string]int{}} }

// Add counts one delivery of body to the consumer who.
func (t *Tally) Add(who, body string) {
	t.mu.Lock()
	t.bodies[body]++
	t.by[who]++
	t.total++
	t.mu.Unlock()
}

// Distinct is how many different bodies were delivered.
func (t *Tally) Distinct() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.bodies)
}

// Count is how many deliveries there were, duplicates included.
func (t *Tally) Count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// Times is how many times body was delivered.
func (t *Tally) Times(body string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bodies[body]
}

// Bodies is a copy of the deliveries per body.
func (t *Tally) Bodies() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.bodies)
}

// By is a copy of the deliveries per consumer.
func (t *Tally) By() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.by)
}

// Forget drops body's deliveries, for a test that sent one message beside
// the numbered ones ExactlyOnce checks.
func (t *Tally) Forget(body string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.bodies, body)
}

// ExactlyOnce fails unless every "<prefix>-<i>" for i < n was seen once,
// and nothing else was.
func (t *Tally) ExactlyOnce(tb testing.TB, prefix string, n int) {
	tb.Helper()
	t.mu.Lock()
	defer t.mu.Unlock()
	var missing, dup int
	for i := 0; i < n; i++ {
		switch c := t.bodies[fmt.Sprintf("%s-%d", prefix, i)]; {
		case c == 0:
			missing++
		case c > 1:
			dup++
		}
	}
	if missing != 0 || dup != 0 || len(t.bodies) != n {
		tb.Fatalf("want each of %d messages once: %d missing, %d duplicated, %d distinct bodies", n, missing, dup, len(t.bodies))
	}
}

// Ledger sets what a test had acknowledged against what its subscribers
// consumed, by body: the "every acknowledged message consumed, none
// twice" check the tests that publish through an upgrade or a reload
// share. Safe for concurrent use.
type Ledger struct {
	// Consumed counts what the subscribers got.
	Consumed *Tally
	mu       sync.Mutex
	acked    map[string]bool
}

// NewLedger returns an empty Ledger.
func NewLedger() *Ledger { return &Ledger{Consumed: NewTally(), acked: map[string]bool{}} }

// Ack records that the publish of body was acknowledged.
func (l *Ledger) Ack(body string) {
	l.mu.Lock()
	l.acked[body] = true
	l.mu.Unlock()
}

// AckedCount is how many publishes were acknowledged so far.
func (l *Ledger) AckedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// IsAcked reports whether the publish of body was acknowledged.
func (l *Ledger) IsAcked(body string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked[body]
}

// WaitConsumed waits until every acknowledged message was consumed.
func (l *Ledger) WaitConsumed(t testing.TB, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, "every acknowledged message to be consumed", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for b := range l.acked {
			if l.Consumed.Times(b) == 0 {
				return false
			}
		}
		return true
	})
}

// ConsumedOnce fails t for each message consumed more than once.
func (l *Ledger) ConsumedOnce(t testing.TB) {
	t.Helper()
	for b, n := range l.Consumed.Bodies() {
		if n > 1 {
			t.Errorf("%s consumed %d times", b, n)
		}
	}
}

// Traffic publishes and consumes through a sidecar until Finish, counting
// what was acknowledged and what was consumed (its Ledger).
type Traffic struct {
	*Ledger
	pubDial, subDial CountingDialer
	stop             chan struct{}
	done             sync.WaitGroup
}

// StartTraffic subscribes one client to (group, topic) on the sidecar at
// addr and publishes to topic from another, four publishes at a time,
// until Finish. Another subscriber of the group may count into
// tr.Consumed too.
func StartTraffic(t *testing.T, addr, group, topic string) *Traffic {
	tr := &Traffic{Ledger: NewLedger(), stop: make(chan struct{})}
	sub := Dial(t, addr, client.WithDialer(tr.subDial.Dial))
	Subscribe(t, sub, group, topic, "sub", tr.Consumed)
	pub := Dial(t, addr, client.WithDialer(tr.pubDial.Dial))
	for w := 0; w < 4; w++ {
		tr.done.Add(1)
		go func() {
			defer tr.done.Done()
			for i := 0; ; i++ {
				select {
				case <-tr.stop:
					return
				default:
				}
				body := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: []byte(body)})
				cancel()
				if err == nil {
					tr.Ack(body)
				}
			}
		}()
	}
	return tr
}

// Finish stops publishing and waits until every acknowledged message was
// consumed; it fails on loss, on a duplicate, and on a reconnect.
func (tr *Traffic) Finish(t *testing.T) {
	t.Helper()
	close(tr.stop)
	tr.done.Wait()
	tr.WaitConsumed(t, 60*time.Second)
	tr.ConsumedOnce(t)
	if p, s := tr.pubDial.Count(), tr.subDial.Count(); p != 1 || s != 1 {
		t.Errorf("clients dialled %d (publisher) and %d (subscriber) times; a connection broke", p, s)
	}
	t.Logf("%d acknowledged, %d consumed", tr.AckedCount(), tr.Consumed.Count())
}
