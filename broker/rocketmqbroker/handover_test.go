package rocketmqbroker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
)

// TestHandOverDelivery: deliveries an app holds when its process releases
// its consumer move to a successor Broker (another process's, on the same
// cluster) by their tokens. The successor's consumer reads the queues from
// the release's commit and delivers neither the held messages (their
// inherited deliveries settle them, also when the app answered before the
// consumer polled them) nor those the old process's app acked; the one it
// nacked comes back from the retry topic, and the messages never handed
// out come as usual. In the end every queue is committed to its end:
// nothing lost, nothing delivered twice.
func TestHandOverDelivery(t *testing.T) {
	const topic, group, n = "jobs", "workers", 12
	ev := newEnv(t, rocketmqbroker.Config{})
	successor := newBroker(t, ev.tb, rocketmqbroker.Config{Logger: testLogger(t)})
	brokertest.PublishN(t, ev.b, topic, 0, n)
	spec := broker.ConsumerSpec{Topic: topic, Group: group, AckWait: time.Minute}

	// Old process: 8 handed out; 0, 2, 5, 6 acked; 3 nacked (sent
	// back); 1, 4, 7 held by the app.
	old, err := ev.b.Consume(brokertest.Ctx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	ds := make([]broker.Delivery, 8)
	for i := range ds {
		ds[i] = brokertest.Next(t, old)
	}
	for _, i := range []int{0, 2, 5, 6} {
		brokertest.Ack(t, ds[i])
	}
	if err := ds[3].Nack(brokertest.Ctx(t), 0); err != nil {
		t.Fatal(err)
	}
	if _, ok := ds[1].(broker.Portable).Token(); ok {
		t.Fatal("a token while the consumer runs: its queue state is not final yet")
	}
	ev.quiesce(t, pullsPerConsumer)
	rel, ok := old.(broker.Releaser)
	if !ok {
		t.Fatal("a RocketMQ consumer is not a Releaser")
	}
	if err := rel.Release(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	held := brokertest.Adopt(t, successor, map[int]broker.Delivery{1: ds[1], 4: ds[4], 7: ds[7]})
	if _, err := successor.Adopt([]byte(`{"topic":"jobs"}`)); err == nil {
		t.Error("an inconsistent token was adopted")
	}
	brokertest.Ack(t, held[1]) // before the successor's consumer runs
	if err := held[1].Ack(context.Background()); err == nil {
		t.Error("a second answer to an adopted delivery was taken")
	}

	want := brokertest.Bodies(0, n)
	for i, d := range ds {
		if i != 3 {
			delete(want, string(d.Message().Body))
		}
	}
	next := brokertest.Consume(t, quietBroker{Broker: successor, ev: ev}, spec)
	got := brokertest.Collect(t, next, want)
	brokertest.ExactlyOnce(t, brokertest.Counts(got))
	for _, d := range got {
		if string(d.Message().Body) == string(ds[3].Message().Body) && d.Redelivered() != 1 {
			t.Errorf("the nacked message came with Redelivered %d, want 1", d.Redelivered())
		}
	}
	brokertest.ExpectNothing(t, next, 300*time.Millisecond)
	brokertest.Ack(t, held[4])
	brokertest.Ack(t, held[7])
	// Every queue of the topic committed to its end (the shutdown's
	// commit is awaited, patch 3).
	if err := next.Close(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	rgroup := rocketmqbroker.ConsumerGroup(rocketmqbroker.DefaultGroupPrefix, group, topic)
	if got := ev.tb.Committed(rgroup, rocketmqbroker.RocketTopic(topic)); got != n {
		t.Fatalf("committed %d offsets of %s, want %d", got, topic, n)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// TestReturnFetched: a delivery Next returned just as a pause began, and
// nobody took (broker.Returner), comes again after Resume as the same
// attempt (Redelivered 0), before the messages polled after it, once; an
// answer meanwhile is refused. Return refuses another consumer's
// delivery, an answered one, and one of a queue Next handed out a later
// message of (its queue's commit would stay behind that message).
func TestReturnFetched(t *testing.T) {
	const topic, group, n = "jobs", "workers", 8
	ev := newEnv(t, rocketmqbroker.Config{})
	brokertest.PublishKeyed(t, ev.b, topic, 0, n, func(int) string { return "k" }) // one queue
	spec := broker.ConsumerSpec{Topic: topic, Group: group, AckWait: time.Minute}
	ctx := brokertest.Ctx(t)

	c, err := ev.b.Consume(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := c.(broker.Returner)
	if !ok {
		t.Fatal("a RocketMQ consumer is not a Returner")
	}
	other := ev.consume(t, broker.ConsumerSpec{Topic: topic, Group: "others", AckWait: time.Minute})
	foreign := brokertest.Next(t, other)
	if r.Return(foreign) {
		t.Error("Return took another consumer's delivery")
	}
	brokertest.Ack(t, foreign)

	first := brokertest.ReturnPaused(t, c, rocketmqbroker.ErrSettled)
	ds := make([]broker.Delivery, 3)
	for i := range ds {
		ds[i] = brokertest.Next(t, c)
		if !bytes.Equal(ds[i].Message().Body, brokertest.Body(i)) || ds[i].Redelivered() != 0 {
			t.Fatalf("after Resume: %q (redelivered %d), want %q as a first delivery", ds[i].Message().Body, ds[i].Redelivered(), brokertest.Body(i))
		}
	}
	if ds[0].MessageID() != first.MessageID() {
		t.Errorf("returned delivery came as %s, want %s", ds[0].MessageID(), first.MessageID())
	}
	if r.Return(ds[1]) {
		t.Error("Return took a delivery whose queue has a later message handed out")
	}
	brokertest.Ack(t, ds[0])
	if r.Return(ds[0]) {
		t.Error("Return took an acked delivery")
	}
	// The last one handed out goes back, also while the consumer runs.
	if !r.Return(ds[2]) {
		t.Fatal("Return refused the last delivery of its queue")
	}
	brokertest.Ack(t, ds[1])
	want := brokertest.Bodies(2, n-2)
	got := brokertest.Collect(t, c, want)
	brokertest.ExactlyOnce(t, brokertest.Counts(got))
	for _, d := range got {
		if d.Redelivered() != 0 {
			t.Errorf("%q came with Redelivered %d", d.Message().Body, d.Redelivered())
		}
	}
	if got[0].MessageID() != ds[2].MessageID() {
		t.Errorf("first delivery after a Return: %s, want the returned %s", got[0].MessageID(), ds[2].MessageID())
	}
	brokertest.ExpectNothing(t, c, 300*time.Millisecond)
	ev.quiesce(t, pullsPerConsumer)
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rgroup := rocketmqbroker.ConsumerGroup(rocketmqbroker.DefaultGroupPrefix, group, topic)
	if !brokertest.Poll(func() bool { return ev.tb.Committed(rgroup, rocketmqbroker.RocketTopic(topic)) == n }) {
		t.Fatalf("committed %d offsets of %s, want %d", ev.tb.Committed(rgroup, rocketmqbroker.RocketTopic(topic)), topic, n)
	}
}

// TestReturnFetchedHandOver: at a handover, a delivery returned during the
// pause before the release (queue A) and one returned after it (queue B)
// are listed in their queue's tokens to be delivered again, not counted
// as held: the successor delivers them with Redelivered 0, once, skips
// what the old process's app acked, and in the end every queue is
// committed to its end.
func TestReturnFetchedHandOver(t *testing.T) {
	const topic, group = "jobs", "workers"
	ev := newEnv(t, rocketmqbroker.Config{})
	successor := newBroker(t, ev.tb, rocketmqbroker.Config{Logger: testLogger(t)})
	spec := broker.ConsumerSpec{Topic: topic, Group: group, AckWait: time.Minute}
	ctx := brokertest.Ctx(t)
	// Queue A gets messages 0..3 and 8, 9; queue B 4..7 and 10, 11.
	keyOf := func(i int) string {
		if i < 4 || i == 8 || i == 9 {
			return "a"
		}
		return "b"
	}
	brokertest.PublishKeyed(t, ev.b, topic, 0, 8, keyOf)

	old, err := ev.b.Consume(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	ds := map[int]broker.Delivery{}
	for range 8 {
		d := brokertest.Next(t, old)
		var i int
		if _, err := fmt.Sscanf(string(d.Message().Body), "m-%d", &i); err != nil {
			t.Fatal(err)
		}
		ds[i] = d
	}
	qa, _ := ds[0].(broker.Positioner).Position()
	qb, _ := ds[4].(broker.Positioner).Position()
	if qa == qb {
		t.Fatalf("keys a and b went to one queue (%d)", qa)
	}
	// Per queue: the first and third acked, the second held by the app,
	// the fourth (the last handed out) returned.
	for _, i := range []int{0, 2, 4, 6} {
		brokertest.Ack(t, ds[i])
	}
	if err := old.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if !old.(broker.Returner).Return(brokertest.Wrap(ds[3])) {
		t.Fatal("Return during a pause refused")
	}
	ev.quiesce(t, pullsPerConsumer)
	if err := old.(broker.Releaser).Release(ctx); err != nil {
		t.Fatal(err)
	}
	if !old.(broker.Returner).Return(brokertest.Wrap(ds[7])) {
		t.Fatal("Return after Release refused")
	}
	held := brokertest.Adopt(t, successor, map[int]broker.Delivery{1: ds[1], 5: ds[5]})

	brokertest.PublishKeyed(t, ev.b, topic, 8, 4, keyOf)
	next := brokertest.Consume(t, quietBroker{Broker: successor, ev: ev}, spec)
	want := map[string]bool{}
	for _, i := range []int{3, 7, 8, 9, 10, 11} {
		want[string(brokertest.Body(i))] = true
	}
	got := brokertest.Collect(t, next, want)
	brokertest.ExactlyOnce(t, brokertest.Counts(got))
	for _, d := range got {
		if d.Redelivered() != 0 {
			t.Errorf("%q came with Redelivered %d, want a first delivery", d.Message().Body, d.Redelivered())
		}
	}
	brokertest.ExpectNothing(t, next, 300*time.Millisecond)
	brokertest.Ack(t, held[1])
	brokertest.Ack(t, held[5])
	if err := next.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rgroup := rocketmqbroker.ConsumerGroup(rocketmqbroker.DefaultGroupPrefix, group, topic)
	if got := ev.tb.Committed(rgroup, rocketmqbroker.RocketTopic(topic)); got != 12 {
		t.Fatalf("committed %d offsets of %s, want 12", got, topic)
	}
}

// TestHandOverPartlyRead: a successor released before its consumer read
// all of what its predecessor handed over hands it on, so that a third
// process delivers every message once. One queue, offsets 0-11. The
// first process hands out 0-7; its app acks 2 and 5, holds 3, 4, 6 and
// 7, and nacks 0 and 1 after the release (listed again). The second
// process's consumer delivers 0 again (acked) and is released before it
// read the rest: with pull batches of 1 it read only 0; with batches of
// 4 it read 0-3 in one pull, bound 3, settled 2 and still had 1 in
// pending, not handed out, below the settled ones. Its app acks 4, nacks
// 6 and holds 3 and 7, all before the consumer reached them (but 3 in
// the batch of 4). The third process must then deliver 1 and 6 (with
// Redelivered 1) and 8-11, and settle 3 and 7 by their adopted
// deliveries: nothing twice, nothing lost.
func TestHandOverPartlyRead(t *testing.T) {
	for _, prefetch := range []int{4, 16} { // pull batches of 1 and 4
		t.Run(fmt.Sprintf("batch%d", prefetch/4), func(t *testing.T) {
			testHandOverPartlyRead(t, prefetch)
		})
	}
}

func testHandOverPartlyRead(t *testing.T, prefetch int) {
	const topic, group, n = "jobs", "workers", 12
	ev := newEnv(t, rocketmqbroker.Config{})
	second := newBroker(t, ev.tb, rocketmqbroker.Config{Logger: testLogger(t)})
	third := newBroker(t, ev.tb, rocketmqbroker.Config{Logger: testLogger(t)})
	brokertest.PublishKeyed(t, ev.b, topic, 0, n, func(int) string { return "one-queue" })
	spec := broker.ConsumerSpec{Topic: topic, Group: group, AckWait: time.Minute, Prefetch: prefetch}
	index := func(d broker.Delivery) int {
		t.Helper()
		var i int
		if _, err := fmt.Sscanf(string(d.Message().Body), "m-%05d", &i); err != nil {
			t.Fatal(err)
		}
		return i
	}
	release := func(c broker.Consumer) {
		t.Helper()
		ev.quiesce(t, pullsPerConsumer)
		if err := c.(broker.Releaser).Release(brokertest.Ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	handOver := func(to *rocketmqbroker.Broker, ds map[int]broker.Delivery, which ...int) map[int]broker.Delivery {
		t.Helper()
		held := map[int]broker.Delivery{}
		for _, i := range which {
			held[i] = ds[i]
		}
		return brokertest.Adopt(t, to, held)
	}

	// First process.
	first, err := ev.b.Consume(brokertest.Ctx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	ds := map[int]broker.Delivery{}
	for range 8 {
		d := brokertest.Next(t, first)
		ds[index(d)] = d
	}
	if len(ds) != 8 || ds[0] == nil || ds[7] == nil {
		t.Fatalf("first process got %d distinct messages, want 0-7", len(ds))
	}
	brokertest.Ack(t, ds[2])
	brokertest.Ack(t, ds[5])
	release(first)
	for _, i := range []int{0, 1} {
		if err := ds[i].Nack(brokertest.Ctx(t), 0); !errors.Is(err, broker.ErrClosed) {
			t.Fatalf("nack %d after the release: %v, want ErrClosed", i, err)
		}
	}
	held := handOver(second, ds, 3, 4, 6, 7)

	// Second process: reads 0 (and, with batches of 4, 1-3), then is
	// released.
	next, err := second.Consume(brokertest.Ctx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	d := brokertest.Next(t, next)
	if i := index(d); i != 0 || d.Redelivered() != 1 {
		t.Fatalf("second process delivered %d (redelivered %d) first, want 0 (1)", i, d.Redelivered())
	}
	brokertest.Ack(t, d)
	brokertest.Ack(t, held[4])
	if err := held[6].Nack(brokertest.Ctx(t), 0); err != nil {
		t.Fatal(err)
	}
	release(next)
	held = handOver(third, held, 3, 7)

	// Third process.
	last := brokertest.Consume(t, quietBroker{Broker: third, ev: ev}, spec)
	want := map[string]bool{}
	for _, i := range []int{1, 6, 8, 9, 10, 11} {
		want[string(brokertest.Body(i))] = true
	}
	got := brokertest.Collect(t, last, want)
	brokertest.ExactlyOnce(t, brokertest.Counts(got))
	for _, d := range got {
		if i := index(d); (i == 1 || i == 6) != (d.Redelivered() == 1) {
			t.Errorf("message %d came with Redelivered %d", i, d.Redelivered())
		}
	}
	brokertest.ExpectNothing(t, last, 300*time.Millisecond)
	brokertest.Ack(t, held[3])
	brokertest.Ack(t, held[7])
	if err := last.Close(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	rgroup := rocketmqbroker.ConsumerGroup(rocketmqbroker.DefaultGroupPrefix, group, topic)
	if got := ev.tb.Committed(rgroup, rocketmqbroker.RocketTopic(topic)); got != n {
		t.Fatalf("committed %d offsets of %s, want %d", got, topic, n)
	}
}
