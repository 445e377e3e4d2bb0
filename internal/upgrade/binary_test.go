package upgrade_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/internal/syncbuf"
	"github.com/msgmesh/msgmesh/internal/testbin"
)

// The binary-level hot-upgrade tests run the real msgmesh binary: an old
// process, and a new one started with --upgrade on the same data directory.

// buildBinary compiles cmd/msgmesh once per test binary run.
func buildBinary() (string, error) { return testbin.Build("github.com/msgmesh/msgmesh/cmd/msgmesh") }

// proc is msgmesh running as a child process.
type proc struct {
	cmd  *exec.Cmd
	log  *syncbuf.Buffer
	done chan struct{}
}

// sidecarArgs are the flags of one sidecar: its data directory and its
// own mesh, HTTP and gRPC ports.
type sidecarArgs struct {
	http string
	args []string
}

func newSidecarArgs(t *testing.T, extra ...string) sidecarArgs {
	h := freeAddr(t)
	return sidecarArgs{http: h, args: slices.Concat([]string{"--data-dir", t.TempDir(), "--listen", freeAddr(t), "--http", h,
		"--grpc", freeAddr(t), "--log-level", "info"}, extra)}
}

// start runs the binary with a's flags (and more) and waits until it is
// healthy. t.Cleanup kills it and fails the test for a data race it reported.
func (a sidecarArgs) start(t *testing.T, more ...string) *proc {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: exec.Command(bin, slices.Concat(a.args, more)...), log: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd.Stderr = p.log
	p.cmd.Env = append(os.Environ(), "GORACE=exitcode=0")
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }() // ends with the process
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if strings.Contains(p.log.String(), "WARNING: DATA RACE") {
			t.Errorf("data race in the msgmesh binary:\n%s", p.log.String())
		} else if t.Failed() {
			t.Logf("msgmesh %v log:\n%s", p.cmd.Args[1:], p.log.String())
		}
	})
	waitFor(t, "msgmesh to answer /healthz", func() bool {
		select {
		case <-p.done:
			t.Fatalf("msgmesh exited before it was healthy:\n%s", p.log.String())
		default:
		}
		resp, err := http.Get("http://" + a.http + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// upgrade starts a successor with --upgrade, waits until old handed over
// and exited 0 and the successor is healthy, and returns the successor and
// the time from its start to old's exit.
func (a sidecarArgs) upgrade(t *testing.T, old *proc) (*proc, time.Duration) {
	t.Helper()
	start := time.Now()
	next := a.start(t, "--upgrade")
	select {
	case <-old.done:
	case <-time.After(waitLong):
		t.Fatalf("the old process did not hand over and exit:\n%s", old.log.String())
	}
	gone := time.Since(start)
	if code := old.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the old process exited %d:\n%s", code, old.log.String())
	}
	return next, gone
}

// waitLong bounds every wait; generous for -race binaries on a busy
// machine. Nothing waits this long when the code is right.
const waitLong = 90 * time.Second

// waitFor polls cond until it holds, failing t after waitLong.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string { return brokertest.FreeAddr(t) }

// writeConfig writes a config file for msgmesh --config.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "msgmesh.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
