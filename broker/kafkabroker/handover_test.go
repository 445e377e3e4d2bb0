package kafkabroker_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
)

// TestHandOverDelivery: deliveries an app holds when its process closes
// its consumer move to a successor Broker (another process's, on the same
// cluster) by their tokens. The successor's consumer reads the partition
// from the old commit and delivers neither the held messages (their
// inherited deliveries settle them, also when the app answered before the
// consumer read them) nor those the old process's app acked; the one the
// old process had nacked comes again with its count, and the messages
// after the handover come as usual. In the end the group's commit is past
// everything: nothing lost, nothing delivered twice.
func TestHandOverDelivery(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{Partitions: 1})
	successor := newBroker(t, ev.c, kafkabroker.Config{Partitions: 1})
	const topic, group = "jobs", "workers"
	brokertest.PublishN(t, ev.b, topic, 0, 10)
	spec := broker.ConsumerSpec{Topic: topic, Group: group, Prefetch: 2}

	// Old process: 0..7 handed out; 0, 2, 5 acked; 3 nacked (waits in
	// the retry queue); 1, 4, 6, 7 held by the app. 8 and 9 were not
	// handed out.
	old := brokertest.Consume(t, ev.b, spec)
	ds := make([]broker.Delivery, 8)
	for i := range ds {
		ds[i] = brokertest.Next(t, old)
	}
	for _, i := range []int{0, 2, 5} {
		brokertest.Ack(t, ds[i])
	}
	if err := ds[3].Nack(brokertest.Ctx(t), brokertest.WaitLong); err != nil {
		t.Fatal(err)
	}
	if _, ok := broker.As[broker.Portable](ds[1]); !ok {
		t.Fatal("a Kafka delivery is not Portable")
	}
	if _, ok := ds[1].(broker.Portable).Token(); ok {
		t.Fatal("a token while the consumer runs: its partition state is not final yet")
	}
	if err := old.Close(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, ev.c, group, topic, 0); got != 1 {
		t.Fatalf("committed after the old consumer closed: %d, want 1", got)
	}
	// The app acks 6 after the close (the session still read it): not
	// committable, but the handover counts it as acked.
	if err := ds[6].Ack(brokertest.Ctx(t)); err == nil {
		t.Error("an ack after Close was taken as committable")
	}
	held := brokertest.Adopt(t, successor, map[int]broker.Delivery{1: ds[1], 4: ds[4], 7: ds[7]})
	if _, err := successor.Adopt([]byte(`{"topic":"jobs"}`)); err == nil {
		t.Error("an inconsistent token was adopted")
	}
	// The app answers 1 before the successor's consumer runs.
	brokertest.Ack(t, held[1])
	if err := held[1].Ack(context.Background()); err == nil {
		t.Error("a second answer to an adopted delivery was taken")
	}

	next := brokertest.Consume(t, successor, spec)
	want := []struct {
		body        int
		redelivered int
	}{{3, 1}, {8, 0}, {9, 0}}
	for _, w := range want {
		d := brokertest.Next(t, next)
		if !bytes.Equal(d.Message().Body, brokertest.Body(w.body)) || d.Redelivered() != w.redelivered {
			t.Fatalf("successor delivered %q (redelivered %d), want %q (%d)", d.Message().Body, d.Redelivered(), brokertest.Body(w.body), w.redelivered)
		}
		brokertest.Ack(t, d)
	}
	brokertest.ExpectNothing(t, next, 300*time.Millisecond)
	// 4 and 7 are still with the app: the commit waits at 4.
	pollCommitted(t, ev.c, group, topic, 4)
	brokertest.Ack(t, held[4])
	brokertest.Ack(t, held[7])
	pollCommitted(t, ev.c, group, topic, 10)
}

// TestReturnFetched: a delivery Next returned just as a pause began, and
// nobody took (broker.Returner), comes again after Resume as the same
// attempt (Redelivered 0), before what was fetched after it, once. At a
// handover, one returned before the consumer closed and one returned
// after it are listed in the held delivery's token to be delivered
// again, not counted as held: the successor delivers them with
// Redelivered 0, once, skips the messages the old process's app acked,
// and in the end commits past everything.
func TestReturnFetched(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{Partitions: 1})
	successor := newBroker(t, ev.c, kafkabroker.Config{Partitions: 1})
	const topic, group = "jobs", "workers"
	brokertest.PublishN(t, ev.b, topic, 0, 10)
	spec := broker.ConsumerSpec{Topic: topic, Group: group, Prefetch: 4}
	ctx := brokertest.Ctx(t)

	c := brokertest.Consume(t, ev.b, spec)
	r, ok := c.(broker.Returner)
	if !ok {
		t.Fatal("a Kafka consumer is not a Returner")
	}
	other := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: topic, Group: "others", Prefetch: 4})
	if r.Return(brokertest.Next(t, other)) {
		t.Error("Return took another consumer's delivery")
	}

	// Pause and Resume: 0 comes again as the same attempt, then 1.
	first := brokertest.ReturnPaused(t, c, kafkabroker.ErrAnswered)
	for i := range 2 {
		d := brokertest.Next(t, c)
		if !bytes.Equal(d.Message().Body, brokertest.Body(i)) || d.Redelivered() != 0 {
			t.Fatalf("after Resume: %q (redelivered %d), want %q as a first delivery", d.Message().Body, d.Redelivered(), brokertest.Body(i))
		}
		if i == 0 && d.MessageID() != first.MessageID() {
			t.Errorf("returned delivery came as %s, want %s", d.MessageID(), first.MessageID())
		}
		brokertest.Ack(t, d)
	}
	acked := 2

	// Handover: 2..7 handed out; 2, 4, 6 acked; 3 held by the app; 5
	// returned at a pause, handed out again after Resume (a first
	// delivery still) and returned again at the next pause, before Close;
	// 7 returned only after Close (the sidecar's fetch loop may end after
	// it).
	ds := map[int]broker.Delivery{}
	for i := 2; i <= 6; i++ {
		ds[i] = brokertest.Next(t, c)
	}
	for _, i := range []int{2, 4, 6} {
		brokertest.Ack(t, ds[i])
	}
	acked += 3
	if err := c.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if !r.Return(brokertest.Wrap(ds[5])) {
		t.Fatal("Return during a pause refused")
	}
	if err := c.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if d := brokertest.Next(t, c); d.MessageID() != ds[5].MessageID() || d.Redelivered() != 0 {
		t.Fatalf("after Resume: %s (redelivered %d), want the returned %s as a first delivery", d.MessageID(), d.Redelivered(), ds[5].MessageID())
	} else {
		ds[5] = d
	}
	ds[7] = brokertest.Next(t, c)
	if err := c.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if !r.Return(ds[5]) {
		t.Fatal("Return of a delivery handed out again after a Return refused")
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !r.Return(ds[7]) {
		t.Fatal("Return after Close refused")
	}
	if got := committed(t, ev.c, group, topic, 0); got != 3 {
		t.Fatalf("committed after the old consumer closed: %d, want 3 (held back by 3)", got)
	}
	tok, ok := ds[3].(broker.Portable).Token()
	if !ok {
		t.Fatal("no token for the held delivery")
	}
	held, err := successor.Adopt(tok)
	if err != nil {
		t.Fatal(err)
	}

	next := brokertest.Consume(t, successor, spec)
	for _, i := range []int{5, 7, 8, 9} {
		d := brokertest.Next(t, next)
		if !bytes.Equal(d.Message().Body, brokertest.Body(i)) || d.Redelivered() != 0 {
			t.Fatalf("successor delivered %q (redelivered %d), want %q as a first delivery", d.Message().Body, d.Redelivered(), brokertest.Body(i))
		}
		brokertest.Ack(t, d)
		acked++
	}
	brokertest.ExpectNothing(t, next, 300*time.Millisecond)
	pollCommitted(t, ev.c, group, topic, 3)
	brokertest.Ack(t, held)
	if acked++; acked != 10 {
		t.Fatalf("%d acked, want 10", acked)
	}
	pollCommitted(t, ev.c, group, topic, 10)
}

// TestHandOverPartlyRead: a successor closed before its consumer read all
// of what its predecessor handed over hands it on, so that a third
// process delivers every message once. One partition, offsets 0-11. The
// first process hands out 0-7; its app acks 5, holds 3, 4, 6 and 7, and
// nacks 0, 1 and 2 after the close (listed again). The second process's
// consumer (prefetch 1) is closed before it read past the nacked ones:
//   - unassigned: it never consumes the topic, so the tokens come from
//     the inheritance itself, with its app's answers;
//   - read2: its fetcher read 0 and 1 and handed them out (0 waits in
//     the queue, the fetcher waits to queue 1), Next took nothing;
//   - read3: Next took 0, acked; the fetcher then read 1 and 2.
//
// Its app acks 4, nacks 6 and holds 3 and 7, all before the consumer
// reached them. The third process must then deliver what the second's
// app never saw (0 unless acked, 1, 2, 6) with Redelivered 1 and 8-11 as
// first deliveries, and settle 3 and 7 by their adopted deliveries:
// nothing twice, nothing lost.
func TestHandOverPartlyRead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		taken int // messages the second process's Next takes; -1: no consumer
	}{{"unassigned", -1}, {"read2", 0}, {"read3", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testHandOverPartlyRead(t, tc.taken)
		})
	}
}

func testHandOverPartlyRead(t *testing.T, taken int) {
	const topic, group, n = "jobs", "workers", 12
	ev := newEnv(t, kafkabroker.Config{Partitions: 1})
	second := newBroker(t, ev.c, kafkabroker.Config{Partitions: 1})
	third := newBroker(t, ev.c, kafkabroker.Config{Partitions: 1})
	brokertest.PublishN(t, ev.b, topic, 0, n)
	ctx := brokertest.Ctx(t)
	handOver := func(to *kafkabroker.Broker, ds map[int]broker.Delivery, which ...int) map[int]broker.Delivery {
		t.Helper()
		held := map[int]broker.Delivery{}
		for _, i := range which {
			held[i] = ds[i]
		}
		return brokertest.Adopt(t, to, held)
	}

	// First process.
	first := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: topic, Group: group, Prefetch: 16})
	ds := map[int]broker.Delivery{}
	for i := range 8 {
		ds[i] = brokertest.Next(t, first)
	}
	brokertest.Ack(t, ds[5])
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 2} {
		if err := ds[i].Nack(ctx, 0); err != nil {
			t.Fatalf("nack %d after the close: %v", i, err)
		}
	}
	held := handOver(second, ds, 3, 4, 6, 7)

	// Second process.
	var next broker.Consumer
	want := map[string]int{} // body: Redelivered of its one delivery in the third process
	if taken >= 0 {
		next = brokertest.Consume(t, second, broker.ConsumerSpec{Topic: topic, Group: group, Prefetch: 1})
		for range taken {
			d := brokertest.Next(t, next)
			if !bytes.Equal(d.Message().Body, brokertest.Body(0)) || d.Redelivered() != 1 {
				t.Fatalf("second process delivered %q (redelivered %d) first, want %q (1)", d.Message().Body, d.Redelivered(), brokertest.Body(0))
			}
			brokertest.Ack(t, d)
		}
		if !brokertest.Poll(func() bool { return kafkabroker.ReadTo(next, 0) == int64(2+taken) }) {
			t.Fatalf("the second process's fetcher read to %d, want %d", kafkabroker.ReadTo(next, 0), 2+taken)
		}
	}
	if taken < 1 {
		want[string(brokertest.Body(0))] = 1
	}
	for _, i := range []int{1, 2, 6} {
		want[string(brokertest.Body(i))] = 1
	}
	for i := 8; i < n; i++ {
		want[string(brokertest.Body(i))] = 0
	}
	brokertest.Ack(t, held[4])
	if err := held[6].Nack(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if next != nil {
		if err := next.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wantCommitted := int64(-1) // none: 0 is held back
	if taken == 1 {
		wantCommitted = 1
	}
	if got := committed(t, ev.c, group, topic, 0); got != wantCommitted {
		t.Fatalf("committed after the second process closed: %d, want %d", got, wantCommitted)
	}
	held = handOver(third, held, 3, 7)

	// Third process.
	last := brokertest.Consume(t, third, broker.ConsumerSpec{Topic: topic, Group: group, Prefetch: 16})
	bodies := map[string]bool{}
	for b := range want {
		bodies[b] = true
	}
	got := brokertest.Collect(t, last, bodies)
	brokertest.ExactlyOnce(t, brokertest.Counts(got))
	for _, d := range got {
		if w := want[string(d.Message().Body)]; d.Redelivered() != w {
			t.Errorf("third process delivered %q with Redelivered %d, want %d", d.Message().Body, d.Redelivered(), w)
		}
	}
	brokertest.ExpectNothing(t, last, 300*time.Millisecond)
	pollCommitted(t, ev.c, group, topic, 3)
	brokertest.Ack(t, held[3])
	brokertest.Ack(t, held[7])
	pollCommitted(t, ev.c, group, topic, n)
}
