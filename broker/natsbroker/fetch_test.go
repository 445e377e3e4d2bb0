package natsbroker_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
)

// consumerInfo reads the durable consumer's state at the server.
func consumerInfo(t *testing.T, js jetstream.JetStream, stream, name string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx := brokertest.Ctx(t)
	cons, err := js.Consumer(ctx, stream, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestPrefetchWindow: the server never delivers more than Prefetch
// messages beyond those Next returned (its ack-pending count, since
// nothing is acked), and the window is filled again as Next takes from it.
func TestPrefetchWindow(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	const window, n = 10, 100
	brokertest.PublishN(t, ev.b, "window", 0, n)
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: "window", Group: "g", Prefetch: window, AckWait: 10 * brokertest.WaitLong})
	for returned := 1; returned <= 40; returned++ {
		brokertest.Next(t, c) // not acked: every delivery stays pending
		info := consumerInfo(t, ev.js, "MESH_window", "g__window")
		if got := info.NumAckPending; got > returned+window {
			t.Fatalf("after %d returned, %d delivered: more than the window of %d", returned, got, window)
		}
	}
	// Taking 40 left room for the window to be asked for again.
	if !brokertest.Poll(func() bool {
		return consumerInfo(t, ev.js, "MESH_window", "g__window").NumAckPending >= 40+window/2
	}) {
		t.Fatalf("the window was not asked for again: %+v", consumerInfo(t, ev.js, "MESH_window", "g__window"))
	}
}

// TestLostPullRequestsAreDropped: requests sent while the connection is
// down wait in the client's reconnect buffer and get no answer; the
// fetcher takes them as lost and asks again on a new inbox, twice before
// the connection is back. On reconnect the buffer reaches the server
// whole, but only the last inbox has a subscriber: the server fills one
// window, not one per inbox, and the consumer gets each message once, none
// dropped on a full channel to come again after the ack wait.
//
// The connection breaks through a relay that passes nothing until healed
// (a server that shuts down answers its requests instead, 409), and the
// messages are published once it is back.
func TestLostPullRequestsAreDropped(t *testing.T) {
	ev := newRelayEnv(t, natsbroker.Config{})
	const window, n = 4, 40
	brokertest.PublishN(t, ev.b, "lost", 0, 1)
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: "lost", Group: "g", Prefetch: window, AckWait: 10 * brokertest.WaitLong})
	brokertest.Collect(t, c, brokertest.Bodies(0, 1))

	ev.relay.Cut()
	if err := natsbroker.ForceReconnect(ev.b); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(brokertest.Ctx(t))
	waited := make(chan error, 1)
	go func() { _, err := c.Next(ctx); waited <- err }()
	if !brokertest.Poll(func() bool { return natsbroker.PullsGivenUp(c) >= 2 }) {
		ev.relay.Heal()
		t.Fatalf("requests given up %d times, want 2", natsbroker.PullsGivenUp(c))
	}
	cancel()
	if err := <-waited; !errors.Is(err, context.Canceled) {
		t.Fatalf("Next during the outage: %v, want canceled", err)
	}

	ev.relay.Heal()
	if !brokertest.Poll(func() bool {
		pctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := ev.b.Publish(pctx, &broker.Message{Topic: "lost", Body: brokertest.Body(1)})
		return err == nil
	}) {
		t.Fatal("publishing did not recover after the outage")
	}
	brokertest.PublishN(t, ev.b, "lost", 2, n-2)
	if !brokertest.Poll(func() bool {
		return consumerInfo(t, ev.js, "MESH_lost", "g__lost").NumPending == uint64(n-1-window)
	}) {
		t.Fatalf("want one window of %d delivered: %+v", window, consumerInfo(t, ev.js, "MESH_lost", "g__lost"))
	}

	var ds []broker.Delivery
	for range n - 1 {
		d := brokertest.Next(t, c)
		if d.Redelivered() != 0 {
			t.Errorf("%s redelivered %d times", d.MessageID(), d.Redelivered())
		}
		brokertest.Ack(t, d)
		ds = append(ds, d)
	}
	counts := brokertest.Counts(ds)
	brokertest.ExactlyOnce(t, counts)
	for k := range brokertest.Bodies(1, n-1) {
		if counts[k] == 0 {
			t.Errorf("%s not delivered", k)
		}
	}
}

// TestEmptyMessageWithStatusHeaderIsDelivered: another producer's message
// with no body and a Status header looks like the server's status to a
// reader that goes by headers alone; it is a delivery (it has an ack
// subject), returned in its place and settled like any other.
func TestEmptyMessageWithStatusHeaderIsDelivered(t *testing.T) {
	ev := newEnv(t, natsbroker.Config{})
	ctx := brokertest.Ctx(t)
	brokertest.PublishN(t, ev.b, "status", 0, 1)
	m := nats.NewMsg("status")
	m.Header.Set("Status", "408")
	m.Header.Set("Description", "Request Timeout")
	if _, err := ev.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	brokertest.PublishN(t, ev.b, "status", 1, 1)
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: "status", Group: "g", AckWait: 10 * brokertest.WaitLong})
	var got []string
	for range 3 {
		d := brokertest.Next(t, c)
		brokertest.Ack(t, d)
		got = append(got, string(d.Message().Body))
		if len(d.Message().Body) == 0 {
			if h := d.Message().Headers; len(h) != 2 || h[1].Key != "Status" || h[1].Value != "408" {
				t.Errorf("empty message's headers %v, want Description and Status", h)
			}
		}
	}
	if want := []string{string(brokertest.Body(0)), "", string(brokertest.Body(1))}; !slices.Equal(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}
}
