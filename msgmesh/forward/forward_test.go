package forward

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/netfault"
)

// Forward 1,000 deliveries: the sibling's app gets every one, intact, and
// each original delivery is settled exactly once with the app's answer.
func TestForwardAckAndNack(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")
	f := newForwarder(t, p)

	const n = 1000
	ds := make([]*testDelivery, n)
	byID := make(map[string]int, n)
	for i := range ds {
		ds[i] = newDelivery(i, bytes.Repeat([]byte{byte(i)}, i%2048))
		byID[ds[i].id] = i
	}
	// The app: acks even messages, nacks odd ones with a delay of i ms.
	appDone := make(chan error, 1)
	go func() {
		for range n {
			tk := recvWithin(t, app.got, 10*time.Second, "a delivery at the sibling's app")
			i, ok := byID[tk.d.MessageID()]
			if !ok {
				appDone <- fmt.Errorf("unknown message id %q", tk.d.MessageID())
				return
			}
			if err := sameMessage(tk, ds[i]); err != nil {
				appDone <- err
				return
			}
			var err error
			if i%2 == 0 {
				err = tk.d.Ack(context.Background())
			} else {
				err = tk.d.Nack(context.Background(), time.Duration(i)*time.Millisecond)
			}
			if err != nil {
				appDone <- fmt.Errorf("answering %d: %w", i, err)
				return
			}
			if err := tk.d.Ack(context.Background()); !errors.Is(err, ErrSettled) {
				appDone <- fmt.Errorf("second answer for %d = %v, want ErrSettled", i, err)
				return
			}
		}
		appDone <- nil
	}()
	ctx := ctxTimeout(t, 10*time.Second)
	for i, d := range ds {
		if err := f.Forward(ctx, sib.addr, "billing", "orders.created", d); err != nil {
			t.Fatalf("Forward %d: %v", i, err)
		}
	}
	if err := recvWithin(t, appDone, 20*time.Second, "the app to answer everything"); err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		recvWithin(t, d.settled, 10*time.Second, "delivery "+d.id+" settled")
		_ = i
	}
	if err := f.Drain(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	for i, d := range ds {
		acks, nacks, delay := d.counts()
		if i%2 == 0 && (acks != 1 || nacks != 0) {
			t.Errorf("delivery %d: %d acks, %d nacks; want 1 ack", i, acks, nacks)
		}
		if i%2 == 1 && (acks != 0 || nacks != 1 || delay != time.Duration(i)*time.Millisecond) {
			t.Errorf("delivery %d: %d acks, %d nacks (delay %v); want 1 nack with delay %v", i, acks, nacks, delay, time.Duration(i)*time.Millisecond)
		}
	}
	if got := app.calls.Load(); got != n {
		t.Errorf("the sibling's Deliverer was called %d times, want %d", got, n)
	}
	if o := f.Outstanding(); o != 0 {
		t.Errorf("Outstanding = %d after everything was answered", o)
	}
}

// sameMessage checks that what the sibling's app got is what was forwarded.
func sameMessage(tk taken, d *testDelivery) error {
	got := tk.d.Message()
	switch {
	case tk.app != "orders" || tk.group != "billing" || tk.topic != "orders.created":
		return fmt.Errorf("app/group/topic %q/%q/%q, want the certificate's app orders", tk.app, tk.group, tk.topic)
	case got.Topic != d.msg.Topic || got.Key != d.msg.Key || !bytes.Equal(got.Body, d.msg.Body):
		return fmt.Errorf("message %+v, want %+v", got, d.msg)
	case fmt.Sprint(got.Headers) != fmt.Sprint(d.msg.Headers):
		return fmt.Errorf("headers %v, want %v", got.Headers, d.msg.Headers)
	case tk.d.MessageID() != d.id || tk.d.Redelivered() != d.redelivered || !tk.d.Timestamp().Equal(d.ts):
		return fmt.Errorf("id/redelivered/timestamp %q/%d/%v, want %q/%d/%v",
			tk.d.MessageID(), tk.d.Redelivered(), tk.d.Timestamp(), d.id, d.redelivered, d.ts)
	}
	return nil
}

// An app that answers before DeliverFromSibling has returned (so before OK
// went out): the answer follows OK and is not lost.
func TestAnswerBeforeTaken(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	app.during = func(ctx context.Context, tk taken) {
		if err := tk.d.Ack(ctx); err != nil {
			t.Errorf("Ack inside DeliverFromSibling: %v", err)
		}
	}
	sib := startSibling(t, p, app, "")
	f := newForwarder(t, p)
	d := newDelivery(1, []byte("x"))
	if err := f.Forward(ctxTimeout(t, 5*time.Second), sib.addr, "g", "t", d); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, d.settled, 5*time.Second, "the ack")
	if a, n, _ := d.counts(); a != 1 || n != 0 {
		t.Errorf("%d acks, %d nacks; want 1 ack", a, n)
	}
}

// The sibling's Deliverer refuses: Forward returns the typed refusal and
// the delivery is untouched, for the caller to deliver locally.
func TestRefused(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	app.refuse = func(group, topic string) error {
		switch group {
		case "unregistered":
			return fmt.Errorf("wrapped: %w", &mesh.Error{Code: mesh.CodeNotRegistered, Message: "group unregistered does not consume t here"})
		case "busy":
			return errors.New("no room")
		}
		return nil
	}
	sib := startSibling(t, p, app, "")
	f := newForwarder(t, p)
	for _, tt := range []struct {
		group string
		code  mesh.Code
	}{{"unregistered", mesh.CodeNotRegistered}, {"busy", mesh.CodeUnavailable}} {
		d := newDelivery(1, []byte("x"))
		err := f.Forward(ctxTimeout(t, 5*time.Second), sib.addr, tt.group, "t", d)
		var re *RefusedError
		if !errors.As(err, &re) || !errors.Is(err, ErrRefused) || re.Code != tt.code {
			t.Fatalf("Forward(%s) = %v, want a RefusedError with code %s", tt.group, err, tt.code)
		}
		d.untouched(t)
	}
	// The connection is still good.
	d := newDelivery(2, []byte("y"))
	if err := f.Forward(ctxTimeout(t, 5*time.Second), sib.addr, "ok", "t", d); err != nil {
		t.Fatal(err)
	}
	tk := recvWithin(t, app.got, 5*time.Second, "the delivery")
	_ = tk.d.Ack(context.Background())
	recvWithin(t, d.settled, 5*time.Second, "the ack")
	if err := f.Drain(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Errorf("Drain: %v (outstanding %d)", err, f.Outstanding())
	}
}

// Over the sibling's in-flight limit a DELIVER is refused UNAVAILABLE.
func TestInflightLimit(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "", func(c *ServerConfig) { c.MaxInflight = 2 })
	f := newForwarder(t, p)
	ctx := ctxTimeout(t, 5*time.Second)
	held := make([]*testDelivery, 2)
	for i := range held {
		held[i] = newDelivery(i, nil)
		if err := f.Forward(ctx, sib.addr, "g", "t", held[i]); err != nil {
			t.Fatal(err)
		}
	}
	d := newDelivery(3, nil)
	var re *RefusedError
	if err := f.Forward(ctx, sib.addr, "g", "t", d); !errors.As(err, &re) || re.Code != mesh.CodeUnavailable || !re.Retryable() {
		t.Fatalf("third Forward = %v, want a retryable UNAVAILABLE refusal", err)
	}
	d.untouched(t)
	// Answering one frees a slot.
	tk := recvWithin(t, app.got, 5*time.Second, "a held delivery")
	_ = tk.d.Ack(ctx)
	waitFor(t, 5*time.Second, "a slot to free up", func() bool {
		d := newDelivery(4, nil)
		err := f.Forward(ctx, sib.addr, "g", "t", d)
		return err == nil
	})
}

// Nobody without a certificate for this app from this CA gets a single
// delivery in, whatever it sends.
func TestUnauthenticatedPeersCannotInject(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")

	// rogue presents cert (nil: none) and trusts any server.
	rogue := func(cfg *tls.Config) *tls.Config {
		return &tls.Config{
			MinVersion:           tls.VersionTLS13,
			InsecureSkipVerify:   true, // an attacker does not check the server
			GetClientCertificate: cfg.GetClientCertificate,
		}
	}
	noCert := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	tests := []struct {
		name  string
		tls   *tls.Config // nil: plain TCP
		hello string      // app named in HELLO; "" sends DELIVER first
		// refusedByHello: the TLS peer is a genuine sibling, and only the
		// protocol checks refuse it.
		refusedByHello bool
	}{
		{name: "plain TCP", tls: nil, hello: "orders"},
		{name: "TLS without a client certificate", tls: noCert, hello: "orders"},
		{name: "certificate from another CA", tls: rogue(other.clientTLS(t, "orders")), hello: "orders"},
		{name: "certificate for another app", tls: rogue(p.clientTLS(t, "billing")), hello: "orders"},
		{name: "certificate for another app claiming it in HELLO", tls: rogue(p.clientTLS(t, "billing")), hello: "billing"},
		{name: "right certificate, HELLO for another app", tls: p.clientTLS(t, "orders"), hello: "billing", refusedByHello: true},
		{name: "right certificate, DELIVER before HELLO", tls: p.clientTLS(t, "orders"), hello: "", refusedByHello: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := net.Dial("tcp", sib.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = raw.Close() })
			_ = raw.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
			var conn net.Conn = raw
			if tt.tls != nil {
				tc := tls.Client(raw, tt.tls)
				if err := tc.Handshake(); err != nil {
					t.Logf("handshake refused: %v", err)
					return // refused before anything could be sent
				}
				conn = tc
			}
			// Blast a HELLO and ten DELIVERs without waiting for answers.
			var buf []byte
			if tt.hello != "" {
				buf, _ = mesh.AppendFrame(buf, 0, mesh.KindHello, 0, 1, &mesh.Hello{App: tt.hello})
			}
			for i := uint64(2); i < 12; i++ {
				m := mesh.Message{DeliveryID: i, Group: "g", Topic: "t", Body: []byte("injected")}
				buf, _ = mesh.AppendFrame(buf, 0, mesh.KindDeliver, 0, i, &m)
			}
			_, werr := conn.Write(buf)
			// Read until the server closes the connection; collect frames.
			rd := mesh.NewReader(conn, 0)
			var answers []mesh.Frame
			for {
				fr, err := rd.ReadFrame()
				if err != nil {
					t.Logf("write: %v; connection ended: %v; answers: %d", werr, err, len(answers))
					break
				}
				answers = append(answers, fr)
			}
			if tt.refusedByHello {
				if len(answers) != 1 || answers[0].Kind != mesh.KindError {
					t.Fatalf("answers %v, want exactly one ERROR", kinds(answers))
				}
				var e mesh.Error
				_ = e.Decode(answers[0].Payload)
				if e.Code != mesh.CodeInvalid {
					t.Errorf("ERROR %v, want INVALID", e)
				}
			} else if len(answers) != 0 {
				t.Errorf("an unauthenticated peer got answers: %v", kinds(answers))
			}
		})
	}
	// The Forwarder itself, with the wrong credentials, cannot either.
	for name, cfg := range map[string]*tls.Config{
		"forwarder of another app":       p.clientTLS(t, "billing"),
		"forwarder trusting another CA":  other.clientTLS(t, "orders"),
		"forwarder with another CA cert": mixed(t, other, p),
	} {
		t.Run(name, func(t *testing.T) {
			app := "orders"
			if name == "forwarder of another app" {
				app = "billing"
			}
			f := newForwarder(t, p, func(c *ClientConfig) { c.TLS = cfg; c.App = app })
			d := newDelivery(1, []byte("x"))
			err := f.Forward(ctxTimeout(t, 5*time.Second), sib.addr, "g", "t", d)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Forward = %v, want ErrUnavailable", err)
			}
			t.Logf("refused: %v", err)
			d.untouched(t)
		})
	}
	if n := app.calls.Load(); n != 0 {
		t.Fatalf("the Deliverer was called %d times by unauthenticated peers", n)
	}
}

// mixed is a client config with a certificate from certCA that trusts
// trustCA: it accepts the server, the server refuses it.
func mixed(t *testing.T, certCA, trustCA *testPKI) *tls.Config {
	c := trustCA.clientTLS(t, "orders")
	bad := certCA.clientTLS(t, "orders")
	c.GetClientCertificate = bad.GetClientCertificate
	return c
}

func kinds(fs []mesh.Frame) []string {
	var s []string
	for _, f := range fs {
		s = append(s, f.Kind.String())
	}
	return s
}

// The Forwarder refuses a sibling whose certificate is not for its app,
// before sending it anything.
func TestForwarderChecksTheSibling(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	// A listener holding a valid certificate of another app, which
	// accepts any client of this CA.
	sib := startSibling(t, p, app, "", func(c *ServerConfig) {
		c.TLS = p.serverTLS(t, "billing")
		c.App = "billing"
	})
	f := newForwarder(t, p)
	d := newDelivery(1, []byte("secret"))
	err := f.Forward(ctxTimeout(t, 5*time.Second), sib.addr, "g", "t", d)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Forward = %v, want ErrUnavailable", err)
	}
	d.untouched(t)
	if n := app.calls.Load(); n != 0 {
		t.Fatalf("a listener of another app received %d deliveries", n)
	}
}

// A sibling that is down fails Forward promptly, and the delivery is
// untouched; within the backoff Forward fails at once.
func TestSiblingDown(t *testing.T) {
	p := newPKI(t)
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		f := newForwarder(t, p)
		d := newDelivery(1, nil)
		start := time.Now()
		if err := f.Forward(ctxTimeout(t, 5*time.Second), addr, "g", "t", d); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Forward = %v, want ErrUnavailable", err)
		}
		if el := time.Since(start); el > scaled(2*time.Second) {
			t.Errorf("Forward took %v to fail", el)
		}
		err = f.Forward(ctxTimeout(t, 5*time.Second), addr, "g", "t", d)
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrSiblingDown) {
			t.Fatalf("second Forward = %v, want ErrUnavailable and ErrSiblingDown (breaker open)", err)
		}
		d.untouched(t)
	})
	t.Run("silent peer: dial timeout", func(t *testing.T) {
		// Accepts TCP connections and never says a word.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var held sync.WaitGroup
		t.Cleanup(func() { _ = ln.Close(); held.Wait() })
		held.Go(func() {
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					_ = c.Close()
				}
			}()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns = append(conns, c)
			}
		})
		f := newForwarder(t, p, func(c *ClientConfig) { c.DialTimeout = 200 * time.Millisecond })
		d := newDelivery(1, nil)
		start := time.Now()
		err = f.Forward(context.Background(), ln.Addr().String(), "g", "t", d)
		el := time.Since(start)
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Forward = %v, want ErrUnavailable from the dial timeout", err)
		}
		if el < 200*time.Millisecond || el > scaled(3*time.Second) {
			t.Errorf("Forward failed after %v, want about the 200ms dial timeout", el)
		}
		d.untouched(t)
	})
}

// A sibling that dies holding taken deliveries: each goes back to the
// broker exactly once (Nack 0), and OnLost hears of each.
func TestSiblingDiesWithOutstanding(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")
	var lost atomic.Int64
	lostErr := make(chan error, 100)
	f := newForwarder(t, p, func(c *ClientConfig) {
		c.OnLost = func(sibling, group, topic string, err error) {
			lost.Add(1)
			lostErr <- err
		}
	})
	const n = 50
	ds := make([]*testDelivery, n)
	ctx := ctxTimeout(t, 10*time.Second)
	for i := range ds {
		ds[i] = newDelivery(i, []byte("held"))
		if err := f.Forward(ctx, sib.addr, "g", "t", ds[i]); err != nil {
			t.Fatalf("Forward %d: %v", i, err)
		}
	}
	var held []taken
	for range n {
		held = append(held, recvWithin(t, app.got, 5*time.Second, "a held delivery"))
	}
	sib.kill(t)
	for _, d := range ds {
		recvWithin(t, d.settled, 10*time.Second, "hand-back of "+d.id)
	}
	if err := f.Drain(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if a, nk, delay := d.counts(); a != 0 || nk != 1 || delay != 0 {
			t.Errorf("%s: %d acks, %d nacks (delay %v); want exactly one Nack(0)", d.id, a, nk, delay)
		}
	}
	if got := lost.Load(); got != n {
		t.Errorf("OnLost called %d times, want %d", got, n)
	}
	if err := <-lostErr; !errors.Is(err, ErrConnLost) {
		t.Errorf("OnLost err = %v, want ErrConnLost", err)
	}
	// The sibling's app answers late: its answer cannot be sent, and
	// nothing changes upstream.
	for _, tk := range held {
		if err := tk.d.Ack(context.Background()); !errors.Is(err, ErrConnLost) {
			t.Errorf("late Ack at the dead sibling = %v, want ErrConnLost", err)
		}
	}
	for _, d := range ds {
		if a, nk, _ := d.counts(); a != 0 || nk != 1 {
			t.Errorf("%s settled again after the hand-back", d.id)
		}
	}
}

// A sibling whose app never answers: after Timeout the delivery goes back
// to the broker; a later answer is ignored.
func TestTimeout(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")
	lostErr := make(chan error, 1)
	f := newForwarder(t, p, func(c *ClientConfig) {
		c.Timeout = 200 * time.Millisecond
		c.OnLost = func(_, _, _ string, err error) { lostErr <- err }
	})
	d := newDelivery(1, nil)
	start := time.Now()
	if err := f.Forward(ctxTimeout(t, 5*time.Second), sib.addr, "g", "t", d); err != nil {
		t.Fatal(err)
	}
	tk := recvWithin(t, app.got, 5*time.Second, "the delivery")
	recvWithin(t, d.settled, 5*time.Second, "the timeout hand-back")
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("handed back after %v, before the 200ms timeout", el)
	}
	if a, n, delay := d.counts(); a != 0 || n != 1 || delay != 0 {
		t.Errorf("%d acks, %d nacks (delay %v); want one Nack(0)", a, n, delay)
	}
	if err := recvWithin(t, lostErr, 5*time.Second, "OnLost"); !errors.Is(err, ErrTimeout) {
		t.Errorf("OnLost err = %v, want ErrTimeout", err)
	}
	// The app answers late; the ACK reaches the forwarder and is dropped.
	if err := tk.d.Ack(context.Background()); err != nil {
		t.Fatalf("late Ack: %v", err)
	}
	// Frames on one connection are read in order: once a later delivery's
	// answer has come back, the late ACK has been handled.
	d2 := newDelivery(2, nil)
	if err := f.Forward(ctxTimeout(t, 5*time.Second), sib.addr, "g", "t", d2); err != nil {
		t.Fatal(err)
	}
	tk2 := recvWithin(t, app.got, 5*time.Second, "the second delivery")
	_ = tk2.d.Ack(context.Background())
	recvWithin(t, d2.settled, 5*time.Second, "the second ack")
	if a, n, _ := d.counts(); a != 0 || n != 1 {
		t.Errorf("after the late answer: %d acks, %d nacks; want the single Nack only", a, n)
	}
}

// A connection that goes silent (no FIN, no RST: a partition) is found
// dead by heartbeats, and what it held goes back to the broker.
func TestSilentSiblingFoundByHeartbeat(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")
	r := startRelay(t, sib.addr)
	f := newForwarder(t, p)
	f.hbEvery, f.dead = 20*time.Millisecond, 300*time.Millisecond
	d := newDelivery(1, nil)
	if err := f.Forward(ctxTimeout(t, 5*time.Second), r.Addr(), "g", "t", d); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, app.got, 5*time.Second, "the delivery")
	r.Cut()
	recvWithin(t, d.settled, 5*time.Second, "the hand-back after the partition")
	if a, n, _ := d.counts(); a != 0 || n != 1 {
		t.Errorf("%d acks, %d nacks; want one Nack(0)", a, n)
	}
}

// startRelay runs a netfault.Relay to target for the test.
func startRelay(t testing.TB, target string) *netfault.Relay {
	t.Helper()
	r, err := netfault.NewRelay(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// Forward's ctx ending while the sibling is still taking the delivery hands
// it off: Forward returns nil and the Forwarder settles it.
func TestForwardCtxEndsWhileTaking(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	release := make(chan struct{})
	app.during = func(ctx context.Context, tk taken) {
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	sib := startSibling(t, p, app, "")
	f := newForwarder(t, p)
	// Dial first, so that the short ctx below only bounds the wait.
	warm := newDelivery(0, nil)
	go func() { tk := <-app.got; _ = tk.d.Ack(context.Background()) }()
	close(release)
	if err := f.Forward(ctxTimeout(t, 5*time.Second), sib.addr, "g", "t", warm); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, warm.settled, 5*time.Second, "the warm-up ack")

	release = make(chan struct{})
	d := newDelivery(1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Forward(ctx, sib.addr, "g", "t", d) }()
	waitFor(t, 5*time.Second, "the sibling to start taking it", func() bool { return app.calls.Load() == 2 })
	cancel()
	if err := recvWithin(t, done, 5*time.Second, "Forward to return"); err != nil {
		t.Fatalf("Forward = %v, want nil (handed off)", err)
	}
	if o := f.Outstanding(); o != 1 {
		t.Errorf("Outstanding = %d, want 1", o)
	}
	close(release)
	tk := recvWithin(t, app.got, 5*time.Second, "the delivery")
	_ = tk.d.Nack(context.Background(), 3*time.Second)
	recvWithin(t, d.settled, 5*time.Second, "the nack")
	if a, n, delay := d.counts(); a != 0 || n != 1 || delay != 3*time.Second {
		t.Errorf("%d acks, %d nacks (delay %v); want one Nack(3s)", a, n, delay)
	}
}

// Shutdown lets the app answer what it holds, refuses new deliveries
// meanwhile, then closes.
func TestServerShutdownDrains(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")
	f := newForwarder(t, p)
	d := newDelivery(1, nil)
	if err := f.Forward(ctxTimeout(t, 5*time.Second), sib.addr, "g", "t", d); err != nil {
		t.Fatal(err)
	}
	tk := recvWithin(t, app.got, 5*time.Second, "the delivery")
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), scaled(10*time.Second))
		defer cancel()
		shut <- sib.Shutdown(ctx)
	}()
	waitFor(t, 5*time.Second, "the sibling to drain", func() bool { return sib.draining.Load() })
	d2 := newDelivery(2, nil)
	var re *RefusedError
	if err := f.Forward(ctxTimeout(t, 5*time.Second), sib.addr, "g", "t", d2); !errors.As(err, &re) || re.Code != mesh.CodeShuttingDown {
		t.Fatalf("Forward during shutdown = %v, want SHUTTING_DOWN", err)
	}
	d2.untouched(t)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a delivery unanswered", err)
	default:
	}
	if err := tk.d.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, d.settled, 5*time.Second, "the ack")
	if err := recvWithin(t, shut, 10*time.Second, "Shutdown"); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if a, n, _ := d.counts(); a != 1 || n != 0 {
		t.Errorf("%d acks, %d nacks; want the app's ack", a, n)
	}
}

// A DeliverFromSibling still waiting for room when Shutdown begins is
// cancelled: the forwarder gets SHUTTING_DOWN (and delivers locally), and
// Shutdown does not wait for it.
func TestShutdownCancelsBlockedTakes(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	app.during = func(ctx context.Context, tk taken) { <-ctx.Done() } // never any room
	sib := startSibling(t, p, app, "")
	f := newForwarder(t, p)
	d := newDelivery(1, nil)
	done := make(chan error, 1)
	go func() { done <- f.Forward(ctxTimeout(t, 10*time.Second), sib.addr, "g", "t", d) }()
	waitFor(t, 5*time.Second, "the take to start", func() bool { return app.calls.Load() == 1 })
	if err := sib.Shutdown(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	var re *RefusedError
	if err := recvWithin(t, done, 5*time.Second, "Forward"); !errors.As(err, &re) || re.Code != mesh.CodeShuttingDown {
		t.Fatalf("Forward = %v, want SHUTTING_DOWN", err)
	}
	d.untouched(t)
}

// After a sibling restarts at the same address, Forward reaches it again
// (once the redial backoff has passed).
func TestRedial(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")
	addr := sib.addr
	f := newForwarder(t, p)
	answer := func() {
		tk := recvWithin(t, app.got, 5*time.Second, "a delivery")
		_ = tk.d.Ack(context.Background())
	}
	d := newDelivery(1, nil)
	if err := f.Forward(ctxTimeout(t, 5*time.Second), addr, "g", "t", d); err != nil {
		t.Fatal(err)
	}
	answer()
	recvWithin(t, d.settled, 5*time.Second, "the ack")
	sib.stop(t, time.Second)
	d = newDelivery(2, nil)
	if err := f.Forward(ctxTimeout(t, 5*time.Second), addr, "g", "t", d); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Forward to a stopped sibling = %v, want ErrUnavailable", err)
	}
	d.untouched(t)
	startSibling(t, p, app, addr)
	waitFor(t, 10*time.Second, "Forward to reach the restarted sibling", func() bool {
		return f.Forward(ctxTimeout(t, 5*time.Second), addr, "g", "t", d) == nil
	})
	answer()
	recvWithin(t, d.settled, 5*time.Second, "the ack after the restart")
}

// Eight goroutines forwarding to two siblings at once.
func TestConcurrentForwarding(t *testing.T) {
	p := newPKI(t)
	apps := []*testApp{newApp(), newApp()}
	sibs := []*sibling{startSibling(t, p, apps[0], ""), startSibling(t, p, apps[1], "")}
	f := newForwarder(t, p)
	var appsWG sync.WaitGroup
	stop := make(chan struct{})
	for _, a := range apps {
		appsWG.Go(func() {
			for {
				select {
				case tk := <-a.got:
					_ = tk.d.Ack(context.Background())
				case <-stop:
					return
				}
			}
		})
	}
	t.Cleanup(func() { close(stop); appsWG.Wait() })
	const goroutines, per = 8, 250
	all := make([][]*testDelivery, goroutines)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			ctx := context.Background()
			for i := range per {
				d := newDelivery(g*per+i, []byte("concurrent"))
				all[g] = append(all[g], d)
				if err := f.Forward(ctx, sibs[(g+i)%2].addr, "g", "t", d); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := f.Drain(ctxTimeout(t, 20*time.Second)); err != nil {
		t.Fatalf("Drain: %v (outstanding %d)", err, f.Outstanding())
	}
	for _, ds := range all {
		for _, d := range ds {
			if a, n, _ := d.counts(); a != 1 || n != 0 {
				t.Fatalf("%s: %d acks, %d nacks; want 1 ack", d.id, a, n)
			}
		}
	}
	if c0, c1 := apps[0].calls.Load(), apps[1].calls.Load(); c0+c1 != goroutines*per || c0 == 0 || c1 == 0 {
		t.Errorf("siblings got %d and %d deliveries, want %d in all, some each", c0, c1, goroutines*per)
	}
}

// Closing the Forwarder hands back what it holds and refuses new work.
func TestForwarderClose(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")
	f := newForwarder(t, p)
	d := newDelivery(1, nil)
	if err := f.Forward(ctxTimeout(t, 5*time.Second), sib.addr, "g", "t", d); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, app.got, 5*time.Second, "the delivery")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if a, n, _ := d.counts(); a != 0 || n != 1 {
		t.Errorf("%d acks, %d nacks after Close; want one Nack(0)", a, n)
	}
	d2 := newDelivery(2, nil)
	if err := f.Forward(context.Background(), sib.addr, "g", "t", d2); !errors.Is(err, ErrClosed) {
		t.Errorf("Forward after Close = %v, want ErrClosed", err)
	}
	d2.untouched(t)
	if err := f.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// An idle connection is closed after a while and redialed on demand.
func TestIdleConnectionClosed(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")
	f := newForwarder(t, p)
	f.idle, f.hbEvery = 50*time.Millisecond, 10*time.Millisecond
	for i := range 2 {
		d := newDelivery(i, nil)
		if err := f.Forward(ctxTimeout(t, 5*time.Second), sib.addr, "g", "t", d); err != nil {
			t.Fatal(err)
		}
		tk := recvWithin(t, app.got, 5*time.Second, "a delivery")
		_ = tk.d.Ack(context.Background())
		recvWithin(t, d.settled, 5*time.Second, "the ack")
		waitFor(t, 5*time.Second, "the idle connection to be dropped", func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return len(f.peers) == 0
		})
	}
}

// The receiving side answers heartbeats and refuses kinds it does not take.
func TestServerProtocol(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")
	raw, err := net.Dial("tcp", sib.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
	conn := tls.Client(raw, p.clientTLS(t, "orders"))
	rd := mesh.NewReader(conn, 0)
	send := func(kind mesh.Kind, flags mesh.Flags, id uint64, pl mesh.Encoder) {
		b, err := mesh.AppendFrame(nil, 0, kind, flags, id, pl)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(kind mesh.Kind, id uint64) mesh.Frame {
		t.Helper()
		fr, err := rd.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if fr.Kind != kind || fr.ID != id || !fr.IsResponse() {
			t.Fatalf("got %s id %d (flags %d), want %s answer id %d", fr.Kind, fr.ID, fr.Flags, kind, id)
		}
		return fr
	}
	send(mesh.KindHello, 0, 1, &mesh.Hello{App: "orders", Client: "raw"})
	expect(mesh.KindOK, 1)
	send(mesh.KindHeartbeat, 0, 2, nil)
	expect(mesh.KindHeartbeat, 2)
	send(mesh.KindPublish, 0, 3, &mesh.Publish{Topic: "t"})
	expect(mesh.KindError, 3)
	send(mesh.KindHello, 0, 4, &mesh.Hello{App: "orders"})
	expect(mesh.KindError, 4)
	// A DELIVER whose payload does not decode, and one whose delivery_id
	// differs from its frame id.
	b, _ := mesh.AppendFrame(nil, 0, mesh.KindDeliver, 0, 5, nil)
	_, _ = conn.Write(b)
	expect(mesh.KindError, 5)
	send(mesh.KindDeliver, 0, 6, &mesh.Message{DeliveryID: 7, Group: "g", Topic: "t"})
	expect(mesh.KindError, 6)
	// A good one: OK, then the app's answer.
	send(mesh.KindDeliver, 0, 8, &mesh.Message{DeliveryID: 8, Group: "g", Topic: "t"})
	expect(mesh.KindOK, 8)
	// The same id again while in flight.
	send(mesh.KindDeliver, 0, 8, &mesh.Message{DeliveryID: 8, Group: "g", Topic: "t"})
	expect(mesh.KindError, 8)
	tk := recvWithin(t, app.got, 5*time.Second, "the delivery")
	_ = tk.d.Nack(context.Background(), 1500*time.Millisecond)
	fr := expect(mesh.KindNack, 8)
	var n mesh.Nack
	if err := n.Decode(fr.Payload); err != nil || n.DelayMillis != 1500 {
		t.Errorf("NACK %+v, %v; want 1500 ms", n, err)
	}
	// A frame over the limit ends the connection after an ERROR.
	hdr := []byte{0x7f, 0, 0, 0, mesh.Version, byte(mesh.KindDeliver), 0, 0, 0, 0, 0, 0, 0, 0, 0, 9}
	_, _ = conn.Write(hdr)
	expect(mesh.KindError, 9)
	if _, err := rd.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Errorf("after an oversized frame: %v, want EOF", err)
	}
	if n := app.calls.Load(); n != 1 {
		t.Errorf("Deliverer called %d times, want 1", n)
	}
}

func TestConfigValidation(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	good := ServerConfig{TLS: p.serverTLS(t, "orders"), App: "orders", Deliverer: app}
	noClientAuth := good.TLS.Clone()
	noClientAuth.ClientAuth = tls.RequestClientCert
	for name, cfg := range map[string]ServerConfig{
		"no TLS":             {App: "orders", Deliverer: app},
		"no client auth":     {TLS: noClientAuth, App: "orders", Deliverer: app},
		"no app":             {TLS: good.TLS, Deliverer: app},
		"bad app":            {TLS: good.TLS, App: "a/b", Deliverer: app},
		"no deliverer":       {TLS: good.TLS, App: "orders"},
		"negative inflight":  {TLS: good.TLS, App: "orders", Deliverer: app, MaxInflight: -1},
		"no server cert":     {TLS: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}, App: "orders", Deliverer: app},
		"negative framesize": {TLS: good.TLS, App: "orders", Deliverer: app, MaxFrameSize: -1},
	} {
		if _, err := NewServer(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("NewServer(%s) = %v, want ErrConfig", name, err)
		}
	}
	s, err := NewServer(good)
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Listen != DefaultListen || s.cfg.MaxInflight != DefaultMaxInflight || s.tls.MinVersion != tls.VersionTLS13 {
		t.Errorf("defaults: %+v", s.cfg)
	}
	for name, cfg := range map[string]ClientConfig{
		"no TLS":           {App: "orders"},
		"no client cert":   {TLS: &tls.Config{}, App: "orders"},
		"bad app":          {TLS: p.clientTLS(t, "orders"), App: ""},
		"negative timeout": {TLS: p.clientTLS(t, "orders"), App: "orders", Timeout: -1},
	} {
		if _, err := NewForwarder(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("NewForwarder(%s) = %v, want ErrConfig", name, err)
		}
	}
}

// Start listens on the configured address and Addr reports it.
func TestStart(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	s, err := NewServer(ServerConfig{Listen: "127.0.0.1:0", TLS: p.serverTLS(t, "orders"), App: "orders", Deliverer: app, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != nil {
		t.Errorf("Addr before Start = %v", s.Addr())
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	f := newForwarder(t, p)
	d := newDelivery(1, nil)
	if err := f.Forward(ctxTimeout(t, 5*time.Second), s.Addr().String(), "g", "t", d); err != nil {
		t.Fatal(err)
	}
	tk := recvWithin(t, app.got, 5*time.Second, "the delivery")
	_ = tk.d.Ack(context.Background())
	recvWithin(t, d.settled, 5*time.Second, "the ack")
	if err := s.Shutdown(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
}

// BenchmarkForwardRoundTrip: one delivery with a 1 KiB body forwarded to a
// sibling over mutual TLS on loopback, taken by its app, acked, and the ack
// applied upstream.
func BenchmarkForwardRoundTrip(b *testing.B) {
	p := newPKI(b)
	app := newApp()
	app.got = make(chan taken, 1<<16)
	sib := startSibling(b, p, app, "", func(c *ServerConfig) { c.MaxInflight = 1 << 16 })
	f := newForwarder(b, p)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case tk := <-app.got:
				_ = tk.d.Ack(context.Background())
			case <-stop:
				return
			}
		}
	})
	b.Cleanup(func() { close(stop); wg.Wait() })
	body := bytes.Repeat([]byte("x"), 1024)
	ctx := context.Background()
	run := func(b *testing.B, d *testDelivery) {
		if err := f.Forward(ctx, sib.addr, "g", "orders.created", d); err != nil {
			b.Fatal(err)
		}
		<-d.settled
	}
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(1024)
		b.ReportAllocs()
		for b.Loop() {
			run(b, newDelivery(1, body))
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(1024)
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				run(b, newDelivery(1, body))
			}
		})
	})
}

var _ broker.Delivery = (*sibDelivery)(nil)

// TestForwardKeepsNullAndEmpty: a tombstone (null body) and an empty key
// reach the sibling's app as such, not as an empty body and no key.
func TestForwardKeepsNullAndEmpty(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	sib := startSibling(t, p, app, "")
	f := newForwarder(t, p)
	tomb := newDelivery(1, nil)
	tomb.msg.Key, tomb.msg.NullBody = "k", true
	empty := newDelivery(2, []byte("x"))
	empty.msg.Key, empty.msg.EmptyKey = "", true
	plain := newDelivery(3, nil)
	plain.msg.Key = ""
	ctx := ctxTimeout(t, 10*time.Second)
	for _, d := range []*testDelivery{tomb, empty, plain} {
		if err := f.Forward(ctx, sib.addr, "billing", "orders.created", d); err != nil {
			t.Fatal(err)
		}
		tk := recvWithin(t, app.got, 10*time.Second, "the delivery at the sibling")
		m := tk.d.Message()
		if m.NullBody != d.msg.NullBody || m.EmptyKey != d.msg.EmptyKey || m.Key != d.msg.Key {
			t.Errorf("%s arrived with key %q, null body %v, empty key %v; sent %q, %v, %v",
				d.id, m.Key, m.NullBody, m.EmptyKey, d.msg.Key, d.msg.NullBody, d.msg.EmptyKey)
		}
		if err := tk.d.Ack(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
