package natsbroker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
	"github.com/msgmesh/msgmesh/internal/netfault"
	"github.com/msgmesh/msgmesh/topology"
)

// relayEnv is an embedded server (syncing every write) and a Broker that
// reaches it through a relay the test can cut: while it is cut, the first
// publish of a topic stays in flight and the others wait behind it.
type relayEnv struct {
	*env
	relay *netfault.Relay
}

func newRelayEnv(t *testing.T, cfg natsbroker.Config) *relayEnv {
	t.Helper()
	e := natstest.Start(t)
	u, err := url.Parse(e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	relay, err := netfault.NewRelay(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	cfg.URL = "nats://" + relay.Addr()
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	b := brokertest.Open(t, func(ctx context.Context) (*natsbroker.Broker, error) { return natsbroker.New(ctx, cfg) })
	return &relayEnv{env: &env{e: e, b: b, js: operator(t, e)}, relay: relay}
}

// queued publishes msgs at once while the relay is cut, waits until all
// but one wait for the topic's publish in flight, heals the relay and
// returns each publish's result and error. ctxOf gives publish i its
// context (nil: the test's).
func (ev *relayEnv) queued(t *testing.T, msgs []*broker.Message, ctxOf func(i int) context.Context) ([]broker.PublishResult, []error) {
	t.Helper()
	res, errs := make([]broker.PublishResult, len(msgs)), make([]error, len(msgs))
	ev.relay.Cut()
	var wg sync.WaitGroup
	for i, m := range msgs {
		ctx := brokertest.Ctx(t)
		if ctxOf != nil {
			ctx = ctxOf(i)
		}
		wg.Go(func() { res[i], errs[i] = ev.b.Publish(ctx, m) })
	}
	if !brokertest.Poll(func() bool { return natsbroker.PendingPublishes(ev.b) == len(msgs)-1 }) {
		ev.relay.Heal()
		t.Fatalf("%d publishes wait for the one in flight, want %d", natsbroker.PendingPublishes(ev.b), len(msgs)-1)
	}
	ev.relay.Heal()
	wg.Wait()
	return res, errs
}

// createStream publishes one message to topic, so that its stream exists
// before a test cuts the relay, and returns the stream's name.
func (ev *relayEnv) createStream(t *testing.T, topic string) string {
	t.Helper()
	r, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: topic, Body: []byte("first")})
	if err != nil {
		t.Fatal(err)
	}
	return r.Stream
}

// TestConcurrentPublishesShareBatches: publishes that wait for their
// topic's publish in flight go as atomic batches of at most MaxBatch, each
// stored at the sequence its publish was answered with, with its own body,
// key and headers, and delivered without the batch headers.
func TestConcurrentPublishesShareBatches(t *testing.T) {
	ev := newRelayEnv(t, natsbroker.Config{MaxBatch: 64})
	const topic, n = "orders.batched", 200
	stream := ev.createStream(t, topic)
	msgs := make([]*broker.Message, n)
	for i := range msgs {
		msgs[i] = &broker.Message{Topic: topic, Body: brokertest.Body(i)}
		if i%2 == 0 {
			msgs[i].Key = fmt.Sprintf("k-%d", i)
			msgs[i].Headers = []broker.Header{{Key: "trace", Value: fmt.Sprint(i)}}
		}
	}
	res, errs := ev.queued(t, msgs, nil)
	// One publish alone, then the 199 that waited: 64, 64, 64 and 7.
	if got := natsbroker.Batches(ev.b); got != 4 {
		t.Errorf("%d batches, want 4", got)
	}
	seqs := map[int64]int{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if j, dup := seqs[res[i].Offset]; dup {
			t.Fatalf("publishes %d and %d both answered sequence %d", j, i, res[i].Offset)
		}
		seqs[res[i].Offset] = i
		if want := fmt.Sprintf("%s:%d", res[i].Stream, res[i].Offset); res[i].MessageID != want {
			t.Errorf("publish %d: message id %q, want %q", i, res[i].MessageID, want)
		}
	}
	s, err := ev.js.Stream(brokertest.Ctx(t), stream)
	if err != nil {
		t.Fatal(err)
	}
	batched := 0
	for i, r := range res {
		m, err := s.GetMsg(brokertest.Ctx(t), uint64(r.Offset))
		if err != nil {
			t.Fatalf("publish %d at %d: %v", i, r.Offset, err)
		}
		if !bytes.Equal(m.Data, msgs[i].Body) || m.Header.Get(natsbroker.KeyHeader) != msgs[i].Key {
			t.Fatalf("publish %d answered %d, which holds %q key %q", i, r.Offset, m.Data, m.Header.Get(natsbroker.KeyHeader))
		}
		if m.Header.Get("Nats-Batch-Id") != "" {
			batched++
		}
	}
	if batched != n-1 {
		t.Errorf("%d stored messages carry a batch id, want %d", batched, n-1)
	}

	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: topic, Group: "g"})
	want := brokertest.Bodies(0, n)
	want["first"] = true
	for _, d := range brokertest.Collect(t, c, want) {
		m := d.Message()
		var i int
		if _, err := fmt.Sscanf(string(m.Body), "m-%d", &i); err != nil {
			continue // "first"
		}
		for _, h := range m.Headers {
			if strings.HasPrefix(h.Key, "Nats-") {
				t.Fatalf("message %d delivered with header %s", i, h.Key)
			}
		}
		if m.Key != msgs[i].Key || len(m.Headers) != len(msgs[i].Headers) {
			t.Fatalf("message %d delivered with key %q and headers %v, published with %q and %v", i, m.Key, m.Headers, msgs[i].Key, msgs[i].Headers)
		}
	}
}

// TestRefusedBatchMembersGoOnAlone: a batch the stream refuses as a
// whole (here: more messages than the stream has room for) stored
// nothing, so each member goes on alone and gets its own answer.
func TestRefusedBatchMembersGoOnAlone(t *testing.T) {
	room := int64(20)
	const topic = "orders.small"
	ev := newRelayEnv(t, natsbroker.Config{MaxBatch: 64, Streams: &topology.Streams{
		Topics: []topology.TopicStreams{{Topic: topic, StreamSettings: topology.StreamSettings{MaxMsgs: &room}}},
	}})
	stream := ev.createStream(t, topic)
	msgs := make([]*broker.Message, 50)
	for i := range msgs {
		msgs[i] = &broker.Message{Topic: topic, Body: brokertest.Body(i)}
	}
	res, errs := ev.queued(t, msgs, nil)
	// The first alone (2 stored), then a batch of 49 refused: 18 of its
	// members are stored alone, 31 refused.
	if got := natsbroker.Batches(ev.b); got != 1 {
		t.Errorf("%d batches, want 1", got)
	}
	stored, full := 0, 0
	for i, err := range errs {
		switch {
		case err == nil:
			stored++
			if res[i].Offset < 2 || res[i].Offset > room {
				t.Errorf("publish %d answered sequence %d", i, res[i].Offset)
			}
		case errors.Is(err, broker.ErrStorageFull) && !errors.Is(err, broker.ErrOutcomeUnknown):
			full++
		default:
			t.Errorf("publish %d: %v", i, err)
		}
	}
	if stored != int(room)-1 || full != len(msgs)-stored {
		t.Errorf("%d stored and %d refused as full, want %d and %d", stored, full, room-1, len(msgs)-int(room)+1)
	}
	s, err := ev.js.Stream(brokertest.Ctx(t), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(brokertest.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(room) {
		t.Errorf("the stream holds %d messages, want %d", info.State.Msgs, room)
	}
}

// TestQueuedPublishLeavesAtItsDeadline: a publish whose deadline passes
// while it waits for its topic's publish in flight is not sent, and says
// so (not "outcome unknown").
func TestQueuedPublishLeavesAtItsDeadline(t *testing.T) {
	ev := newRelayEnv(t, natsbroker.Config{MaxBatch: 64})
	const topic = "orders.deadline"
	stream := ev.createStream(t, topic)
	ev.relay.Cut()
	healed := false
	defer func() {
		if !healed {
			ev.relay.Heal()
		}
	}()
	first := make(chan error, 1)
	go func() {
		_, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: topic, Body: brokertest.Body(0)})
		first <- err
	}()
	if !brokertest.Poll(func() bool { return natsbroker.TopicBusy(ev.b, topic) }) {
		t.Fatal("the first publish did not go out")
	}
	short, cancel := context.WithTimeout(brokertest.Ctx(t), 100*time.Millisecond)
	defer cancel()
	_, err := ev.b.Publish(short, &broker.Message{Topic: topic, Body: brokertest.Body(1)})
	if !errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("queued publish at its deadline: %v; want not sent (ErrUnavailable, the deadline)", err)
	}
	ev.relay.Heal()
	healed = true
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	s, err := ev.js.Stream(brokertest.Ctx(t), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(brokertest.Ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 { // createStream's and the first
		t.Errorf("the stream holds %d messages, want 2", info.State.Msgs)
	}
}

// TestStreamWithoutAtomicPublishGetsNoBatches: an existing stream that
// does not allow atomic publishes is sent every publish alone, however
// many wait.
func TestStreamWithoutAtomicPublishGetsNoBatches(t *testing.T) {
	ev := newRelayEnv(t, natsbroker.Config{MaxBatch: 64})
	const topic = "orders.operator"
	if _, err := ev.js.CreateStream(brokertest.Ctx(t), jetstream.StreamConfig{Name: "OPS", Subjects: []string{topic}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	ev.createStream(t, topic)
	ev.relay.Cut()
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: topic, Body: brokertest.Body(i)})
		})
	}
	// Nothing queues: every publish goes out at once, into the cut relay,
	// each waiting on a reply inbox of its own. (Queued, all but one would
	// wait in the topic's queue instead, holding none.)
	allOut := brokertest.Poll(func() bool { return natsbroker.RepliesInUse(ev.b) == len(errs) })
	inUse, pending := natsbroker.RepliesInUse(ev.b), natsbroker.PendingPublishes(ev.b)
	ev.relay.Heal()
	wg.Wait()
	if !allOut || pending != 0 {
		t.Errorf("%d of %d publishes in flight at once, %d waited in a queue", inUse, len(errs), pending)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if got := natsbroker.Batches(ev.b); got != 0 {
		t.Errorf("%d batches to a stream without allow_atomic", got)
	}
}

// TestMaxBatchOverServerLimitIsRefused: New refuses a MaxBatch over
// nats-server's default limit of a batch, before connecting.
func TestMaxBatchOverServerLimitIsRefused(t *testing.T) {
	for _, n := range []int{1001, 5000} {
		_, err := natsbroker.New(brokertest.Ctx(t), natsbroker.Config{URL: "nats://127.0.0.1:1", MaxBatch: n})
		if err == nil || !strings.Contains(err.Error(), "MaxBatch") || errors.Is(err, broker.ErrUnavailable) {
			t.Errorf("MaxBatch %d: %v; want a config error naming it", n, err)
		}
	}
}
