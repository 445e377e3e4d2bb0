// Package sidecartest holds the helpers of tests that run real sidecars on
// real brokers: the msgmesh binary as a process, the broker kits each test
// runs on, SDK, HTTP and gRPC clients that fail the test on an error, and
// counters of what was published and consumed. msgmesh's own tests and the
// binary-level hot-upgrade tests of internal/upgrade share them, so that a
// sidecar is started, waited for and counted one way.
//
// Like net/http/httptest it imports "testing"; only tests may import it.
package sidecartest

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/internal/testbin"
)

// Logger keeps test output quiet unless MSGMESH_TEST_LOG is set: then it
// logs everything at debug level to stderr.
func Logger() *slog.Logger {
	if os.Getenv("MSGMESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Scaled stretches a wait bound under the race detector, which slows
// everything down several times.
func Scaled(d time.Duration) time.Duration {
	if testbin.Race {
		return 4 * d
	}
	return d
}

// WaitFor polls cond until it holds, and fails t if the (race-scaled)
// timeout passes first.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !WaitUntil(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", Scaled(timeout), what)
	}
}

// WaitUntil polls cond until it holds or the (race-scaled) timeout
// passes, and reports whether it held.
func WaitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(Scaled(timeout))
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}
