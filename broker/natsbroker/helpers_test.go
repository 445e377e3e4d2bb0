package natsbroker_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
)

// The helpers every adapter's tests use (publishing and collecting
// numbered messages, waits with a deadline) are in package brokertest;
// these are the NATS-only ones.

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestConformance runs the broker conformance suite on an embedded
// JetStream server.
func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t testing.TB) broker.Broker { return newEnv(t, natsbroker.Config{}).b })
}

// env is one embedded server and a Broker on it.
type env struct {
	e  *natsbroker.Embedded
	b  *natsbroker.Broker
	js jetstream.JetStream // an operator's view of the server
}

// newEnv starts a server and a Broker connected over TCP.
func newEnv(t testing.TB, cfg natsbroker.Config) *env {
	t.Helper()
	e := natstest.Start(t)
	cfg.URL = e.ClientURL()
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	b := brokertest.Open(t, func(ctx context.Context) (*natsbroker.Broker, error) { return natsbroker.New(ctx, cfg) })
	return &env{e: e, b: b, js: operator(t, e)}
}

// operator returns a JetStream handle on its own in-process connection.
func operator(t testing.TB, e *natsbroker.Embedded) jetstream.JetStream {
	t.Helper()
	nc, err := e.Connect()
	return jetStreamOn(t, nc, err)
}

// jetStreamOn returns JetStream on nc, closed at cleanup; err is the
// dial's, which fails t.
func jetStreamOn(t testing.TB, nc *nats.Conn, err error) jetstream.JetStream {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// streamNames lists the streams on the server.
func streamNames(t testing.TB, js jetstream.JetStream) []string {
	t.Helper()
	var names []string
	l := js.StreamNames(brokertest.Ctx(t))
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		t.Fatal(err)
	}
	return names
}

// startAt starts an embedded server storing in dir and listening on addr
// ("127.0.0.1:0" for a free port; the same address again to restart it
// where clients find it), shut down at cleanup.
func startAt(t testing.TB, dir, addr string) *natsbroker.Embedded {
	t.Helper()
	e, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{StoreDir: dir, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

// TestConformanceBatched runs the suite with atomic batches on, as a
// sidecar runs with an embedded server that syncs every write.
func TestConformanceBatched(t *testing.T) {
	brokertest.Run(t, func(t testing.TB) broker.Broker { return newEnv(t, natsbroker.Config{MaxBatch: 64}).b })
}
