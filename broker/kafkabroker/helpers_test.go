package kafkabroker_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
)

// The helpers every adapter's tests use (publishing and collecting
// numbered messages, waits with a deadline) are in package brokertest;
// these are the Kafka-only ones.

// testLog discards logs unless KAFKABROKER_TEST_LOG is set.
var testLog = func() *slog.Logger {
	if os.Getenv("KAFKABROKER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}()

// TestConformance runs the broker conformance suite on a kfake cluster.
func TestConformance(t *testing.T) {
	t.Parallel()
	brokertest.Run(t, func(t testing.TB) broker.Broker { return newEnv(t, kafkabroker.Config{}).b })
}

// env is one kfake cluster and a Broker on it.
type env struct {
	c *kfake.Cluster
	b *kafkabroker.Broker
}

// newEnv starts a cluster and a Broker on it; cfg.Brokers and a nil
// cfg.Logger are filled in.
func newEnv(t testing.TB, cfg kafkabroker.Config, opts ...kfake.Opt) *env {
	t.Helper()
	c := kafkatest.Start(t, opts...)
	return &env{c: c, b: newBroker(t, c, cfg)}
}

// newBroker is a second (or first) Broker on cluster c, closed at cleanup.
func newBroker(t testing.TB, c *kfake.Cluster, cfg kafkabroker.Config) *kafkabroker.Broker {
	t.Helper()
	cfg.Brokers = kafkatest.Addrs(c)
	if cfg.Logger == nil {
		cfg.Logger = testLog
	}
	return brokertest.Open(t, func(ctx context.Context) (*kafkabroker.Broker, error) { return kafkabroker.New(ctx, cfg) })
}
