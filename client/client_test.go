package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func dial(t *testing.T, p *peer, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	opts = append([]client.Option{client.WithApp("test-app"), client.WithLogger(quiet), client.WithReconnectBackoff(time.Millisecond, 5*time.Millisecond)}, opts...)
	c, err := client.Dial(ctx, p.addr(), opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func TestDialHandshake(t *testing.T) {
	p := newPeer(t)
	c := dial(t, p, client.WithApp("orders"), client.WithClientName("orders-1"), client.WithMaxInflight(7))
	pc := p.accept(t)
	h, d := pc.handshake(t)
	want := mesh.Hello{App: "orders", Client: "orders-1", MaxInflight: 7, Features: mesh.FeatureMessageFlags}
	if h != want {
		t.Fatalf("HELLO = %+v", h)
	}
	if raw := pc.lastHello; len(raw) != len(want.AppendTo(nil)) {
		t.Fatalf("HELLO without a secret is %d bytes (%x): it carries an empty secret, then the features", len(raw), raw)
	}
	if len(d.Subs) != 0 {
		t.Fatalf("first DECLARE = %+v, want an empty set", d.Subs)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDialSendsSecret: WithSecret puts the app's secret in HELLO's
// optional trailing field (docs/protocol.md §5.1).
func TestDialSendsSecret(t *testing.T) {
	p := newPeer(t)
	dial(t, p, client.WithApp("orders"), client.WithClientName("orders-1"), client.WithSecret("0123456789abcdef-secret"))
	pc := p.accept(t)
	h, _ := pc.handshake(t)
	if h.App != "orders" || h.Secret != "0123456789abcdef-secret" {
		t.Fatalf("HELLO = app %q secret %q", h.App, h.Secret)
	}
}

func TestDialErrors(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		opts []client.Option
		want string
	}{
		{"no app", nil, "WithApp is required"},
		{"max inflight 0", []client.Option{client.WithApp("a"), client.WithMaxInflight(0)}, "WithMaxInflight(0)"},
		{"min > max backoff", []client.Option{client.WithApp("a"), client.WithReconnectBackoff(time.Second, time.Millisecond)}, "WithReconnectBackoff"},
	} {
		if _, err := client.Dial(ctx, "127.0.0.1:1", tc.opts...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Dial with %s: %v, want an error about %s", tc.name, err, tc.want)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := client.Dial(ctx, addr, client.WithApp("a"), client.WithLogger(quiet)); err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
}

// A sidecar on a unix socket is reached through a dialer of the app's,
// or by its plain unix:/path address with the default dialer.
func TestDialUnixSocket(t *testing.T) {
	tests := []struct {
		name string
		addr func(path string) string
		opts func(path string) []client.Option
	}{
		{"WithDialer", func(string) string { return "ignored" }, func(path string) []client.Option {
			return []client.Option{client.WithDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			})}
		}},
		{"unix: address", func(path string) string { return "unix:" + path }, func(string) []client.Option { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mesh.sock")
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Skip("no unix sockets:", err)
			}
			p := startPeer(t, ln)
			p.autoPublish = true
			opts := append([]client.Option{client.WithApp("a"), client.WithLogger(quiet)}, tt.opts(path)...)
			c, err := client.Dial(testCtx(t), tt.addr(path), opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Publish(testCtx(t), &client.Message{Topic: "t"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestPublish(t *testing.T) {
	p := newPeer(t)
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)

	type result struct {
		ack client.PublishAck
		err error
	}
	res := make(chan result, 1)
	msg := &client.Message{Topic: "orders.created", Key: "k1", Headers: []mesh.HeaderField{{Key: "h", Value: "v"}}, Body: []byte("hello")}
	go func() {
		ack, err := c.Publish(testCtx(t), msg)
		res <- result{ack, err}
	}()
	f := pc.expect(t, mesh.KindPublish, false)
	if f.ID == 0 {
		t.Fatal("PUBLISH with id 0")
	}
	var pub mesh.Publish
	if err := pub.Decode(f.Payload); err != nil {
		t.Fatal(err)
	}
	if pub.Topic != "orders.created" || pub.Key != "k1" || string(pub.Body) != "hello" || !slices.Equal(pub.Headers, msg.Headers) {
		t.Fatalf("PUBLISH = %+v", pub)
	}
	want := mesh.PublishAck{Stream: "ORDERS", Partition: -1, Offset: 42, MessageID: "m-42"}
	pc.send(mesh.KindPublishAck, mesh.FlagResponse, f.ID, &want)
	r := <-res
	if r.err != nil || r.ack != want {
		t.Fatalf("Publish = %+v, %v; want %+v", r.ack, r.err, want)
	}

	if _, err := c.Publish(testCtx(t), &client.Message{}); err == nil {
		t.Fatal("Publish without a topic succeeded")
	}
}

func TestPublishError(t *testing.T) {
	p := newPeer(t)
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)

	errc := make(chan error, 1)
	go func() {
		_, err := c.Publish(testCtx(t), &client.Message{Topic: "t", Body: []byte("{")})
		errc <- err
	}()
	f := pc.expect(t, mesh.KindPublish, false)
	pc.send(mesh.KindError, mesh.FlagResponse, f.ID, &mesh.Error{Code: mesh.CodeSchemaInvalid, Message: "body: unexpected end"})
	err := <-errc
	var e *client.Error
	if !errors.As(err, &e) || e.Code != mesh.CodeSchemaInvalid || e.Message != "body: unexpected end" {
		t.Fatalf("Publish error = %#v", err)
	}
	if client.CodeOf(err) != mesh.CodeSchemaInvalid || client.CodeOf(errors.New("x")) != 0 {
		t.Fatal("CodeOf is wrong")
	}
	if !errors.Is(err, &client.Error{Code: mesh.CodeSchemaInvalid}) {
		t.Fatal("errors.Is with the same code is false")
	}
	if errors.Is(err, &client.Error{Code: mesh.CodeTimeout}) {
		t.Fatal("errors.Is with another code is true")
	}
	if !errors.Is(fmt.Errorf("wrapped: %w", err), &client.Error{Code: mesh.CodeSchemaInvalid}) {
		t.Fatal("errors.Is through a wrap is false")
	}
}

func TestPublishAsync(t *testing.T) {
	p := newPeer(t)
	p.autoPublish = true
	c := dial(t, p)
	const n = 500
	var mu sync.Mutex
	offsets := make(map[int64]int)
	var calls atomic.Int32
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		c.PublishAsync(testCtx(t), &client.Message{Topic: "t", Body: []byte{byte(i)}}, func(ack client.PublishAck, err error) {
			defer wg.Done()
			calls.Add(1)
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			mu.Lock()
			offsets[ack.Offset]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if calls.Load() != n || len(offsets) != n {
		t.Fatalf("done called %d times with %d distinct offsets, want %d", calls.Load(), len(offsets), n)
	}
}

func TestSubscribeAckNack(t *testing.T) {
	p := newPeer(t)
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)

	got := make(chan *client.Delivery, 16)
	manualDone := make(chan struct{}) // the "manual" handler has made both its checks
	handler := func(ctx context.Context, d *client.Delivery) error {
		got <- d
		switch string(d.Body) {
		case "fail":
			return errors.New("boom")
		case "later":
			return fmt.Errorf("wrapped: %w", &client.RetryAfter{Delay: 1500 * time.Millisecond, Err: errors.New("busy")})
		case "manual":
			if err := d.Nack(ctx, 2*time.Second); err != nil {
				t.Errorf("Nack in handler: %v", err)
			}
			if err := d.Ack(ctx); !errors.Is(err, client.ErrAlreadySettled) {
				t.Errorf("second settle = %v, want ErrAlreadySettled", err)
			}
			close(manualDone)
		}
		return nil
	}
	subc := make(chan error, 1)
	go func() {
		_, err := c.Subscribe(testCtx(t), "g1", "orders", handler)
		subc <- err
	}()
	if subs := pc.expectDeclare(t); !slices.Equal(subs, []mesh.Subscription{{Group: "g1", Topic: "orders", Mode: mesh.ModePush}}) {
		t.Fatalf("DECLARE = %+v", subs)
	}
	if err := <-subc; err != nil {
		t.Fatal(err)
	}

	ts := time.Unix(1700000000, 5)
	deliver := func(id uint64, group, body string) {
		m := mesh.Message{DeliveryID: id, Group: group, Topic: "orders", Key: "k", Headers: []mesh.HeaderField{{Key: "a", Value: "b"}},
			Body: []byte(body), MessageID: "mid-" + body, Redelivered: 2, Timestamp: ts.UnixNano()}
		pc.send(mesh.KindDeliver, 0, id, &m)
	}
	deliver(101, "g1", "ok")
	f := pc.expect(t, mesh.KindAck, true)
	if f.ID != 101 || len(f.Payload) != 0 {
		t.Fatalf("ACK id %d payload %x, want id 101, empty", f.ID, f.Payload)
	}
	d := <-got
	if d.Topic != "orders" || d.Group != "g1" || d.Key != "k" || d.DeliveryID != 101 || d.MessageID != "mid-ok" ||
		d.Redelivered != 2 || !d.Timestamp.Equal(ts) || !slices.Equal(d.Headers, []mesh.HeaderField{{Key: "a", Value: "b"}}) {
		t.Fatalf("delivery = %+v", d)
	}
	if err := d.Ack(testCtx(t)); !errors.Is(err, client.ErrAlreadySettled) {
		t.Fatalf("Ack after the handler acked = %v", err)
	}

	for _, tc := range []struct {
		id    uint64
		group string
		body  string
		delay uint32
	}{
		{102, "g1", "fail", 0},
		{103, "g1", "later", 1500},
		{104, "g1", "manual", 2000},
		{105, "other", "nobody", 0}, // no subscription: NACKed by the read loop
	} {
		deliver(tc.id, tc.group, tc.body)
		f := pc.expect(t, mesh.KindNack, true)
		var n mesh.Nack
		if err := n.Decode(f.Payload); err != nil {
			t.Fatal(err)
		}
		if f.ID != tc.id || n.DelayMillis != tc.delay {
			t.Fatalf("%s: NACK id %d delay %d, want id %d delay %d", tc.body, f.ID, n.DelayMillis, tc.id, tc.delay)
		}
	}
	// The handler's second settle runs after its NACK is on the wire; the
	// test must not end (closing the connection) before it has run.
	select {
	case <-manualDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the manual handler did not finish")
	}
}

// The sidecar may push right behind its OK to DECLARE, before Subscribe
// has returned: those deliveries must reach the handler, not be nacked.
func TestDeliveryRightAfterDeclareOK(t *testing.T) {
	p := newPeer(t)
	p.afterDeclare = func(pc *peerConn, d mesh.Declare) {
		for _, s := range d.Subs {
			pc.send(mesh.KindDeliver, 0, 9, &mesh.Message{DeliveryID: 9, Group: s.Group, Topic: s.Topic})
		}
	}
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)
	got := make(chan uint64, 1)
	if _, err := c.Subscribe(testCtx(t), "g1", "t", func(_ context.Context, d *client.Delivery) error {
		got <- d.DeliveryID
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pc.expectDeclare(t)
	if f := pc.expect(t, mesh.KindAck, true); f.ID != 9 {
		t.Fatalf("ACK id %d, want 9", f.ID)
	}
	if id := <-got; id != 9 {
		t.Fatalf("handler got %d", id)
	}
}

func TestSubscribeRefused(t *testing.T) {
	p := newPeer(t)
	p.onDeclare = func(d mesh.Declare) *mesh.Error {
		for _, s := range d.Subs {
			if s.Group == "unknown" {
				return &mesh.Error{Code: mesh.CodeNotRegistered, Message: "group unknown does not consume t"}
			}
		}
		return nil
	}
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)
	nop := func(context.Context, *client.Delivery) error { return nil }

	_, err := c.Subscribe(testCtx(t), "unknown", "t", nop)
	if !errors.Is(err, &client.Error{Code: mesh.CodeNotRegistered}) {
		t.Fatalf("Subscribe = %v, want NOT_REGISTERED", err)
	}
	pc.expectDeclare(t)
	if _, err := c.Subscribe(testCtx(t), "g1", "t", nop); err != nil {
		t.Fatal(err)
	}
	// The refused pair is not part of the set any more.
	if subs := pc.expectDeclare(t); !slices.Equal(subs, []mesh.Subscription{{Group: "g1", Topic: "t", Mode: mesh.ModePush}}) {
		t.Fatalf("DECLARE = %+v", subs)
	}
	if _, err := c.Subscribe(testCtx(t), "g1", "t", nop); err == nil {
		t.Fatal("second Subscribe of the same pair succeeded")
	}
	if _, err := c.Pull(testCtx(t), "g1", "t", 1); err == nil {
		t.Fatal("Pull of a push-subscribed pair succeeded")
	}
}

func TestSubscribeContextCancelledDuringDeclare(t *testing.T) {
	p := newPeer(t)
	release := make(chan struct{})
	var calls atomic.Int32
	p.onDeclare = func(d mesh.Declare) *mesh.Error {
		if calls.Add(1) == 2 { // the first is the handshake
			<-release
		}
		return nil
	}
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Subscribe(ctx, "g1", "t", func(context.Context, *client.Delivery) error { return nil })
		errc <- err
	}()
	pc.expectDeclare(t)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe = %v, want context.Canceled", err)
	}
	close(release) // the peer now says OK to the abandoned set
	if subs := pc.expectDeclare(t); len(subs) != 0 {
		t.Fatalf("re-DECLARE = %+v, want the committed (empty) set", subs)
	}
}

func TestSubscriptionClose(t *testing.T) {
	p := newPeer(t)
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)

	entered := make(chan uint64, 4)
	release := make(chan struct{})
	s1, err := c.Subscribe(testCtx(t), "g1", "a", func(ctx context.Context, d *client.Delivery) error {
		entered <- d.DeliveryID
		<-release
		return nil
	}, client.WithConcurrency(2))
	if err != nil {
		t.Fatal(err)
	}
	pc.expectDeclare(t)
	if _, err := c.Subscribe(testCtx(t), "g2", "b", func(context.Context, *client.Delivery) error { return nil }); err != nil {
		t.Fatal(err)
	}
	pc.expectDeclare(t)

	pc.send(mesh.KindDeliver, 0, 7, &mesh.Message{DeliveryID: 7, Group: "g1", Topic: "a"})
	if id := <-entered; id != 7 {
		t.Fatalf("handler got %d", id)
	}
	closed := make(chan error, 1)
	go func() { closed <- s1.Close(testCtx(t)) }()
	if subs := pc.expectDeclare(t); !slices.Equal(subs, []mesh.Subscription{{Group: "g2", Topic: "b", Mode: mesh.ModePush}}) {
		t.Fatalf("DECLARE after Close = %+v", subs)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a handler runs", err)
	default:
	}
	// A delivery for the removed pair is refused at once.
	pc.send(mesh.KindDeliver, 0, 8, &mesh.Message{DeliveryID: 8, Group: "g1", Topic: "a"})
	if f := pc.expect(t, mesh.KindNack, true); f.ID != 8 {
		t.Fatalf("NACK id %d, want 8", f.ID)
	}
	close(release)
	if f := pc.expect(t, mesh.KindAck, true); f.ID != 7 {
		t.Fatalf("ACK id %d, want 7", f.ID)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(testCtx(t)); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestSubscriptionCloseTimeoutCancelsHandlers(t *testing.T) {
	p := newPeer(t)
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)
	entered := make(chan struct{})
	s, err := c.Subscribe(testCtx(t), "g1", "a", func(ctx context.Context, d *client.Delivery) error {
		close(entered)
		<-ctx.Done()
		return ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	pc.expectDeclare(t)
	pc.send(mesh.KindDeliver, 0, 3, &mesh.Message{DeliveryID: 3, Group: "g1", Topic: "a"})
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want DeadlineExceeded", err)
	}
	pc.expectDeclare(t)
	// The cancelled handler's error nacks its delivery.
	if f := pc.expect(t, mesh.KindNack, true); f.ID != 3 {
		t.Fatalf("NACK id %d, want 3", f.ID)
	}
	if err := s.Close(testCtx(t)); err != nil {
		t.Fatalf("Close after the handler returned = %v", err)
	}
}

func TestPublishContextCancelled(t *testing.T) {
	p := newPeer(t)
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Publish(ctx, &client.Message{Topic: "t"})
		errc <- err
	}()
	f := pc.expect(t, mesh.KindPublish, false)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish = %v, want context.Canceled", err)
	}
	// The late answer is dropped; the connection is still good.
	pc.send(mesh.KindPublishAck, mesh.FlagResponse, f.ID, &mesh.PublishAck{})
	go func() {
		_, err := c.Publish(testCtx(t), &client.Message{Topic: "t"})
		errc <- err
	}()
	f = pc.expect(t, mesh.KindPublish, false)
	pc.send(mesh.KindPublishAck, mesh.FlagResponse, f.ID, &mesh.PublishAck{})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestPull(t *testing.T) {
	p := newPeer(t)
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)

	type result struct {
		ds  []*client.Delivery
		err error
	}
	res := make(chan result, 1)
	pull := func(ctx context.Context) {
		ds, err := c.Pull(ctx, "g1", "jobs", 10)
		res <- result{ds, err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	go pull(ctx)
	if subs := pc.expectDeclare(t); !slices.Equal(subs, []mesh.Subscription{{Group: "g1", Topic: "jobs", Mode: mesh.ModePull}}) {
		t.Fatalf("DECLARE = %+v", subs)
	}
	f := pc.expect(t, mesh.KindPull, false)
	var req mesh.Pull
	if err := req.Decode(f.Payload); err != nil {
		t.Fatal(err)
	}
	if req.Group != "g1" || req.Topic != "jobs" || req.Max != 10 || req.WaitMillis < 1000 || req.WaitMillis >= 3000 {
		t.Fatalf("PULL = %+v", req)
	}
	pc.send(mesh.KindPullResult, mesh.FlagResponse, f.ID, &mesh.PullResult{Messages: []mesh.Message{
		{DeliveryID: 11, Group: "g1", Topic: "jobs", Body: []byte("one")},
		{DeliveryID: 12, Group: "g1", Topic: "jobs", Body: []byte("two")},
	}})
	r := <-res
	if r.err != nil || len(r.ds) != 2 || string(r.ds[1].Body) != "two" || r.ds[0].DeliveryID != 11 {
		t.Fatalf("Pull = %+v, %v", r.ds, r.err)
	}
	if err := r.ds[0].Ack(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if f := pc.expect(t, mesh.KindAck, true); f.ID != 11 {
		t.Fatalf("ACK id %d", f.ID)
	}
	if err := r.ds[1].Nack(testCtx(t), 250*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	f = pc.expect(t, mesh.KindNack, true)
	var n mesh.Nack
	if err := n.Decode(f.Payload); err != nil || f.ID != 12 || n.DelayMillis != 250 {
		t.Fatalf("NACK id %d delay %d (%v)", f.ID, n.DelayMillis, err)
	}
	if err := r.ds[1].Ack(testCtx(t)); !errors.Is(err, client.ErrAlreadySettled) {
		t.Fatalf("second settle = %v", err)
	}

	// Declared already: no DECLARE; no deadline: a 5s wait; empty answer.
	go pull(context.Background())
	f = pc.expect(t, mesh.KindPull, false)
	if err := req.Decode(f.Payload); err != nil || req.WaitMillis != 5000 {
		t.Fatalf("PULL = %+v (%v), want a 5000ms wait", req, err)
	}
	pc.send(mesh.KindPullResult, mesh.FlagResponse, f.ID, &mesh.PullResult{})
	if r := <-res; r.err != nil || len(r.ds) != 0 {
		t.Fatalf("Pull = %+v, %v", r.ds, r.err)
	}
}

func TestPullAbandonedResultIsNacked(t *testing.T) {
	p := newPeer(t)
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Pull(ctx, "g1", "jobs", 1)
		errc <- err
	}()
	pc.expectDeclare(t)
	f := pc.expect(t, mesh.KindPull, false)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Pull = %v", err)
	}
	pc.send(mesh.KindPullResult, mesh.FlagResponse, f.ID, &mesh.PullResult{Messages: []mesh.Message{{DeliveryID: 5, Group: "g1", Topic: "jobs"}}})
	if f := pc.expect(t, mesh.KindNack, true); f.ID != 5 {
		t.Fatalf("NACK id %d, want 5", f.ID)
	}
}

func TestHeartbeat(t *testing.T) {
	p := newPeer(t)
	dial(t, p, client.WithHeartbeat(20*time.Millisecond))
	pc := p.accept(t)
	pc.handshake(t)

	// The client sends heartbeats of its own.
	for {
		f := pc.next(t)
		if f.Kind == mesh.KindHeartbeat && !f.IsResponse() && f.ID != 0 {
			break
		}
	}
	// And answers the sidecar's.
	pc.send(mesh.KindHeartbeat, 0, 77, nil)
	for {
		f := pc.next(t)
		if f.Kind == mesh.KindHeartbeat && f.IsResponse() {
			if f.ID != 77 {
				t.Fatalf("HEARTBEAT answer id %d, want 77", f.ID)
			}
			break
		}
	}
}

func TestBadRequestsFromTheSidecar(t *testing.T) {
	p := newPeer(t)
	dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)
	for _, tc := range []struct {
		kind    mesh.Kind
		payload mesh.Encoder
		code    mesh.Code
	}{
		{mesh.KindPublishAck, &mesh.PublishAck{}, mesh.CodeUnsupported}, // an answer kind sent as a request
		{mesh.KindHello, &mesh.Hello{}, mesh.CodeUnsupported},
		{mesh.KindDeliver, &mesh.Nack{DelayMillis: 1}, mesh.CodeBadFrame}, // undecodable message
	} {
		pc.send(tc.kind, 0, 55, tc.payload)
		f := pc.expect(t, mesh.KindError, true)
		var e mesh.Error
		if err := e.Decode(f.Payload); err != nil || f.ID != 55 || e.Code != tc.code {
			t.Fatalf("%s: ERROR id %d code %s (%v), want id 55 code %s", tc.kind, f.ID, e.Code, err, tc.code)
		}
	}
}

func TestHeartbeatTimeoutRedials(t *testing.T) {
	p := newPeer(t)
	dial(t, p, client.WithHeartbeat(20*time.Millisecond))
	pc := p.accept(t)
	pc.handshake(t)
	pc.mute.Store(true) // the sidecar hangs: nothing comes back
	pc2 := p.accept(t)
	pc2.handshake(t)
	select {
	case <-pc.done: // the client closed the silent connection
	case <-time.After(wait):
		t.Fatal("the silent connection was not closed")
	}
}

func TestReconnect(t *testing.T) {
	p := newPeer(t)
	p.helloGate = make(chan struct{})
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)

	entered := make(chan *client.Delivery, 1)
	release := make(chan struct{})
	if _, err := c.Subscribe(testCtx(t), "g1", "a", func(ctx context.Context, d *client.Delivery) error {
		entered <- d
		<-release
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pc.expectDeclare(t)

	// A pulled delivery and a pushed one in progress.
	pulled := make(chan []*client.Delivery, 1)
	go func() {
		ds, err := c.Pull(testCtx(t), "g2", "b", 1)
		if err != nil {
			t.Error(err)
		}
		pulled <- ds
	}()
	set := pc.expectDeclare(t)
	f := pc.expect(t, mesh.KindPull, false)
	pc.send(mesh.KindPullResult, mesh.FlagResponse, f.ID, &mesh.PullResult{Messages: []mesh.Message{{DeliveryID: 3, Group: "g2", Topic: "b"}}})
	old := (<-pulled)[0]
	pc.send(mesh.KindDeliver, 0, 4, &mesh.Message{DeliveryID: 4, Group: "g1", Topic: "a"})
	pushed := <-entered

	// A publish outstanding when the connection drops.
	pubErr := make(chan error, 1)
	go func() {
		_, err := c.Publish(testCtx(t), &client.Message{Topic: "t"})
		pubErr <- err
	}()
	pc.expect(t, mesh.KindPublish, false)
	pc.drop()
	if err := <-pubErr; !errors.Is(err, client.ErrConnectionLost) {
		t.Fatalf("outstanding Publish = %v, want ErrConnectionLost", err)
	}

	// The client redials; its HELLO is held until the gate opens, so a
	// publish now has to wait for the new connection.
	pc2 := p.accept(t)
	pc2.expect(t, mesh.KindHello, false)
	go func() {
		_, err := c.Publish(testCtx(t), &client.Message{Topic: "t"})
		pubErr <- err
	}()
	p.helloGate <- struct{}{}
	if subs := pc2.expectDeclare(t); !slices.Equal(subs, set) {
		t.Fatalf("re-DECLARE = %+v, want %+v", subs, set)
	}

	// Settling deliveries of the old connection fails and sends nothing.
	if err := old.Ack(testCtx(t)); !errors.Is(err, client.ErrConnectionLost) {
		t.Fatalf("Ack of an old delivery = %v, want ErrConnectionLost", err)
	}
	close(release) // the pushed delivery's handler returns nil; its ACK must not go out
	f = pc2.expect(t, mesh.KindPublish, false)
	pc2.send(mesh.KindPublishAck, mesh.FlagResponse, f.ID, &mesh.PublishAck{Partition: -1})
	if err := <-pubErr; err != nil {
		t.Fatalf("Publish after reconnect = %v", err)
	}
	// Deliveries work on the new connection, and the worker handles them
	// after the old one, so an ACK for id 4 would come first.
	pc2.send(mesh.KindDeliver, 0, 9, &mesh.Message{DeliveryID: 9, Group: "g1", Topic: "a"})
	if d := <-entered; d.DeliveryID != 9 {
		t.Fatalf("handler got delivery %d, want 9", d.DeliveryID)
	}
	if f := pc2.expect(t, mesh.KindAck, true); f.ID != 9 {
		t.Fatalf("ACK id %d, want 9", f.ID)
	}
	if err := pushed.Ack(testCtx(t)); !errors.Is(err, client.ErrAlreadySettled) {
		t.Fatalf("Ack of the handled old delivery = %v, want ErrAlreadySettled", err)
	}
}

func TestCloseFailsOutstanding(t *testing.T) {
	p := newPeer(t)
	c := dial(t, p)
	pc := p.accept(t)
	pc.handshake(t)

	pubErr := make(chan error, 1)
	go func() {
		_, err := c.Publish(testCtx(t), &client.Message{Topic: "t"})
		pubErr <- err
	}()
	asyncErr := make(chan error, 1)
	c.PublishAsync(testCtx(t), &client.Message{Topic: "t"}, func(_ client.PublishAck, err error) { asyncErr <- err })
	pc.expect(t, mesh.KindPublish, false)
	pc.expect(t, mesh.KindPublish, false)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-pubErr; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Publish = %v, want ErrClosed", err)
	}
	if err := <-asyncErr; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("PublishAsync = %v, want ErrClosed", err)
	}
}

func TestCloseIdempotentNoGoroutinesLeft(t *testing.T) {
	p := newPeer(t)
	p.autoPublish = true
	baseline := runtime.NumGoroutine()

	c := dial(t, p, client.WithHeartbeat(50*time.Millisecond))
	pc := p.accept(t)
	pc.handshake(t)
	handled := make(chan struct{}, 1)
	s, err := c.Subscribe(testCtx(t), "g1", "a", func(ctx context.Context, d *client.Delivery) error {
		handled <- struct{}{}
		return nil
	}, client.WithConcurrency(4))
	if err != nil {
		t.Fatal(err)
	}
	pc.send(mesh.KindDeliver, 0, 1, &mesh.Message{DeliveryID: 1, Group: "g1", Topic: "a"})
	<-handled
	done := make(chan error, 1)
	c.PublishAsync(testCtx(t), &client.Message{Topic: "t"}, func(_ client.PublishAck, err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Publish(testCtx(t), &client.Message{Topic: "t"}); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Publish after Close = %v", err)
	}
	c.PublishAsync(testCtx(t), &client.Message{Topic: "t"}, func(_ client.PublishAck, err error) { done <- err })
	if err := <-done; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("PublishAsync after Close = %v", err)
	}
	if _, err := c.Subscribe(testCtx(t), "g2", "b", func(context.Context, *client.Delivery) error { return nil }); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Subscribe after Close = %v", err)
	}
	if err := s.Close(testCtx(t)); err != nil {
		t.Fatalf("Subscription.Close after Client.Close = %v", err)
	}
	<-pc.done // the peer's reader for the closed connection
	noGoroutinesAbove(t, baseline)
}

func TestRetryAfter(t *testing.T) {
	cause := errors.New("db busy")
	var err error = &client.RetryAfter{Delay: time.Second, Err: cause}
	if !errors.Is(err, cause) || err.Error() != "retry after 1s: db busy" {
		t.Fatalf("RetryAfter = %q", err)
	}
}

// TestDialOldSidecar: a sidecar that predates message flags refuses a
// HELLO with features as malformed; the client says HELLO again without
// them on the same connection, and works.
func TestDialOldSidecar(t *testing.T) {
	p := newPeer(t)
	p.oldSidecar = true
	p.autoPublish = true
	c := dial(t, p, client.WithApp("orders"))
	pc := p.accept(t)
	first := pc.expect(t, mesh.KindHello, false)
	var h1 mesh.Hello
	if err := h1.Decode(first.Payload); err != nil || h1.Features != mesh.FeatureMessageFlags {
		t.Fatalf("first HELLO %+v, %v", h1, err)
	}
	h2, _ := pc.handshake(t)
	if h2.Features != 0 || h2.App != "orders" {
		t.Fatalf("second HELLO %+v, want one without features", h2)
	}
	if _, err := c.Publish(testCtx(t), &client.Message{Topic: "t", Body: []byte("x")}); err != nil {
		t.Fatalf("publish after the fallback: %v", err)
	}
}
