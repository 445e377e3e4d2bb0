package rocketmqbroker_test

import (
	"context"
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
