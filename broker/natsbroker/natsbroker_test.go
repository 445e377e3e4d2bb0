package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
	"github.com/msgmesh/msgmesh/topology"
)

// TestPublishResultNames: a result names the topic's stream, no partition,
// and the stream sequence; the MessageID is "<stream>:<sequence>". The
// conformance suite (TestConformance) checks what every broker promises.
func TestPublishResultNames(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	for i, r := range brokertest.PublishN(t, ev.b, "orders.created", 0, 10) {
		want := broker.PublishResult{Stream: "MESH_orders_created", Partition: -1, Offset: int64(i + 1), MessageID: fmt.Sprintf("MESH_orders_created:%d", i+1)}
		if r != want {
			t.Fatalf("result %d: %+v, want %+v", i, r, want)
		}
	}
}

func TestPositionKeptAcrossClose(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	brokertest.PublishN(t, ev.b, "audit", 0, 20)
	spec := broker.ConsumerSpec{Topic: "audit", Group: "auditor", AckWait: time.Second, Prefetch: 4}

	c, err := ev.b.Consume(brokertest.Ctx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	// Ack 0..9, keep 10 and 11 unacked; 12.. stay prefetched or on the server.
	for i := 0; i < 12; i++ {
		d := brokertest.Next(t, c)
		if string(d.Message().Body) != string(brokertest.Body(i)) {
			t.Fatalf("delivery %d: %q", i, d.Message().Body)
		}
		if i < 10 {
			if err := d.Ack(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.Close(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Next(brokertest.Ctx(t)); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(brokertest.Ctx(t)); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// The consumer (and its position) survived Close.
	if _, err := ev.js.Consumer(brokertest.Ctx(t), "MESH_audit", "auditor__audit"); err != nil {
		t.Fatalf("durable consumer gone after Close: %v", err)
	}

	c2 := brokertest.Consume(t, ev.b, spec)
	brokertest.Collect(t, c2, brokertest.Bodies(10, 10)) // fails on any of 0..9
	brokertest.ExpectNothing(t, c2, 2*spec.AckWait)
}

func TestPause(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	const n = 200
	brokertest.PublishN(t, ev.b, "events", 0, n)
	// AckWait is far longer than the test may run: anything redelivered
	// was handed back by Pause/Close, not timed out.
	spec := broker.ConsumerSpec{Topic: "events", Group: "g", Prefetch: 16, AckWait: 10 * brokertest.WaitLong}
	c1 := brokertest.Consume(t, ev.b, spec)

	got := make(map[string]int)
	for i := 0; i < 5; i++ {
		d := brokertest.Next(t, c1)
		got[string(d.Message().Body)]++
		if err := d.Ack(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// c1 now holds up to 16 prefetched messages, starting at brokertest.Body(5).
	for i := 0; i < 2; i++ { // idempotent
		if err := c1.Pause(brokertest.Ctx(t)); err != nil {
			t.Fatalf("Pause %d: %v", i, err)
		}
	}
	if _, err := c1.Next(brokertest.Ctx(t)); !errors.Is(err, broker.ErrPaused) {
		t.Fatalf("Next while paused: %v, want ErrPaused", err)
	}

	// Another member of the group (another sidecar) gets the handed-back
	// messages at once.
	c2, err := ev.b.Consume(brokertest.Ctx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	for k, cnt := range brokertest.Counts(brokertest.Collect(t, c2, brokertest.Bodies(5, n-5))) {
		got[k] += cnt
	}
	if err := c2.Close(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < 2; i++ {
		if err := c1.Resume(brokertest.Ctx(t)); err != nil {
			t.Fatalf("Resume %d: %v", i, err)
		}
	}
	brokertest.PublishN(t, ev.b, "events", n, 20)
	for k, cnt := range brokertest.Counts(brokertest.Collect(t, c1, brokertest.Bodies(n, 20))) {
		got[k] += cnt
	}
	if len(got) != n+20 {
		t.Fatalf("got %d distinct messages, want %d", len(got), n+20)
	}
	for k, cnt := range got {
		if cnt != 1 {
			t.Errorf("%s delivered %d times", k, cnt)
		}
	}
}

func TestOperatorStreamIsUsed(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	if _, err := ev.js.CreateStream(brokertest.Ctx(t), jetstream.StreamConfig{
		Name:     "ORDERS",
		Subjects: []string{"orders.>"},
	}); err != nil {
		t.Fatal(err)
	}
	brokertest.PublishN(t, ev.b, "orders.created", 0, 10)
	r := brokertest.PublishN(t, ev.b, "orders.paid", 10, 5)
	if r[0].Stream != "ORDERS" || r[0].MessageID != "ORDERS:11" {
		t.Fatalf("result %+v", r[0])
	}

	created := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: "orders.created", Group: "billing"})
	paid := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: "orders.paid", Group: "billing"})
	brokertest.Collect(t, created, brokertest.Bodies(0, 10))
	brokertest.Collect(t, paid, brokertest.Bodies(10, 5))

	if names := streamNames(t, ev.js); !slices.Equal(names, []string{"ORDERS"}) {
		t.Fatalf("streams %v, want only ORDERS", names)
	}
	var consumers []string
	orders, err := ev.js.Stream(brokertest.Ctx(t), "ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	l := orders.ConsumerNames(brokertest.Ctx(t))
	for n := range l.Name() {
		consumers = append(consumers, n)
	}
	if len(consumers) != 2 {
		t.Fatalf("consumers %v, want two", consumers)
	}
	info, err := orders.Info(brokertest.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Config.Subjects; !slices.Equal(got, []string{"orders.>"}) {
		t.Fatalf("operator stream modified: subjects %v", got)
	}
}

func TestStreamNameCollision(t *testing.T) {
	// "a_b" and "a.b" sanitize to the same stream name.
	ev := newEnv(t, natsbroker.Config{StreamPrefix: "X_"})
	r1 := brokertest.PublishN(t, ev.b, "a_b", 0, 1)[0]
	r2 := brokertest.PublishN(t, ev.b, "a.b", 1, 1)[0]
	if r1.Stream != "X_a_b" || r2.Stream == r1.Stream || !strings.HasPrefix(r2.Stream, "X_a_b_") {
		t.Fatalf("streams %q and %q", r1.Stream, r2.Stream)
	}
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: "a.b", Group: "g"})
	brokertest.Collect(t, c, brokertest.Bodies(1, 1))
}

func TestKeyAndHeadersRoundTrip(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	tests := []struct {
		name    string
		key     string
		headers []broker.Header
	}{
		{"plain", "order-42", []broker.Header{hdr("Trace-Id", "abc"), hdr("X", "1")}},
		{"no key", "", []broker.Header{hdr("Only", "header")}},
		{"nothing", "", nil},
		{"unicode key", "ключ ✓", nil},
		{"spaces around key", "  k  ", nil},
		{"binary key", "a\x00b\r\nc\xff", nil},
		{"repeated header", "k", []broker.Header{hdr("A", "1"), hdr("A", "2"), hdr("B", "x")}},
		{"empty body", "k", nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topic := fmt.Sprintf("rt.%d", i)
			var b []byte
			if tt.name != "empty body" {
				b = []byte("payload " + tt.name)
			}
			in := &broker.Message{Topic: topic, Key: tt.key, Headers: slices.Clone(tt.headers), Body: b}
			if _, err := ev.b.Publish(brokertest.Ctx(t), in); err != nil {
				t.Fatal(err)
			}
			c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: topic, Group: "g"})
			d := brokertest.Next(t, c)
			got := d.Message()
			if got.Topic != topic || got.Key != tt.key || string(got.Body) != string(b) {
				t.Fatalf("got topic %q key %q body %q", got.Topic, got.Key, got.Body)
			}
			want := slices.Clone(tt.headers)
			slices.SortStableFunc(want, func(a, b broker.Header) int { return strings.Compare(a.Key, b.Key) })
			if !slices.Equal(got.Headers, want) {
				t.Fatalf("headers %v, want %v", got.Headers, want)
			}
			if err := d.Ack(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestPublishRejected(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	brokertest.PublishN(t, ev.b, "strict", 0, 1)
	// An operator's stream with a message size limit below the server's.
	if _, err := ev.js.CreateStream(brokertest.Ctx(t), jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small"}, MaxMsgSize: 100}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		msg  *broker.Message
		also error // a more precise sentinel the error wraps too
	}{
		{"nil message", nil, nil},
		{"empty topic", &broker.Message{}, nil},
		{"wildcard topic", &broker.Message{Topic: "a.*"}, nil},
		{"reserved header", &broker.Message{Topic: "strict", Headers: []broker.Header{hdr(natsbroker.KeyHeader, "x")}}, broker.ErrInvalidHeader},
		{"bad header key", &broker.Message{Topic: "strict", Headers: []broker.Header{hdr("a b", "x")}}, broker.ErrInvalidHeader},
		{"newline in header value", &broker.Message{Topic: "strict", Headers: []broker.Header{hdr("A", "x\ny")}}, broker.ErrInvalidHeader},
		{"JetStream header", &broker.Message{Topic: "strict", Headers: []broker.Header{hdr("Nats-Expected-Last-Sequence", "99")}}, broker.ErrInvalidHeader},
		{"dedup header", &broker.Message{Topic: "strict", Headers: []broker.Header{hdr("Nats-Msg-Id", "1")}}, broker.ErrInvalidHeader},
		{"status header", &broker.Message{Topic: "strict", Headers: []broker.Header{hdr("Status", "404")}}, broker.ErrInvalidHeader},
		{"too large for the server", &broker.Message{Topic: "strict", Body: make([]byte, 2<<20)}, broker.ErrTooLarge},
		{"too large for the stream", &broker.Message{Topic: "small", Body: make([]byte, 200)}, broker.ErrTooLarge},
		{"headers over 64 KiB", &broker.Message{Topic: "strict", Headers: []broker.Header{hdr("A", strings.Repeat("v", 70<<10))}}, broker.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ev.b.Publish(brokertest.Ctx(t), tt.msg)
			if !errors.Is(err, broker.ErrRejected) || !strings.HasPrefix(err.Error(), "natsbroker: publish") {
				t.Fatalf("Publish: %v, want ErrRejected", err)
			}
			if tt.also != nil && !errors.Is(err, tt.also) {
				t.Fatalf("Publish: %v, want %v too", err, tt.also)
			}
		})
	}
}

func TestUnavailable(t *testing.T) {
	t.Run("unreachable URL", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, err = natsbroker.New(brokertest.Ctx(t), natsbroker.Config{URL: "nats://" + addr, Logger: quietLog})
		if !errors.Is(err, broker.ErrUnavailable) {
			t.Fatalf("New: %v, want ErrUnavailable", err)
		}
	})
	t.Run("JetStream disabled", func(t *testing.T) {
		srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
		if !srv.ReadyForConnections(brokertest.WaitLong) {
			t.Fatal("server not ready")
		}
		_, err = natsbroker.New(brokertest.Ctx(t), natsbroker.Config{URL: srv.ClientURL(), Logger: quietLog})
		if !errors.Is(err, broker.ErrUnavailable) || !strings.Contains(err.Error(), "JetStream is not enabled") {
			t.Fatalf("New: %v, want ErrUnavailable saying JetStream is not enabled", err)
		}
	})
	t.Run("server gone", func(t *testing.T) {
		// The broker's own connection, so the test can wait until the
		// client has seen the server go: a publish written before that
		// may have reached it (outcome unknown); one
		// made while disconnected is known not to be stored.
		e := natstest.Start(t)
		nc, err := nats.Connect(e.ClientURL(), nats.MaxReconnects(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		b, err := natsbroker.New(brokertest.Ctx(t), natsbroker.Config{Conn: nc, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		brokertest.PublishN(t, b, "gone", 0, 1)
		e.Shutdown()
		deadline := time.Now().Add(brokertest.WaitLong)
		for nc.IsConnected() {
			if time.Now().After(deadline) {
				t.Fatal("the client never saw the server go")
			}
			time.Sleep(5 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err = b.Publish(ctx, &broker.Message{Topic: "gone", Body: []byte("x")})
		if !errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrOutcomeUnknown) {
			t.Fatalf("Publish: %v, want ErrUnavailable (nothing sent)", err)
		}
	})
	t.Run("config", func(t *testing.T) {
		_, err := natsbroker.New(brokertest.Ctx(t), natsbroker.Config{})
		if err == nil || !strings.Contains(err.Error(), "URL") {
			t.Fatalf("New without URL: %v", err)
		}
		_, err = natsbroker.New(brokertest.Ctx(t), natsbroker.Config{URL: "nats://x", StreamPrefix: "a.b", Streams: &topology.Streams{StreamSettings: topology.StreamSettings{Replicas: -1}}})
		if err == nil || !strings.Contains(err.Error(), "StreamPrefix") || !strings.Contains(err.Error(), "replicas") {
			t.Fatalf("New with bad config: %v", err)
		}
	})
}

// Concurrent first publishes of a topic create one stream, after one
// lookup: the JetStream API requests the adapter sends (seen by a
// subscriber of $JS.API.>) do not grow with the publishers.
func TestConcurrentPublishersCreateOneStream(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	obs, err := ev.e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(obs.Close)
	var lookups atomic.Int32
	if _, err := obs.Subscribe("$JS.API.STREAM.NAMES", func(*nats.Msg) { lookups.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := obs.Flush(); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 250
	var (
		mu   sync.Mutex
		seqs = make(map[int64]bool)
		wg   sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: "fresh.topic", Body: brokertest.Body(w*each + i)})
				if err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				mu.Lock()
				seqs[r.Offset] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seqs) != workers*each {
		t.Fatalf("%d distinct sequences, want %d", len(seqs), workers*each)
	}
	if names := streamNames(t, ev.js); !slices.Equal(names, []string{"MESH_fresh_topic"}) {
		t.Fatalf("streams %v", names)
	}
	// One lookup finds nothing and creates the stream; a lost creation
	// race would add one more.
	if err := obs.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := lookups.Load(); n == 0 || n > 2 {
		t.Errorf("%d stream lookups for %d concurrent first publishes, want 1 or 2", n, workers)
	}
}

func TestConsumerDeletedByOperatorIsRecreated(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	brokertest.PublishN(t, ev.b, "fragile", 0, 1)
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: "fragile", Group: "g"})
	brokertest.Collect(t, c, brokertest.Bodies(0, 1))
	if err := ev.js.DeleteConsumer(brokertest.Ctx(t), "MESH_fragile", "g__fragile"); err != nil {
		t.Fatal(err)
	}
	// The recreated consumer starts at the oldest message again.
	brokertest.PublishN(t, ev.b, "fragile", 1, 1)
	brokertest.Collect(t, c, brokertest.Bodies(0, 2))
}

func TestEmbeddedInProcessOnly(t *testing.T) {
	e, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	if u := e.ClientURL(); u != "" {
		t.Fatalf("ClientURL = %q without a listener", u)
	}
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := natsbroker.New(brokertest.Ctx(t), natsbroker.Config{Conn: nc, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.PublishN(t, b, "inproc", 0, 1)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if nc.IsClosed() {
		t.Fatal("Broker.Close closed a connection it did not create")
	}
	e.Shutdown()
	e.Shutdown() // idempotent

	if _, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{}); err == nil {
		t.Fatal("StartEmbedded without StoreDir succeeded")
	}
}

func hdr(k, v string) broker.Header { return broker.Header{Key: k, Value: v} }

func TestStreamDeletedByOperatorIsRecreated(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	brokertest.PublishN(t, ev.b, "ephemeral", 0, 3)
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: "ephemeral", Group: "g"})
	brokertest.Collect(t, c, brokertest.Bodies(0, 3))
	if err := ev.js.DeleteStream(brokertest.Ctx(t), "MESH_ephemeral"); err != nil {
		t.Fatal(err)
	}
	r := brokertest.PublishN(t, ev.b, "ephemeral", 3, 1)[0]
	if r.Stream != "MESH_ephemeral" || r.Offset != 1 {
		t.Fatalf("publish after stream deletion: %+v", r)
	}
	brokertest.Collect(t, c, brokertest.Bodies(3, 1))
}

func TestSurvivesServerRestart(t *testing.T) {
	dir := t.TempDir()
	e := startAt(t, dir, "127.0.0.1:0")
	url := e.ClientURL()
	b, err := natsbroker.New(brokertest.Ctx(t), natsbroker.Config{URL: url, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	brokertest.PublishN(t, b, "durable", 0, 5)
	// A short ack wait: a message the server picked for a pull request
	// just before it shut down can go down with the server's outbound
	// queue (its shutdown status overtakes it), counted delivered; it
	// comes again only after the ack wait. Seen under load: 2..4 so lost,
	// waiting the default minute. (Collect takes their redeliveries.)
	c := brokertest.Consume(t, b, broker.ConsumerSpec{Topic: "durable", Group: "g", AckWait: 3 * time.Second})
	brokertest.Collect(t, c, brokertest.Bodies(0, 2))
	// Acks do not wait for the server: wait until it has 0..1's, so that
	// they cannot come again after the restart.
	js := operator(t, e)
	if !brokertest.Poll(func() bool {
		return consumerInfo(t, js, "MESH_durable", "g__durable").AckFloor.Stream >= 2
	}) {
		t.Fatal("the acks of 0..1 did not reach the server")
	}

	e.Shutdown()
	startAt(t, dir, strings.TrimPrefix(url, "nats://"))

	// Publishing fails with ErrUnavailable until the client has
	// reconnected, then succeeds. A publish sent just as the connection
	// came back may time out unanswered (ErrOutcomeUnknown, on a loaded
	// machine): it is sent again, as an app would, and may then arrive
	// twice, which Collect allows.
	i := 5
	if !brokertest.Poll(func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := b.Publish(ctx, &broker.Message{Topic: "durable", Body: brokertest.Body(i)})
		if err != nil && !errors.Is(err, broker.ErrUnavailable) && !errors.Is(err, broker.ErrOutcomeUnknown) {
			t.Fatalf("Publish during restart: %v", err)
		}
		if err == nil {
			i++
		}
		return i == 10
	}) {
		t.Fatal("publishing did not recover after the restart")
	}
	// Unacked 2..4 (some were prefetched before the restart) and the new
	// 5..9 all arrive; acked 0..1 do not.
	brokertest.Collect(t, c, brokertest.Bodies(2, 8))
}

func TestCloseStopsClientGoroutines(t *testing.T) {
	e := natstest.Start(t)
	b, err := natsbroker.New(brokertest.Ctx(t), natsbroker.Config{URL: e.ClientURL(), Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.PublishN(t, b, "leak", 0, 50)
	c, err := b.Consume(brokertest.Ctx(t), broker.ConsumerSpec{Topic: "leak", Group: "g", Prefetch: 8})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Collect(t, c, brokertest.Bodies(0, 10))
	if err := c.Pause(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := c.Resume(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	brokertest.Next(t, c)
	// No consumer Close: Broker.Close closes what is still open.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if !brokertest.Poll(func() bool { return clientGoroutines() == "" }) {
		t.Fatalf("client goroutines left after Close:\n%s", clientGoroutines())
	}
}

// clientGoroutines returns the stacks of goroutines running NATS client
// code, "" if there are none.
func clientGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var left []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "nats-io/nats.go") {
			left = append(left, g)
		}
	}
	return strings.Join(left, "\n\n")
}
