package natsbroker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
)

// TestHandOverDelivery: a delivery taken by one Broker is settled by
// another (a successor process's, on its own connection) from its token:
// an adopted ack is final, an adopted nack redelivers at once, and the
// adopted delivery keeps the message's id, count and time.
func TestHandOverDelivery(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	successor := brokertest.Open(t, func(ctx context.Context) (*natsbroker.Broker, error) {
		return natsbroker.New(ctx, natsbroker.Config{URL: ev.e.ClientURL(), Logger: quietLog})
	})
	brokertest.PublishN(t, ev.b, "jobs", 0, 2)
	// AckWait far beyond the test: a redelivery comes from the adopted nack.
	spec := broker.ConsumerSpec{Topic: "jobs", Group: "g", Prefetch: 1, AckWait: 10 * brokertest.WaitLong}
	c := brokertest.Consume(t, ev.b, spec)

	adopt := func(d broker.Delivery) broker.Delivery {
		t.Helper()
		tok, ok := broker.As[broker.Portable](d)
		if !ok {
			t.Fatal("a NATS delivery is not Portable")
		}
		b, ok := tok.Token()
		if !ok {
			t.Fatal("no token")
		}
		a, err := successor.Adopt(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := broker.As[broker.Inherited](a); !ok {
			t.Error("adopted delivery is not Inherited")
		}
		if a.MessageID() != d.MessageID() || a.Redelivered() != d.Redelivered() || !a.Timestamp().Equal(d.Timestamp()) {
			t.Errorf("adopted %s/%d/%s, want %s/%d/%s", a.MessageID(), a.Redelivered(), a.Timestamp(), d.MessageID(), d.Redelivered(), d.Timestamp())
		}
		return a
	}

	first := brokertest.Next(t, c)
	a := adopt(first)
	if err := a.Nack(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Ack(context.Background()); err == nil {
		t.Error("a second answer to an adopted delivery was taken")
	}
	// Redelivered at once, then acked through the successor for good.
	var again broker.Delivery
	for sawSecond := false; again == nil || !sawSecond; {
		d := brokertest.Next(t, c)
		switch {
		case string(d.Message().Body) != string(first.Message().Body):
			brokertest.Ack(t, d) // the second message
			sawSecond = true
		case d.Redelivered() != 1:
			t.Fatalf("the nacked message came with redelivered %d, want 1", d.Redelivered())
		default:
			again = d
		}
	}
	if err := adopt(again).Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !brokertest.Poll(func() bool {
		info, err := ev.js.Consumer(context.Background(), "MESH_jobs", "g__jobs")
		if err != nil {
			return false
		}
		i, err := info.Info(context.Background())
		return err == nil && i.NumAckPending == 0 && i.NumPending == 0
	}) {
		t.Fatal("messages still pending after the adopted ack")
	}
	brokertest.ExpectNothing(t, c, 300*time.Millisecond)

	for _, bad := range []string{`{`, `{"reply":"orders.created"}`, `{"reply":"$JS.ACK.a b"}`} {
		if _, err := successor.Adopt([]byte(bad)); !errors.Is(err, broker.ErrRejected) {
			t.Errorf("Adopt(%s): %v, want ErrRejected", bad, err)
		}
	}
}
