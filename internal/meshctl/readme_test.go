package meshctl

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/topology"
)

// readmeBlock returns the lines of the first ```sh block of README.md that
// contains want.
func readmeBlock(t *testing.T, want string) []string {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, block := range strings.Split(string(raw), "```sh\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		if strings.Contains(block, want) {
			return strings.Split(strings.TrimSpace(block), "\n")
		}
	}
	t.Fatalf("README.md has no sh block with %q", want)
	return nil
}

// startSidecar runs a real sidecar in-process on an embedded JetStream
// server, as `go run ./cmd/msgmesh` does, on loopback ports.
func startSidecar(t *testing.T) (meshAddr, httpAddr string) {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	emb := natstest.Start(t)
	b, err := brokers.Open(context.Background(), topology.Cluster{Name: "nats", Kind: topology.KindNATS, Endpoints: []string{emb.ClientURL()}}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	sc, err := msgmesh.New(msgmesh.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Broker: b, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sc.Shutdown(ctx)
	})
	return sc.Addr().String(), sc.HTTPAddr().String()
}

// TestReadmeWalkthrough runs the README's "register, then consume and
// publish" commands, as written, against a real sidecar (only pointed at
// its test ports), and then its curl block when curl is installed: the
// README stays a walkthrough that works.
func TestReadmeWalkthrough(t *testing.T) {
	meshAddr, httpAddr := startSidecar(t)
	var wg sync.WaitGroup
	for _, line := range readmeBlock(t, "meshctl register") {
		if line == "wait" {
			wg.Wait()
			continue
		}
		args, ok := strings.CutPrefix(line, "go run ./cmd/meshctl ")
		if !ok {
			t.Fatalf("README line %q is neither meshctl nor wait; teach this test about it", line)
		}
		fields := strings.Fields(args)
		background := fields[len(fields)-1] == "&"
		if background {
			fields = fields[:len(fields)-1]
		}
		switch fields[0] {
		case "pub", "sub":
			fields = append(fields, "--addr", meshAddr, "--timeout", "60s")
		default:
			fields = append(fields, "--http", httpAddr)
		}
		runLine := func() {
			code, out, errs := run(t, fields...)
			if code != 0 {
				t.Errorf("README: meshctl %s: exit %d\nstdout: %s\nstderr: %s", args, code, out, errs)
			}
		}
		if !background {
			runLine()
			continue
		}
		// Like the shell, no order between sub and pub: the registration
		// made the group's upstream consumer, so the broker keeps what pub
		// sends until sub is there.
		wg.Add(1)
		go func() { defer wg.Done(); runLine() }()
	}
	wg.Wait()

	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (apt-get install curl); the README's curl block was not run")
	}
	script := strings.ReplaceAll(strings.Join(readmeBlock(t, "curl "), "\n"), "localhost:7601", httpAddr)
	script = strings.ReplaceAll(script, "curl ", curl+" -f ")
	var out, errb bytes.Buffer
	cmd := exec.Command("sh", "-ec", script)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("README curl block: %v\nstdout: %s\nstderr: %s", err, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), `"message_id"`) && !strings.Contains(out.String(), `"stream"`) {
		t.Fatalf("README curl block: no publish answer in %s", out.String())
	}
}
