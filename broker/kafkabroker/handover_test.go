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
	held := map[int]broker.Delivery{}
	for _, i := range []int{1, 4, 7} {
		tok, ok := ds[i].(broker.Portable).Token()
		if !ok {
			t.Fatalf("no token for held delivery %d", i)
		}
		a, err := successor.Adopt(tok)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := a.(broker.Inherited); !ok {
			t.Error("adopted delivery is not Inherited")
		}
		if a.MessageID() != ds[i].MessageID() || !a.Timestamp().Equal(ds[i].Timestamp()) {
			t.Errorf("adopted %s/%s, want %s/%s", a.MessageID(), a.Timestamp(), ds[i].MessageID(), ds[i].Timestamp())
		}
		held[i] = a
	}
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
