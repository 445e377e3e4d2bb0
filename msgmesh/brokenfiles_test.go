package msgmesh_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/internal/boltfile/bolttest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// storeRegistrations writes n registrations into a new registrations.db in
// dataDir, as an earlier run of the sidecar would have.
func storeRegistrations(t *testing.T, dataDir string, n int) string {
	t.Helper()
	path := filepath.Join(dataDir, "registrations.db")
	s, err := registry.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		b, err := registry.ParseBinding(fmt.Sprintf("g%d:orders.t%d", i, i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(registry.Registration{App: fmt.Sprintf("app-%03d", i), Consume: []registry.Binding{b}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// A damaged registrations.db stops New with ErrCorrupt and a message that
// names the file and the way out, in process.
func TestNewRefusesDamagedRegistrations(t *testing.T) {
	b, err := brokers.Open(context.Background(), natsCluster(t), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	for _, d := range bolttest.Damages {
		t.Run(d.Name, func(t *testing.T) {
			dataDir := t.TempDir()
			path := storeRegistrations(t, dataDir, 50)
			d.Apply(t, path)
			sc, err := msgmesh.New(msgmesh.Config{DataDir: dataDir, Broker: b, Logger: testLogger()})
			if err == nil {
				_ = sc.Shutdown(context.Background())
				t.Fatal("New accepted a damaged registrations.db")
			}
			if !errors.Is(err, registry.ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move it aside") {
				t.Fatalf("New: %v; want ErrCorrupt naming %s and how to recover", err, path)
			}
		})
	}
}

// The real binary on a damaged registrations.db exits with status 1 and a
// message naming the file and how to recover: no SIGBUS, no panic, no
// start with no registrations.
func TestBinaryRefusesDamagedRegistrations(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	bin, err := buildSidecar()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range bolttest.Damages {
		t.Run(d.Name, func(t *testing.T) {
			dataDir := t.TempDir()
			path := storeRegistrations(t, dataDir, 50)
			d.Apply(t, path)
			p := startProc(t, bin, "--data-dir", dataDir, "--listen", freePort(t), "--http", freePort(t))
			select {
			case <-p.done:
			case <-time.After(scaled(60 * time.Second)):
				t.Fatal("the sidecar did not exit on a damaged registrations.db")
			}
			wantRefused(t, p.cmd.ProcessState.Sys().(syscall.WaitStatus), p.stderr.String(), path)
		})
	}
}

// wantRefused fails unless a process exited with status 1 (not killed by a
// signal) and said which file is damaged and how to recover, without a
// panic or a fault.
func wantRefused(t *testing.T, ws syscall.WaitStatus, stderr, path string) {
	t.Helper()
	if ws.Signaled() {
		t.Fatalf("killed by %v\n%s", ws.Signal(), stderr)
	}
	if ws.ExitStatus() != 1 {
		t.Fatalf("exit status %d, want 1\n%s", ws.ExitStatus(), stderr)
	}
	for _, bad := range []string{"SIGBUS", "SIGSEGV", "panic", "goroutine "} {
		if strings.Contains(stderr, bad) {
			t.Fatalf("stderr shows %q:\n%s", bad, stderr)
		}
	}
	for _, want := range []string{path, "damaged", "backup", "move it aside"} {
		if !strings.Contains(stderr, want) {
			t.Fatalf("stderr does not mention %q:\n%s", want, stderr)
		}
	}
}
