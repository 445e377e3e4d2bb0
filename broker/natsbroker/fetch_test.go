package natsbroker_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

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

// TestLostPullRequestsAreDropped: requests sent while the server is down
// wait in the client's reconnect buffer and never get an answer; the
// fetcher takes them as lost and asks again on a new inbox, twice before
// the server is back. On reconnect the buffer reaches the server whole,
// but only the last inbox has a subscriber: the consumer gets each message
// once, none dropped on a full channel to come again after the ack wait.
func TestLostPullRequestsAreDropped(t *testing.T) {
	dir := t.TempDir()
	e := startAt(t, dir, "127.0.0.1:0")
	url := e.ClientURL()
	b := brokertest.Open(t, func(ctx context.Context) (*natsbroker.Broker, error) {
		return natsbroker.New(ctx, natsbroker.Config{URL: url, Logger: quietLog})
	})
	const window, n = 4, 40
	brokertest.PublishN(t, b, "lost", 0, n)
	c := brokertest.Consume(t, b, broker.ConsumerSpec{Topic: "lost", Group: "g", Prefetch: window, AckWait: 10 * brokertest.WaitLong})
	ds := brokertest.Collect(t, c, brokertest.Bodies(0, 1)) // the rest of the window waits, fetched

	e.Shutdown()
	var (
		wg  sync.WaitGroup
		got []broker.Delivery
	)
	wg.Go(func() {
		for range n - 1 {
			d, err := c.Next(brokertest.Ctx(t))
			if err != nil {
				t.Errorf("Next: %v", err)
				return
			}
			got = append(got, d)
		}
	})
	if !brokertest.Poll(func() bool { return natsbroker.PullsGivenUp(c) >= 2 }) {
		t.Fatalf("requests given up %d times, want 2", natsbroker.PullsGivenUp(c))
	}
	startAt(t, dir, strings.TrimPrefix(url, "nats://"))
	wg.Wait()
	for _, d := range got {
		if d.Redelivered() != 0 {
			t.Errorf("%s redelivered %d times", d.MessageID(), d.Redelivered())
		}
		brokertest.Ack(t, d)
	}
	counts := brokertest.Counts(append(ds, got...))
	brokertest.ExactlyOnce(t, counts)
	for k := range brokertest.Bodies(0, n) {
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
