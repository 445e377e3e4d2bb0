package rpcproxy

import (
	"context"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests run real HTTP clients (curl, wrk) through an egress and an
// ingress sidecar to an HTTP echo server. They skip when the tool is not
// installed (apt-get install -y curl wrk).

func lookTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (apt-get install -y %s): %v", name, name, err)
	}
	return path
}

func runTool(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestCurlThroughSidecars(t *testing.T) {
	curl := lookTool(t, "curl")
	app := startHTTPEcho(t)
	egress, _ := sidecarPair(t, map[string]string{"http1": app.Addr()})
	base := "http://" + egress.EgressAddr().String()
	body := strings.Repeat("0123456789abcdef", 128) // 2 KiB
	file := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	write := "\n%{http_code}"

	tests := []struct {
		name   string
		args   []string
		status string
		want   string // in the output
	}{
		{"get", []string{base + "/hello?x=1", "-H", "Host: echo"}, "200", ""},
		{"post", []string{base + "/p", "--data-binary", "@" + file}, "200", body},
		{"expect 100-continue", []string{base + "/e", "--data-binary", "@" + file, "-H", "Expect: 100-continue"}, "200", body},
		{"chunked upload", []string{base + "/c", "--data-binary", "@" + file, "-H", "Transfer-Encoding: chunked"}, "200", body},
		{"http/1.0", []string{base + "/old", "--http1.0", "--data-binary", "@" + file}, "200", body},
		{"head", []string{base + "/h", "-I"}, "200", "X-Echo-Method: HEAD"},
		{"headers", []string{base + "/hdr", "-D", "-", "-H", "Host: Echo:1234"}, "200", "X-Echo-Path: /hdr"},
		{"keep-alive, two URLs", []string{base + "/one", base + "/two", "-D", "-"}, "200", "X-Echo-Path: /two"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-sS", "--max-time", "20", "-w", write}, tc.args...)
			out := runTool(t, 30*time.Second, curl, args...)
			if !strings.HasSuffix(out, "\n"+tc.status) || !strings.Contains(out, tc.want) {
				t.Fatalf("curl %s:\n%s", strings.Join(args, " "), out)
			}
		})
	}

	// A host no route matches gets the proxy's JSON error.
	egress2 := startProxy(t, Config{Ingress: IngressConfig{Listen: Off}})
	out := runTool(t, 30*time.Second, curl, "-sS", "--max-time", "20", "-w", write, "-D", "-", "http://"+egress2.EgressAddr().String()+"/x")
	if !strings.HasSuffix(out, "\n404") || !strings.Contains(out, `{"error":"NO_ROUTE"`) || !strings.Contains(out, "X-Mesh-Error: NO_ROUTE") {
		t.Fatalf("curl to an unrouted host:\n%s", out)
	}
}

func TestWrkThroughSidecars(t *testing.T) {
	wrk := lookTool(t, "wrk")
	app := startHTTPEcho(t)
	egress, _ := sidecarPair(t, map[string]string{"http1": app.Addr()})
	script := filepath.Join(t.TempDir(), "post.lua")
	if err := os.WriteFile(script, []byte(`wrk.method = "POST"
wrk.body = string.rep("a", 1024)
wrk.headers["Host"] = "echo"
wrk.headers["Content-Type"] = "application/octet-stream"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := runTool(t, time.Minute, wrk, "-t", "2", "-c", "32", "-d", "2s", "--latency", "-s", script, "http://"+egress.EgressAddr().String()+"/echo")
	t.Logf("wrk through egress and ingress sidecars:\n%s", out)
	if strings.Contains(out, "Non-2xx or 3xx responses") || strings.Contains(out, "Socket errors") {
		t.Fatalf("wrk saw errors:\n%s", out)
	}
	m := regexp.MustCompile(`(\d+) requests in`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no request count in wrk's output:\n%s", out)
	}
	if n, _ := strconv.Atoi(m[1]); n < 100 {
		t.Fatalf("only %d requests in 2s", n)
	}
	if s := egress.Metrics().Stats(stream.ExchangeRPC, "egress", "echo"); s.ByClass[2].Load() == 0 {
		t.Fatal("the egress counted no 2xx answers")
	}
}
