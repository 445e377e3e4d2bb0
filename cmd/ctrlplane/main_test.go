package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/internal/boltfile/bolttest"
	"github.com/msgmesh/msgmesh/schema"
)

const token = "binary-test-operator-token-0123"

var build = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "ctrlplane-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "ctrlplane")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", errors.New(string(out))
	}
	return bin, nil
})

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type proc struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
	err    error
}

func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	bin, err := build()
	if err != nil {
		t.Fatalf("go build: %v", err)
	}
	p := &proc{cmd: exec.Command(bin, args...), stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("ctrlplane stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

func (p *proc) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(30 * time.Second):
		t.Fatal("ctrlplane did not exit")
		return nil
	}
}

// waitUntil polls cond every 10 ms for up to 30 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestBinary runs the real binary: it refuses to start without a token,
// serves with one, ends a waiting long poll and exits 0 on SIGTERM, and
// keeps its state across a restart on the same data directory.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	p := start(t, []string{"MSGMESH_CTRLPLANE_TOKEN="}, "--data-dir", dir, "--listen", freeAddr(t))
	if err := p.wait(t); err == nil || !strings.Contains(p.stderr.String(), "no operator token") {
		t.Fatalf("without a token: %v\n%s", err, p.stderr.String())
	}

	addr := freeAddr(t)
	p = start(t, []string{"MSGMESH_CTRLPLANE_TOKEN=" + token}, "--data-dir", dir, "--listen", addr)
	c, err := ctrlclient.New(addr, token)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "ctrlplane to answer /healthz", func() bool { return c.Health(t.Context()) == nil })
	if _, err := c.CreateApp(t.Context(), "orders"); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.Config(t.Context(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan error, 1)
	go func() {
		_, _, err := c.PollConfig(context.Background(), "orders", cfg.Version, time.Minute)
		polled <- err
	}()
	waitUntil(t, "the long poll to wait (as /healthz counts)", func() bool {
		var h struct {
			LongPolls int `json:"long_polls"`
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&h) == nil && h.LongPolls == 1
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.stderr.String())
	}
	select {
	case err := <-polled:
		if !errors.Is(err, ctrlclient.ErrUnavailable) {
			t.Fatalf("the waiting long poll ended with %v, want ErrUnavailable (503 SHUTTING_DOWN)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll did not end")
	}

	p = start(t, []string{"MSGMESH_CTRLPLANE_TOKEN=" + token}, "--data-dir", dir, "--listen", addr)
	waitUntil(t, "ctrlplane to answer /healthz after the restart", func() bool { return c.Health(t.Context()) == nil })
	if _, err := c.GetApp(t.Context(), "orders"); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	if err := p.wait(t); err != nil {
		t.Fatalf("exit after SIGINT: %v", err)
	}
}

// TestBinaryRefusesDamagedFiles runs the real binary on a data directory
// whose ctrlplane.db or schemas.db is damaged in each way bolttest knows:
// it exits with status 1 and a message naming the file and how to
// recover, instead of dying of SIGBUS, panicking, or starting with no
// apps, credentials or schemas.
func TestBinaryRefusesDamagedFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	files := []struct {
		name string
		fill func(t *testing.T, dir string) string // writes some state, returns the file
	}{
		{store.BoltFile, func(t *testing.T, dir string) string {
			st, err := store.Open(context.Background(), "", dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 50; i++ {
				if _, err := st.Put(context.Background(), fmt.Sprintf("apps/app%d", i), bytes.Repeat([]byte("x"), 100), 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, store.BoltFile)
		}},
		{ctrlplane.SchemaFile, func(t *testing.T, dir string) string {
			path := filepath.Join(dir, ctrlplane.SchemaFile)
			s, err := schema.OpenBoltStore(path)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 50; i++ {
				v := schema.SchemaVersion{Subject: fmt.Sprintf("t%d-value", i), Version: 1, ID: i, Schema: `"string"`}
				if err := s.AddVersion(context.Background(), v); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return path
		}},
	}
	for _, f := range files {
		for _, d := range bolttest.Damages {
			t.Run(f.name+"/"+d.Name, func(t *testing.T) {
				dir := t.TempDir()
				path := f.fill(t, dir)
				d.Apply(t, path)
				p := start(t, []string{"MSGMESH_CTRLPLANE_TOKEN=" + token}, "--data-dir", dir, "--listen", freeAddr(t))
				err := p.wait(t)
				var ee *exec.ExitError
				if !errors.As(err, &ee) {
					t.Fatalf("exit: %v, want status 1\n%s", err, p.stderr.String())
				}
				ws := ee.Sys().(syscall.WaitStatus)
				out := p.stderr.String()
				if ws.Signaled() || ws.ExitStatus() != 1 {
					t.Fatalf("exit: %v, want status 1\n%s", err, out)
				}
				for _, bad := range []string{"SIGBUS", "SIGSEGV", "panic", "goroutine "} {
					if strings.Contains(out, bad) {
						t.Fatalf("stderr shows %q:\n%s", bad, out)
					}
				}
				for _, want := range []string{path, "damaged", "backup", "move it aside"} {
					if !strings.Contains(out, want) {
						t.Fatalf("stderr does not mention %q:\n%s", want, out)
					}
				}
			})
		}
	}
}
