package natsbroker_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
)

// TestPublishWhileReconnectingSendsNothing: a publish made while the
// connection to the server is down must not be left in nats.go's
// reconnect buffer, which would send it once the server is back although
// the publish already failed. It fails saying nothing was stored, and the
// server indeed never stores it. (Before the fix it failed with
// ErrUnavailable and was stored after the restart.)
func TestPublishWhileReconnectingSendsNothing(t *testing.T) {
	dir := t.TempDir()
	e := startAt(t, dir, "127.0.0.1:0")
	url := e.ClientURL()
	// The test's own connection, so that it can see the client notice
	// the server is gone.
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := natsbroker.New(brokertest.Ctx(t), natsbroker.Config{Conn: nc, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	brokertest.PublishN(t, b, "gap", 0, 1)

	e.Shutdown()
	if !brokertest.Poll(func() bool { return !nc.IsConnected() }) {
		t.Fatal("the client did not notice the server was gone")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, pubErr := b.Publish(ctx, &broker.Message{Topic: "gap", Body: []byte("during")})
	if !broker.NotStored(pubErr) || !errors.Is(pubErr, broker.ErrUnavailable) {
		t.Fatalf("Publish while reconnecting: %v, want ErrUnavailable (nothing sent)", pubErr)
	}

	e2 := startAt(t, dir, strings.TrimPrefix(url, "nats://"))
	// Once a later publish is stored, anything nats.go had buffered
	// was sent before it.
	if !brokertest.Poll(func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := b.Publish(ctx, &broker.Message{Topic: "gap", Body: []byte("after")})
		return err == nil
	}) {
		t.Fatal("publishing did not recover after the restart")
	}
	js := operator(t, e2)
	name, err := js.StreamNameBySubject(brokertest.Ctx(t), "gap")
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(brokertest.Ctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(brokertest.Ctx(t), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, string(m.Data))
	}
	if slices.Contains(stored, "during") || !slices.Contains(stored, "after") {
		t.Fatalf("the stream holds %q: want \"after\" and not \"during\", the publish answered \"not stored\"", stored)
	}
}
