package forward

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/internal/pki"
)

// scaled stretches a wait bound under the race detector.
func scaled(d time.Duration) time.Duration {
	if raceEnabled {
		return 4 * d
	}
	return d
}

func testLogger() *slog.Logger {
	if os.Getenv("MSGMESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// waitFor polls cond until it holds, failing the test after d (race-scaled).
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(scaled(d))
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", scaled(d), what)
		}
		<-tick.C
	}
}

// recvWithin receives one value from ch, failing the test if none comes
// within d (race-scaled).
func recvWithin[T any](tb testing.TB, ch <-chan T, d time.Duration, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(scaled(d)):
		tb.Fatalf("timed out after %v waiting for %s", scaled(d), what)
		panic("unreachable")
	}
}

// testPKI is a real CA (internal/pki) and the certificates tests need.
type testPKI struct {
	ca *pki.CA
}

func newPKI(tb testing.TB) *testPKI {
	tb.Helper()
	ca, err := pki.NewCA()
	if err != nil {
		tb.Fatal(err)
	}
	return &testPKI{ca: ca}
}

func (p *testPKI) identity(tb testing.TB, app string) *pki.Identity {
	tb.Helper()
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(app)
	if err != nil {
		tb.Fatal(err)
	}
	certPEM, err := p.ca.Issue(csrPEM, app, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	id, err := pki.NewIdentity(app, certPEM, keyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

func (p *testPKI) serverTLS(tb testing.TB, app string) *tls.Config {
	tb.Helper()
	c, err := pki.ServerTLS(p.identity(tb, app), p.ca.CertPEM())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func (p *testPKI) clientTLS(tb testing.TB, app string) *tls.Config {
	tb.Helper()
	c, err := pki.ClientTLS(p.identity(tb, app), p.ca.CertPEM())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// testDelivery stands in for a broker adapter's delivery (the real
// adapters are tested in broker/...): it records every Ack and Nack
// call, so tests can check that each delivery is settled exactly once.
type testDelivery struct {
	msg         broker.Message
	id          string
	redelivered int
	ts          time.Time

	mu      sync.Mutex
	acks    int
	nacks   int
	delay   time.Duration
	settled chan struct{} // closed on the first Ack or Nack
}

var _ broker.Delivery = (*testDelivery)(nil)

func newDelivery(i int, body []byte) *testDelivery {
	return &testDelivery{
		msg: broker.Message{
			Topic:   "orders.created",
			Key:     "k" + itoa(i),
			Headers: []broker.Header{{Key: "traceparent", Value: "00-" + itoa(i)}, {Key: "dup", Value: "a"}, {Key: "dup", Value: "b"}},
			Body:    body,
		},
		id:          "msg-" + itoa(i),
		redelivered: i % 3,
		ts:          time.Unix(1_700_000_000, int64(i)),
		settled:     make(chan struct{}),
	}
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	if i == 0 {
		return "0"
	}
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	return string(b[n:])
}

func (d *testDelivery) Message() *broker.Message { return &d.msg }
func (d *testDelivery) MessageID() string        { return d.id }
func (d *testDelivery) Redelivered() int         { return d.redelivered }
func (d *testDelivery) Timestamp() time.Time     { return d.ts }

func (d *testDelivery) Ack(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.acks++
	d.markSettled()
	return nil
}

func (d *testDelivery) Nack(ctx context.Context, delay time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nacks++
	d.delay = delay
	d.markSettled()
	return nil
}

// markSettled must be called with d.mu held.
func (d *testDelivery) markSettled() {
	select {
	case <-d.settled:
	default:
		close(d.settled)
	}
}

// counts returns how many times Ack and Nack were called, and the last
// Nack delay.
func (d *testDelivery) counts() (acks, nacks int, delay time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.acks, d.nacks, d.delay
}

// untouched fails the test if d was acked or nacked.
func (d *testDelivery) untouched(tb testing.TB) {
	tb.Helper()
	if a, n, _ := d.counts(); a+n != 0 {
		tb.Fatalf("delivery %s was settled (%d acks, %d nacks); want it untouched", d.id, a, n)
	}
}

// taken is one delivery the test app received from a sibling.
type taken struct {
	app          string // the app the forwarder's certificate names
	group, topic string
	d            broker.Delivery
}

// testApp is a trivial in-test Deliverer standing in for the receiving
// sidecar and its app: it queues every delivery on got for the test to
// answer, or refuses it with refuse's error. The lead tests the real
// sidecar wiring.
type testApp struct {
	got    chan taken
	calls  atomic.Int64 // DeliverFromSibling calls, refused ones included
	refuse func(group, topic string) error
	// during, if set, runs inside DeliverFromSibling before it returns.
	during func(ctx context.Context, t taken)
}

func newApp() *testApp { return &testApp{got: make(chan taken, 4096)} }

func (a *testApp) DeliverFromSibling(ctx context.Context, app, group, topic string, d broker.Delivery) error {
	a.calls.Add(1)
	if a.refuse != nil {
		if err := a.refuse(group, topic); err != nil {
			return err
		}
	}
	t := taken{app: app, group: group, topic: topic, d: d}
	if a.during != nil {
		a.during(ctx, t)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case a.got <- t:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sibling is a forwarding Server on 127.0.0.1 for one test.
type sibling struct {
	*Server
	addr  string
	serve chan error
}

// startSibling runs a Server for app "orders" on a fresh loopback port (or
// on addr, to restart a sibling where it was). At cleanup it is shut down.
func startSibling(tb testing.TB, p *testPKI, d Deliverer, addr string, tweak ...func(*ServerConfig)) *sibling {
	tb.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	cfg := ServerConfig{TLS: p.serverTLS(tb, "orders"), App: "orders", Deliverer: d, Logger: testLogger()}
	for _, f := range tweak {
		f(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	sb := &sibling{Server: s, addr: ln.Addr().String(), serve: make(chan error, 1)}
	go func() { sb.serve <- s.Serve(ln) }()
	tb.Cleanup(func() { sb.stop(tb, 10*time.Second) })
	return sb
}

// stop shuts the sibling down, giving its app up to grace to answer what it
// holds, and waits for Serve to return.
func (s *sibling) stop(tb testing.TB, grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	_ = s.Shutdown(ctx)
	select {
	case err := <-s.serve:
		if err != nil {
			tb.Errorf("Serve = %v", err)
		}
		s.serve <- nil // for a second stop
	case <-time.After(scaled(10 * time.Second)):
		tb.Error("Serve did not return after Shutdown")
	}
}

// kill stops the sibling without letting its app answer anything.
func (s *sibling) kill(tb testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.Shutdown(ctx)
}

func newForwarder(tb testing.TB, p *testPKI, tweak ...func(*ClientConfig)) *Forwarder {
	tb.Helper()
	// A take timeout well above what a loaded CI machine can stall a
	// loopback sibling for: only the tests of silence shorten it.
	cfg := ClientConfig{TLS: p.clientTLS(tb, "orders"), App: "orders", Name: "test-forwarder", Logger: testLogger(),
		TakeTimeout: scaled(2 * time.Second)}
	for _, f := range tweak {
		f(&cfg)
	}
	f, err := NewForwarder(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = f.Close() })
	return f
}

func ctxTimeout(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), scaled(d))
	tb.Cleanup(cancel)
	return ctx
}
