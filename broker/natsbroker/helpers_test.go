package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
)

// waitLong bounds every wait of a test; generous so that -race builds on a
// busy machine pass. Nothing waits this long when the code is right.
const waitLong = 30 * time.Second

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// env is one embedded server and a Broker on it.
type env struct {
	e  *natsbroker.Embedded
	b  *natsbroker.Broker
	js jetstream.JetStream // an operator's view of the server
}

// newEnv starts a server and a Broker connected over TCP.
func newEnv(t testing.TB, cfg natsbroker.Config) *env {
	t.Helper()
	e := natstest.Start(t)
	cfg.URL = e.ClientURL()
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	b, err := natsbroker.New(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Broker.Close: %v", err)
		}
	})
	return &env{e: e, b: b, js: operator(t, e)}
}

// operator returns a JetStream handle on its own in-process connection.
func operator(t testing.TB, e *natsbroker.Embedded) jetstream.JetStream {
	t.Helper()
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// ctxT is a context bounded by waitLong and cancelled at cleanup.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

func body(i int) []byte { return fmt.Appendf(nil, "m-%05d", i) }

// publishN publishes n messages with bodies body(from)..body(from+n-1).
func publishN(t testing.TB, b *natsbroker.Broker, topic string, from, n int) []broker.PublishResult {
	t.Helper()
	res := make([]broker.PublishResult, 0, n)
	for i := from; i < from+n; i++ {
		r, err := b.Publish(ctxT(t), &broker.Message{Topic: topic, Body: body(i)})
		if err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
		res = append(res, r)
	}
	return res
}

func consume(t testing.TB, b *natsbroker.Broker, spec broker.ConsumerSpec) broker.Consumer {
	t.Helper()
	c, err := b.Consume(ctxT(t), spec)
	if err != nil {
		t.Fatalf("Consume %+v: %v", spec, err)
	}
	t.Cleanup(func() {
		if err := c.Close(context.Background()); err != nil {
			t.Errorf("Consumer.Close: %v", err)
		}
	})
	return c
}

// next calls Next with a deadline and fails the test on error.
func next(t testing.TB, c broker.Consumer) broker.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	d, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return d
}

// collect receives until want bodies were seen at least once each, acking
// every delivery; it returns how often each body was delivered. It fails
// on a body not in want.
func collect(t testing.TB, c broker.Consumer, want map[string]bool) map[string]int {
	t.Helper()
	got := make(map[string]int)
	for missing := len(want); missing > 0; {
		d := next(t, c)
		k := string(d.Message().Body)
		if !want[k] {
			t.Fatalf("unexpected message %q (%s)", k, d.MessageID())
		}
		if got[k] == 0 {
			missing--
		}
		got[k]++
		if err := d.Ack(context.Background()); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	return got
}

func bodies(from, n int) map[string]bool {
	m := make(map[string]bool, n)
	for i := from; i < from+n; i++ {
		m[string(body(i))] = true
	}
	return m
}

// poll reports whether cond held within waitLong, checking it every 10 ms.
// It may be called from any goroutine.
func poll(cond func() bool) bool {
	deadline := time.Now().Add(waitLong)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// expectNothing asserts that Next delivers nothing within d.
func expectNothing(t testing.TB, c broker.Consumer, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	dl, err := c.Next(ctx)
	if err == nil {
		t.Fatalf("unexpected delivery %q (%s, redelivered %d)", dl.Message().Body, dl.MessageID(), dl.Redelivered())
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next: %v, want deadline exceeded", err)
	}
}

// streamNames lists the streams on the server.
func streamNames(t testing.TB, js jetstream.JetStream) []string {
	t.Helper()
	var names []string
	l := js.StreamNames(ctxT(t))
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		t.Fatal(err)
	}
	return names
}

// startAt starts an embedded server storing in dir and listening on addr
// ("127.0.0.1:0" for a free port; the same address again to restart it
// where clients find it), shut down at cleanup.
func startAt(t testing.TB, dir, addr string) *natsbroker.Embedded {
	t.Helper()
	e, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{StoreDir: dir, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e
}
