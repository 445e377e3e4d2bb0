// Package brokertest holds test helpers shared by the broker adapters'
// tests and the sidecar's: waiting for a broker.Checker to change its
// mind while a real broker is stopped and started.
package brokertest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// WaitCheck polls c.Check (each call bounded by one second) until it
// succeeds (ready) or fails (!ready), and returns the last error. It fails
// the test if that does not happen within timeout.
func WaitCheck(t testing.TB, c broker.Checker, ready bool, timeout time.Duration) error {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Check(ctx)
		cancel()
		if (err == nil) == ready {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("Check did not turn ready=%v within %s; last: %v", ready, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreeAddr returns a loopback host:port that was free a moment ago, for a
// broker that must come back on the same address after a stop.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
