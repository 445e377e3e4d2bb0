package msgmesh_test

import (
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	return brokertest.FreeAddr(t)
}

// TestSIGKILLLosesNothing runs the real msgmesh binary with its embedded
// JetStream server, kills it with SIGKILL in the middle of a publish and
// consume run, and restarts it on the same data directory. The apps do not
// register again; every message the SDK saw acknowledged is consumed.
func TestSIGKILLLosesNothing(t *testing.T) {
	killRestart(t, "NATS (embedded) sidecar SIGKILL", 3000, nil)
}

// killRestart runs the msgmesh binary with extra flags (none: the embedded
// broker), kills it with SIGKILL once a third of n messages are acked,
// restarts it on the same data directory, and counts (runCounted): every
// acked message must be delivered, none answered "not stored" may be. The
// restarted sidecar must have reloaded the registration and restarted
// its upstream consumer before the apps reconnect. caughtUp, when set,
// asks the broker whether the group has consumed everything.
func killRestart(t *testing.T, name string, n int, caughtUp func(testing.TB) bool, extra ...string) figures {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	meshAddr, httpAddr := freePort(t), freePort(t)
	args := append([]string{"--data-dir", dataDir, "--listen", meshAddr, "--http", httpAddr,
		"--delivery-timeout", "2s", "--log-level", "warn"}, extra...)
	p := sidecartest.StartProc(t, bin, args...)
	sidecartest.WaitHealthy(t, p, httpAddr)
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	return runCounted(t, name, countedRun{
		meshAddr: meshAddr,
		n:        n,
		fault: func(t *testing.T, _ *ledger) {
			if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-p.Done
			p = sidecartest.StartProc(t, bin, args...)
			sidecartest.WaitHealthy(t, p, httpAddr)
			status, body := sidecartest.HTTPDo(t, http.MethodGet, "http://"+httpAddr+"/v1/registrations/orders", "", nil)
			if status != http.StatusOK || !strings.Contains(body, "g1") {
				t.Fatalf("registration did not survive the crash: %d %s", status, body)
			}
			if got := upstreamsAt(t, httpAddr); !got["g1:"+topic] {
				t.Fatalf("upstream consumer not restarted from stored registrations: %v", got)
			}
		},
		caughtUp: caughtUp,
	})
}
