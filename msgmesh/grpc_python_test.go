package msgmesh_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/internal/syncbuf"
)

// pythonGRPC is Debian's python3 with python3-grpcio and
// python3-grpc-tools (not a python3 that PATH may find first).
const pythonGRPC = "/usr/bin/python3"

// pythonStubs generates the Python stubs of msgmesh.proto into a temp dir
// with grpc_tools, or skips t naming the packages it needs.
func pythonStubs(t *testing.T) string {
	t.Helper()
	if err := exec.Command(pythonGRPC, "-c", "import grpc, grpc_tools.protoc").Run(); err != nil {
		t.Skipf("%s cannot import grpc and grpc_tools (%v): install Debian's python3-grpcio and python3-grpc-tools", pythonGRPC, err)
	}
	dir := t.TempDir()
	out, err := exec.Command(pythonGRPC, "-m", "grpc_tools.protoc", "-I", "../proto",
		"--python_out="+dir, "--grpc_python_out="+dir, "msgmesh/v1/msgmesh.proto").CombinedOutput()
	if err != nil {
		t.Fatalf("grpc_tools.protoc: %v\n%s", err, out)
	}
	return dir
}

// TestGRPCPythonClient: an independent client, Python with grpcio and
// stubs generated from the repo's .proto, publishes 10,000 messages on a
// PublishStream and consumes them on a Subscribe stream with acks, through
// the real msgmesh binary and its embedded broker, which is SIGKILLed once
// a third of them are acknowledged and restarted on the same data
// directory and ports. Every publish the sidecar acknowledged must be
// consumed (at least once); duplicates are counted and logged.
func TestGRPCPythonClient(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	stubs := pythonStubs(t)
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000
	grpcAddr, httpAddr := freePort(t), freePort(t)
	args := []string{"--data-dir", t.TempDir(), "--listen", freePort(t), "--http", httpAddr, "--grpc", grpcAddr,
		"--delivery-timeout", "2s", "--log-level", "warn"}
	p := sidecartest.StartProc(t, bin, args...)
	sidecartest.WaitHealthy(t, p, httpAddr)

	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(120*time.Second))
	defer cancel()
	py := exec.CommandContext(ctx, pythonGRPC, "testdata/grpc_client.py", stubs, grpcAddr, strconv.Itoa(n))
	var stderr syncbuf.Buffer
	py.Stderr = &stderr
	stdout, err := py.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := py.Start(); err != nil {
		t.Fatal(err)
	}
	var summary struct {
		Acked, Consumed, Deliveries, Duplicates, Missing int
		Errors                                           []string
	}
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if k, ok := strings.CutPrefix(line, "acked "); ok && !killed {
			if a, _ := strconv.Atoi(k); a >= n/3 {
				killed = true
				if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				<-p.Done
				t.Logf("SIGKILLed the sidecar with %d publishes acked after %s; restarting", a, time.Since(start).Round(time.Millisecond))
				p = sidecartest.StartProc(t, bin, args...)
				sidecartest.WaitHealthy(t, p, httpAddr)
			}
		}
		if strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(line), &summary); err != nil {
				t.Fatalf("python summary %q: %v", line, err)
			}
		}
	}
	if err := py.Wait(); err != nil {
		t.Fatalf("python client: %v\n%s", err, stderr.String())
	}
	if !killed {
		t.Fatal("the sidecar was never killed: the client reported no progress")
	}
	t.Logf("python client: %d publishes acked, %d distinct consumed, %d deliveries, %d duplicates, in %s",
		summary.Acked, summary.Consumed, summary.Deliveries, summary.Duplicates, time.Since(start).Round(time.Millisecond))
	if len(summary.Errors) > 0 {
		t.Errorf("python client errors: %q", summary.Errors)
	}
	if summary.Acked != n || summary.Missing != 0 {
		t.Fatalf("%d of %d publishes acked, %d acked ones never consumed (at-least-once broken)", summary.Acked, n, summary.Missing)
	}
}

// TestGRPCDocExample runs docs/grpc.md's Python example, as written,
// against a sidecar (only pointed at its test address) and checks that it
// prints what the document says it prints.
func TestGRPCDocExample(t *testing.T) {
	stubs := pythonStubs(t)
	doc, err := os.ReadFile("../docs/grpc.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```python\n")
	code, rest, ok2 := strings.Cut(rest, "```")
	_, rest, ok3 := strings.Cut(rest, "It prints")
	_, rest, ok4 := strings.Cut(rest, "```\n")
	printed, _, ok5 := strings.Cut(rest, "```")
	if !ok || !ok2 || !ok3 || !ok4 || !ok5 {
		t.Fatal("docs/grpc.md: no python block followed by what it prints")
	}
	script := filepath.Join(t.TempDir(), "example.py")
	if err := os.WriteFile(script, []byte(code), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, withGRPC)
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(60*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, pythonGRPC, script)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+stubs, "MSGMESH_GRPC="+e.sc.GRPCAddr().String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the example failed: %v\n%s", err, out)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := strings.Split(strings.TrimSpace(printed), "\n")
	if len(got) != len(want) {
		t.Fatalf("the example printed\n%s\nwant (docs/grpc.md)\n%s", out, printed)
	}
	for i := range want {
		w, g := want[i], got[i]
		if i == 0 { // the offset varies
			w, g = w[:strings.LastIndex(w, " ")], g[:strings.LastIndex(g, " ")]
		}
		if w != g {
			t.Errorf("line %d: printed %q, docs/grpc.md says %q", i+1, got[i], want[i])
		}
	}
}
