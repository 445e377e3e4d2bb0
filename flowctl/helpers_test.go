package flowctl_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
)

// newBroker starts an embedded NATS JetStream server and connects a real
// broker adapter to it.
func newBroker(t *testing.T) *natsbroker.Broker {
	t.Helper()
	e := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	b, err := natsbroker.New(ctx, natsbroker.Config{URL: e.ClientURL(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
