package brokertest

import (
	"testing"

	"github.com/msgmesh/msgmesh/internal/freeport"
)

// FreeAddr returns a loopback host:port that was free a moment ago, for a
// server that must come back on the same address after a stop, or a
// process told its address by a flag (freeport.Addr says how it is
// picked, below the ephemeral range).
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
