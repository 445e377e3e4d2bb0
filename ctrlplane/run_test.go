package ctrlplane

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/internal/slowclient"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunRefuses(t *testing.T) {
	t.Setenv(TokenEnv, "")
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no token", []string{"--data-dir", dir}, TokenEnv},
		{"short token", []string{"--data-dir", dir, "--token", "abc"}, "at least 16"},
		{"bad store", []string{"--data-dir", dir, "--token", "0123456789abcdef", "--store", "mysql://x"}, "bad store spec"},
		{"argument", []string{"extra"}, "unexpected argument"},
		{"bad log level", []string{"--log-level", "loud"}, "--log-level"},
		{"bad listen", []string{"--data-dir", dir, "--token", "0123456789abcdef", "--listen", "127.0.0.1:99999"}, "99999"},
	} {
		var stderr syncBuffer
		err := Run(t.Context(), tc.args, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	var stderr syncBuffer
	if err := Run(t.Context(), []string{"--help"}, &stderr); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "-insecure-no-auth") {
		t.Fatalf("--help: %v\n%s", err, stderr.String())
	}
}

// runAsync runs the command until the test cancels it, and returns the
// address it listens on.
func runAsync(t *testing.T, args []string, stderr *syncBuffer) (addr string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, stderr, func(a string) { ready <- a }) }()
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("run: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("run did not start")
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = errors.New("run did not return after its context was cancelled")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return addr, stop
}

func TestRunServesAndStops(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(TokenEnv, "env-operator-token-0123456789")
	var stderr syncBuffer
	addr, stop := runAsync(t, []string{"--listen", "127.0.0.1:0", "--data-dir", dir}, &stderr)

	req, _ := http.NewRequestWithContext(t.Context(), "POST", "http://"+addr+"/v1/apps", strings.NewReader(`{"name":"orders"}`))
	req.Header.Set("Authorization", "Bearer env-operator-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create with the token from $%s: %d", TokenEnv, resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatalf("run returned %v after a graceful stop\n%s", err, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, store.BoltFile)); err != nil {
		t.Fatalf("no store file in the data dir: %v", err)
	}
	if !strings.Contains(stderr.String(), "shutting down") {
		t.Fatalf("no shutdown log:\n%s", stderr.String())
	}
}

func TestRunInsecureWarns(t *testing.T) {
	var stderr syncBuffer
	addr, stop := runAsync(t, []string{"--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--insecure-no-auth"}, &stderr)
	resp, err := http.Get("http://" + addr + "/v1/apps")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("insecure GET /v1/apps: %d", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "level=WARN") || !strings.Contains(stderr.String(), "AUTHENTICATION IS OFF") {
		t.Fatalf("no loud warning:\n%s", stderr.String())
	}
}

// TestRunHTTPLimits: the control plane closes a slowloris client (headers
// or body one byte every 200ms) and an idle keep-alive connection within a
// bound, with the --http-* timeouts set to about a second.
func TestRunHTTPLimits(t *testing.T) {
	var stderr syncBuffer
	addr, _ := runAsync(t, []string{"--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--insecure-no-auth",
		"--http-read-header-timeout", "500ms", "--http-read-timeout", "1s", "--http-idle-timeout", "1s"}, &stderr)
	slowclient.Check(t, slowclient.Probes(addr, "/v1/apps", "/healthz", 200*time.Millisecond, 20*time.Second))
}
