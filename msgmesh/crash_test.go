package msgmesh_test

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/internal/testbin"
)

// buildSidecar compiles cmd/msgmesh once per test binary run.
func buildSidecar() (string, error) { return testbin.Build("github.com/msgmesh/msgmesh/cmd/msgmesh") }

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	return brokertest.FreeAddr(t)
}

// sidecarProc is msgmesh running as a child process.
type sidecarProc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer // read it through output while the process runs
	out    *lockedWriter
	done   chan struct{}
}

// output is what the process wrote to stderr so far.
func (p *sidecarProc) output() string { return p.out.String() }

func startProc(t testing.TB, bin string, args ...string) *sidecarProc {
	t.Helper()
	return startProcEnv(t, nil, bin, args...)
}

// startProcEnv starts the binary with extra environment variables.
// Unless args set --grpc, the gRPC API listens on a port of its own
// choosing, not on the default 7603 that parallel tests would share.
func startProcEnv(t testing.TB, env []string, bin string, args ...string) *sidecarProc {
	t.Helper()
	if !slices.Contains(args, "--grpc") {
		args = append(slices.Clip(args), "--grpc", "127.0.0.1:0")
	}
	p := &sidecarProc{cmd: exec.Command(bin, args...), stderr: &bytes.Buffer{}, done: make(chan struct{})}
	// A race-built binary reports races on stderr without changing its exit
	// code; checkRaces fails the test for any race but the known ones of
	// rocketmq-client-go v2.1.2's own shutdown (docs/brokers.md).
	p.cmd.Env = append(append(os.Environ(), "GORACE=exitcode=0"), env...)
	p.out = &lockedWriter{w: p.stderr}
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		p.checkRaces(t)
		if t.Failed() {
			t.Logf("sidecar stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

// checkRaces fails t for every data race the process reported, except
// those wholly inside rocketmq-client-go, whose v2.1.2 shutdown races with
// its own rebalance goroutines (a client bug the adapter cannot reach; the
// one with its pull goroutines is patched, third_party/rocketmq-client-go).
func (p *sidecarProc) checkRaces(t testing.TB) {
	t.Helper()
	out := p.stderr.String()
	for _, block := range strings.Split(out, "==================") {
		if !strings.Contains(block, "WARNING: DATA RACE") {
			continue
		}
		if raceInside(block, "github.com/apache/rocketmq-client-go/") {
			t.Logf("known rocketmq-client-go race in the sidecar binary (its shutdown vs its rebalance goroutines)")
			continue
		}
		t.Errorf("data race in the msgmesh binary:\n%s", block)
	}
}

// raceInside reports whether both accesses of a race report happen in
// code under pkg: the first frame of each access stack that is not the
// runtime's.
func raceInside(report, pkg string) bool {
	lines := strings.Split(report, "\n")
	accesses := 0
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if !(strings.HasPrefix(l, "Write at") || strings.HasPrefix(l, "Read at") || strings.HasPrefix(l, "Previous write at") || strings.HasPrefix(l, "Previous read at")) {
			continue
		}
		accesses++
		for _, f := range lines[i+1:] {
			f = strings.TrimSpace(f)
			if f == "" || strings.HasPrefix(f, "/") || strings.HasPrefix(f, "runtime.") || strings.HasPrefix(f, "sync/atomic.") || strings.HasPrefix(f, "internal/") {
				continue
			}
			if !strings.HasPrefix(f, pkg) {
				return false
			}
			break
		}
	}
	return accesses > 0
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// String returns what was written so far, while writes may go on.
func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func waitHealthy(t testing.TB, p *sidecarProc, httpAddr string) {
	t.Helper()
	waitFor(t, 30*time.Second, "the sidecar to answer /healthz", func() bool {
		select {
		case <-p.done:
			t.Fatalf("the sidecar exited before it was healthy:\n%s", p.stderr.String())
		default:
		}
		return healthy(httpAddr)
	})
}

// healthy says whether the sidecar's /healthz answers 200.
func healthy(httpAddr string) bool {
	resp, err := http.Get("http://" + httpAddr + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
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
	bin, err := buildSidecar()
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	meshAddr, httpAddr := freePort(t), freePort(t)
	args := append([]string{"--data-dir", dataDir, "--listen", meshAddr, "--http", httpAddr,
		"--delivery-timeout", "2s", "--log-level", "warn"}, extra...)
	p := startProc(t, bin, args...)
	waitHealthy(t, p, httpAddr)
	if status, body := registerAt(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	return runCounted(t, name, countedRun{
		meshAddr: meshAddr,
		n:        n,
		fault: func(t *testing.T, _ *ledger) {
			if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-p.done
			p = startProc(t, bin, args...)
			waitHealthy(t, p, httpAddr)
			status, body := httpDo(t, http.MethodGet, "http://"+httpAddr+"/v1/registrations/orders", "", nil)
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

// TestRaceInside: the filter that lets a known third-party race through
// must still catch a race whose access is in msgmesh's own code.
func TestRaceInside(t *testing.T) {
	const client = "github.com/apache/rocketmq-client-go/"
	known := `WARNING: DATA RACE
Write at 0x00c0001e7040 by main goroutine:
  runtime.closechan()
      /usr/local/go/src/runtime/chan.go:414 +0x0
  github.com/apache/rocketmq-client-go/v2/consumer.(*defaultConsumer).shutdown.func1()
      /x/consumer.go:302 +0x1a8
  github.com/msgmesh/msgmesh/broker/rocketmqbroker.(*consumer).shutdown()
      /x/consumer.go:277 +0x183

Previous read at 0x00c0001e7040 by goroutine 182:
  runtime.chansend()
      /usr/local/go/src/runtime/chan.go:176 +0x0
  github.com/apache/rocketmq-client-go/v2/consumer.(*processQueue).putMessage()
      /x/process_queue.go:128 +0x4a4
`
	ours := strings.Replace(known, "github.com/apache/rocketmq-client-go/v2/consumer.(*processQueue).putMessage()",
		"github.com/msgmesh/msgmesh/msgmesh.(*session).push()", 1)
	if !raceInside(known, client) {
		t.Error("a race wholly inside the client was not recognised")
	}
	if raceInside(ours, client) {
		t.Error("a race with one access in msgmesh was let through")
	}
}
