// Package natstest starts a real, embedded NATS JetStream server for tests
// of any msgmesh package.
package natstest

import (
	"testing"

	"github.com/msgmesh/msgmesh/broker/natsbroker"
)

// Start runs an embedded JetStream server with a TCP listener on
// 127.0.0.1:0 in t.TempDir(), shut down by t.Cleanup. Connect to it with
// Embedded.Connect (in-process) or Embedded.ClientURL (TCP).
func Start(t testing.TB) *natsbroker.Embedded {
	t.Helper()
	e, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{
		StoreDir: t.TempDir(),
		Listen:   "127.0.0.1:0",
	})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e
}
