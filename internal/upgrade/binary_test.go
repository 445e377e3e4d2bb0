package upgrade_test

import (
	"slices"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// The binary-level hot-upgrade tests run the real msgmesh binary: an old
// process, and a new one started with --upgrade on the same data directory.
// internal/sidecartest builds and runs it, as for msgmesh's own tests.

// sidecarArgs are the flags of one sidecar: its data directory and its
// own mesh, HTTP and gRPC ports.
type sidecarArgs struct {
	http string
	args []string
}

func newSidecarArgs(t *testing.T, extra ...string) sidecarArgs {
	h := brokertest.FreeAddr(t)
	return sidecarArgs{http: h, args: slices.Concat([]string{"--data-dir", t.TempDir(), "--listen", brokertest.FreeAddr(t), "--http", h,
		"--grpc", brokertest.FreeAddr(t), "--log-level", "info"}, extra)}
}

// start runs the binary with a's flags (and more) and waits until it is
// healthy. t.Cleanup kills it and fails the test for a data race it reported.
func (a sidecarArgs) start(t *testing.T, more ...string) *sidecartest.Proc {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	p := sidecartest.StartProc(t, build(t), slices.Concat(a.args, more)...)
	sidecartest.WaitHealthy(t, p, a.http)
	return p
}

// upgrade starts a successor with --upgrade, waits until old handed over
// and exited 0 and the successor is healthy, and returns the successor and
// the time from its start to old's exit.
func (a sidecarArgs) upgrade(t *testing.T, old *sidecartest.Proc) (*sidecartest.Proc, time.Duration) {
	t.Helper()
	return sidecartest.UpgradeFrom(t, build(t), a.args, old, a.http)
}

// build is the msgmesh binary, built once per test binary run.
func build(t *testing.T) string {
	t.Helper()
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// waitLong bounds the waits for traffic to flow and for a change to show
// (race-scaled by sidecartest.WaitFor); generous for -race binaries on a
// busy machine. Nothing waits this long when the code is right.
const waitLong = 90 * time.Second
