package meshctl

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWalkthrough runs the shell block of docs/walkthrough.md as written,
// from the repository's root: it builds the binaries, starts a NATS
// server, the control plane and two sidecars of one app on their
// documented ports, and has an app publish through one sidecar and consume
// through the other, with the first at weight 0. The block fails (set -e)
// if any step does; this test then checks that both sidecars were online
// and that the messages went through the forwarding link.
func TestWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four binaries and runs a small mesh")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed (apt-get install curl); docs/walkthrough.md was not run")
	}
	for _, addr := range []string{"127.0.0.1:4222", "127.0.0.1:7700", "127.0.0.1:7600", "127.0.0.1:7601", "127.0.0.1:7602", "127.0.0.1:7603",
		"127.0.0.1:7610", "127.0.0.1:7611", "127.0.0.1:7612", "127.0.0.1:7613"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("port %s, which docs/walkthrough.md uses, is taken: %v", addr, err)
		}
		ln.Close()
	}
	raw, err := os.ReadFile("../../docs/walkthrough.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "```sh\n")
	script, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/walkthrough.md has no sh block")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "MSGMESH_CTRLPLANE_TOKEN=", "MSGMESH_APP_CREDENTIAL=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A server the block left running would hold its output open: do not
	// wait for that beyond a few seconds after the shell ends.
	cmd.WaitDelay = 10 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	// Whatever happened, nothing the block started may outlive the test.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if err != nil {
		t.Fatalf("docs/walkthrough.md: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
	}
	if n := strings.Count(out.String(), "online"); n < 2 {
		t.Errorf("instances list shows %d online instances, want 2:\n%s", n, out.String())
	}
	// The last two JSON objects printed are A's and B's /v1/stats.
	var lines []string
	for l := range strings.Lines(out.String()) {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "{") {
			lines = append(lines, l)
		}
	}
	if len(lines) < 2 {
		t.Fatalf("no stats in the output:\n%s", out.String())
	}
	type stats struct {
		Forwarded    uint64 `json:"forwarded"`
		FromSiblings uint64 `json:"from_siblings"`
		Weight       int    `json:"weight"`
	}
	var a, b stats
	if err := json.Unmarshal([]byte(lines[len(lines)-2]), &a); err != nil {
		t.Fatalf("A's stats %q: %v", lines[len(lines)-2], err)
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &b); err != nil {
		t.Fatalf("B's stats %q: %v", lines[len(lines)-1], err)
	}
	if a.Weight != 0 || a.Forwarded == 0 || b.FromSiblings == 0 {
		t.Errorf("A %+v, B %+v: want A at weight 0 forwarding to B", a, b)
	}
	t.Logf("walkthrough: A %+v, B %+v", a, b)
}
