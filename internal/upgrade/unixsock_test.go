package upgrade_test

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// TestHotUpgradeUnixSocket: the mesh listener on a unix socket (--listen
// unix:/path) starts over a stale socket file a dead process left, makes
// its file 0600, refuses a second sidecar given the same path, moves to
// the successor in two hot upgrades in a row with apps publishing and
// consuming through it (no reconnect, nothing lost or doubled) while the
// file stays the one first bound (the old process does not unlink it), and
// is removed when the last process stops on SIGTERM.
func TestHotUpgradeUnixSocket(t *testing.T) {
	bin, args, _, httpAddr := sidecartest.UpgradeSetup(t, nil)
	// t.TempDir's path can pass the 108-byte limit of a socket address.
	dir, err := os.MkdirTemp("", "mm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "mesh.sock")
	addr := "unix:" + sock
	args = withFlag(args, "--listen", addr)

	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close() // the file stays, nobody listens: a crashed sidecar's

	old := sidecartest.StartProc(t, bin, args...)
	sidecartest.WaitHealthy(t, old, httpAddr)
	bound, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if bound.Mode().Type() != os.ModeSocket || bound.Mode().Perm() != 0o600 {
		t.Fatalf("socket file mode %v, want a socket with 0600", bound.Mode())
	}

	// Another sidecar (its own data directory and ports) given the same
	// socket path refuses to start and leaves the socket alone.
	other := sidecartest.StartProc(t, bin, "--data-dir", t.TempDir(), "--listen", addr, "--http", "127.0.0.1:0", "--log-level", "warn")
	select {
	case <-other.Done:
	case <-time.After(sidecartest.Scaled(60 * time.Second)):
		t.Fatal("a second sidecar on the same socket path did not exit")
	}
	if code := other.Cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(other.Output(), "a running process listens on the socket") {
		t.Fatalf("second sidecar on the same socket: exit %d, stderr:\n%s", code, other.Output())
	}

	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	tr := sidecartest.StartTraffic(t, addr, "g1", topic)
	for round := 0; round < 2; round++ {
		before := tr.AckedCount()
		sidecartest.WaitFor(t, waitLong, "traffic to flow", func() bool { return tr.AckedCount() > before+300 })
		old, _ = sidecartest.UpgradeFrom(t, bin, args, old, httpAddr)
		now, err := os.Stat(sock)
		if err != nil || !os.SameFile(bound, now) {
			t.Fatalf("after upgrade %d the socket file is not the one first bound (%v)", round, err)
		}
		if strings.Contains(old.Output(), "listen "+sock) {
			t.Fatalf("the successor bound the socket anew:\n%s", old.Output())
		}
	}
	before := tr.AckedCount()
	sidecartest.WaitFor(t, waitLong, "traffic to flow after the upgrades", func() bool { return tr.AckedCount() > before+300 })
	tr.Finish(t)

	if err := old.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.Done:
	case <-time.After(sidecartest.Scaled(60 * time.Second)):
		t.Fatal("the sidecar did not stop on SIGTERM")
	}
	if code := old.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("sidecar exited %d on SIGTERM", code)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("after a clean shutdown the socket file is still there (%v)", err)
	}
}
