// Package testbroker starts an rmqtest RocketMQ test broker for tests of
// any msgmesh package. It is separate from rmqtest so that the
// rmq-testbroker binary does not link package testing.
package testbroker

import (
	"testing"

	"github.com/msgmesh/msgmesh/internal/rmqtest"
)

// Start runs a test broker (name server and broker on 127.0.0.1, free
// ports) with cfg and closes it in t.Cleanup. Zero cfg fields get
// rmqtest's defaults; in particular the data is in memory unless
// cfg.DataDir is set. Point clients at Broker.NameServer().
func Start(t testing.TB, cfg rmqtest.Config) *rmqtest.Broker {
	t.Helper()
	b, err := rmqtest.Start(cfg)
	if err != nil {
		t.Fatalf("testbroker: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("testbroker: Close: %v", err)
		}
	})
	return b
}
