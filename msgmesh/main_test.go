package msgmesh_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/internal/syncbuf"
)

// natsProcEnv, when set, makes the test binary run as a NATS JetStream
// server instead of running tests: its value is "<listen host:port>
// <store dir>". startNATSProc uses it to get a broker in a process of its
// own, which a test can kill with SIGKILL, without building a binary.
const natsProcEnv = "MSGMESH_TEST_NATS_SERVER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(natsProcEnv); spec != "" {
		os.Exit(serveNATS(spec))
	}
	os.Exit(m.Run())
}

// serveNATS runs the real nats-server (natsbroker's embedded server, over
// TCP) until the process is killed, and says "ready" on stdout once it
// accepts connections.
func serveNATS(spec string) int {
	addr, dir, ok := strings.Cut(spec, " ")
	if !ok {
		fmt.Fprintf(os.Stderr, "%s: want \"<host:port> <store dir>\", got %q\n", natsProcEnv, spec)
		return 2
	}
	e, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{StoreDir: dir, Listen: addr})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer e.Shutdown()
	fmt.Println("ready")
	select {} // until SIGKILL (or the parent's death: Pdeathsig)
}

// natsProc is a nats-server with JetStream in a child process.
type natsProc struct {
	addr, dir string
	cmd       *exec.Cmd
	stderr    syncbuf.Buffer
	done      chan struct{}
}

// startNATSProc starts a NATS server process listening on addr (a fixed
// loopback host:port, so that a restart is found at the same address)
// with its JetStream store in dir, and waits until it accepts
// connections. The process is killed in t.Cleanup.
func startNATSProc(t *testing.T, addr, dir string) *natsProc {
	t.Helper()
	p := &natsProc{addr: addr, dir: dir, cmd: exec.Command(os.Args[0], "-test.run=^$"), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), natsProcEnv+"="+addr+" "+dir)
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := sc.Scan() && sc.Text() == "ready"
		ready <- ok
		for sc.Scan() { // keep the pipe drained
		}
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill(t) })
	select {
	case ok := <-ready:
		if !ok {
			<-p.done
			t.Fatalf("the NATS server process did not start:\n%s", p.stderr.String())
		}
	case <-time.After(sidecartest.Scaled(30 * time.Second)):
		p.kill(t)
		t.Fatalf("the NATS server process was not ready within %s:\n%s", sidecartest.Scaled(30*time.Second), p.stderr.String())
	}
	return p
}

// kill ends the process with SIGKILL and waits for it. Idempotent.
func (p *natsProc) kill(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Errorf("kill the NATS server process: %v", err)
	}
	<-p.done
}
