package msgmesh_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/internal/boltfile/bolttest"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
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
	b, err := brokers.Open(context.Background(), sidecartest.NATSCluster(t), sidecartest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	bolttest.Refuses(t, "registrations.db", func(t *testing.T, path string) {
		storeRegistrations(t, filepath.Dir(path), 50)
	}, func(path string) error {
		sc, err := msgmesh.New(msgmesh.Config{DataDir: filepath.Dir(path), Broker: b, Logger: sidecartest.Logger()})
		if err == nil {
			_ = sc.Shutdown(context.Background())
		}
		return err
	}, registry.ErrCorrupt, "no registrations")
}

// The real binary on a damaged registrations.db exits with status 1 and a
// message naming the file and how to recover: no SIGBUS, no panic, no
// start with no registrations.
func TestBinaryRefusesDamagedRegistrations(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range bolttest.Damages {
		t.Run(d.Name, func(t *testing.T) {
			dataDir := t.TempDir()
			path := storeRegistrations(t, dataDir, 50)
			d.Apply(t, path)
			p := sidecartest.StartProc(t, bin, "--data-dir", dataDir, "--listen", freePort(t), "--http", freePort(t))
			select {
			case <-p.Done:
			case <-time.After(sidecartest.Scaled(60 * time.Second)):
				t.Fatal("the sidecar did not exit on a damaged registrations.db")
			}
			wantExitRefused(t, p.Cmd.ProcessState.Sys().(syscall.WaitStatus), p.Output(), path)
		})
	}
}

// wantExitRefused fails unless a process exited with status 1 (not killed by a
// signal) and said which file is damaged and how to recover, without a
// panic or a fault.
func wantExitRefused(t *testing.T, ws syscall.WaitStatus, stderr, path string) {
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

// The real binary whose embedded broker finds a message block of its store
// damaged at start: the damage is an ERROR in the log and GET /readyz is
// 503 naming the embedded cluster, while the sidecar serves on (liveness
// 200). A restart, after nats-server repaired the store, is ready again.
func TestBinaryReportsDamagedBrokerStore(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	meshAddr, httpAddr := freePort(t), freePort(t)
	args := []string{"--data-dir", dataDir, "--listen", meshAddr, "--http", httpAddr}
	run := func() *sidecartest.Proc {
		p := sidecartest.StartProc(t, bin, args...)
		sidecartest.WaitHealthy(t, p, httpAddr)
		return p
	}
	stop := func(p *sidecartest.Proc) {
		if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Done:
		case <-time.After(sidecartest.Scaled(30 * time.Second)):
			t.Fatal("the sidecar did not stop on SIGTERM")
		}
	}

	p := run()
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	for i := 0; i < 100; i++ {
		if status, body := sidecartest.HTTPDo(t, http.MethodPost, "http://"+httpAddr+"/v1/publish/"+topic, "application/octet-stream", fmt.Appendf(nil, "message-%03d-%s", i, strings.Repeat("x", 40))); status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
	}
	waitReady(t, httpAddr, http.StatusOK, "ready before the damage")

	stop(p)

	blocks, _ := filepath.Glob(filepath.Join(dataDir, "nats", "jetstream", "*", "streams", "*", "msgs", "1.blk"))
	if len(blocks) != 1 {
		t.Fatalf("message blocks %v, want one", blocks)
	}
	b, err := os.ReadFile(blocks[0])
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 2; i < len(b)/2+40; i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(blocks[0], b, 0o600); err != nil {
		t.Fatal(err)
	}

	p = run()
	// /readyz answers 503 "not checked yet" until the cluster's first
	// check; what counts is the reason it gives once checked.
	const damaged = "cluster embedded: natsbroker: embedded JetStream store damaged"
	var r readyz
	if !sidecartest.WaitUntil(30*time.Second, func() bool {
		r = readyz{}
		return getJSON(t, "http://"+httpAddr+"/readyz", &r) == http.StatusServiceUnavailable &&
			strings.Contains(strings.Join(r.NotReady, "\n"), damaged)
	}) {
		t.Fatalf("/readyz: %v; want 503 naming the embedded cluster's store damage", r.NotReady)
	}
	if status := getJSON(t, "http://"+httpAddr+"/healthz", nil); status != http.StatusOK {
		t.Fatalf("/healthz: %d, want 200", status)
	}
	stop(p) // its stderr is complete once it exited
	if out := p.Output(); !regexp.MustCompile(`level=ERROR msg="embedded NATS JetStream store is damaged`).MatchString(out) {
		t.Fatalf("no ERROR about the damaged store in the log:\n%s", out)
	}

	run()
	waitReady(t, httpAddr, http.StatusOK, "ready after a restart on the repaired store")
}
