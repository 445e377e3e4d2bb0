package meshctl

import (
	"bytes"
	"context"
	"encoding/json"
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
	return docBlock(t, "README.md", want)
}

// docBlock returns the lines of the first ```sh block of the repository's
// file doc that contains want.
func docBlock(t *testing.T, doc, want string) []string {
	t.Helper()
	raw, err := os.ReadFile("../../" + doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, block := range strings.Split(string(raw), "```sh\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		if strings.Contains(block, want) {
			return strings.Split(strings.TrimSpace(block), "\n")
		}
	}
	t.Fatalf("%s has no sh block with %q", doc, want)
	return nil
}

// runCurlBlock runs a doc's curl commands as written with sh -e, pointed
// at httpAddr and with curl -f (an HTTP error fails the block), in a
// temporary directory; it returns their output. It skips when a tool the
// block uses is missing.
func runCurlBlock(t *testing.T, lines []string, httpAddr string, tools ...string) string {
	t.Helper()
	path := map[string]string{}
	for _, tool := range append([]string{"curl"}, tools...) {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("%s is not installed (apt-get install %s); the doc's curl block was not run", tool, tool)
		}
		path[tool] = p
	}
	script := strings.ReplaceAll(strings.Join(lines, "\n"), "localhost:7601", httpAddr)
	script = strings.ReplaceAll(script, "curl ", path["curl"]+" -f ")
	var out, errb bytes.Buffer
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = t.TempDir()
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("curl block: %v\nstdout: %s\nstderr: %s", err, out.String(), errb.String())
	}
	return out.String()
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

	out := runCurlBlock(t, readmeBlock(t, "curl "), httpAddr)
	if !strings.Contains(out, `"message_id"`) && !strings.Contains(out, `"stream"`) {
		t.Fatalf("README curl block: no publish answer in %s", out)
	}
}

// TestHTTPPullWalkthrough runs docs/http-api.md's "Consuming over HTTP"
// curl block, as written, against a real sidecar: register, publish, pull,
// nack with a delay, pull the redelivery, ack it.
func TestHTTPPullWalkthrough(t *testing.T) {
	_, httpAddr := startSidecar(t)
	out := runCurlBlock(t, docBlock(t, "docs/http-api.md", "/v1/pull/"), httpAddr, "jq", "base64")
	for _, want := range []string{"\nhello\n", `"key":"order-42"`, `"tag":"eu"`, `"redelivered":0`, `"redelivered":1`} {
		if !strings.Contains(out, want) {
			t.Errorf("the walkthrough's output lacks %q:\n%s", want, out)
		}
	}
}

// TestHTTPBatchExample runs docs/http-api.md's batch curl block, as
// written, against a real sidecar (after registering its app): both events
// are stored, and the answer has the documented shape.
func TestHTTPBatchExample(t *testing.T) {
	_, httpAddr := startSidecar(t)
	register := []string{`curl -s -X POST localhost:7601/v1/registrations -H 'Content-Type: application/json' ` +
		`-d '{"app":"orders","produce":[{"group":"p1","topic":"orders.created"}]}' >/dev/null`}
	out := runCurlBlock(t, append(register, docBlock(t, "docs/http-api.md", "cloudevents-batch+json")...), httpAddr)
	var ans struct {
		Results []struct {
			Stream    string
			Offset    int64
			MessageID string `json:"message_id"`
		}
	}
	if err := json.Unmarshal([]byte(out), &ans); err != nil {
		t.Fatalf("batch answer: %v: %s", err, out)
	}
	if len(ans.Results) != 2 || ans.Results[0].MessageID == "" || ans.Results[0].Offset == ans.Results[1].Offset {
		t.Fatalf("batch answer: %s", out)
	}
}
