package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/internal/boltfile/bolttest"
	"github.com/msgmesh/msgmesh/internal/pki"
	"github.com/msgmesh/msgmesh/schema"
)

const (
	token   = "binary-test-operator-token-0123"
	sealKey = "binary-test-seal-key-0123456789abcdef"
)

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

func start(t testing.TB, env []string, args ...string) *proc {
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
func waitUntil(t testing.TB, what string, cond func() bool) {
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

// TestBinary runs the real binary: it refuses to start without a token,
// serves with one, ends a waiting long poll and exits 0 on SIGTERM, and
// keeps its state across a restart on the same data directory.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	p := start(t, []string{"MSGMESH_CTRLPLANE_TOKEN="}, "--data-dir", dir, "--listen", brokertest.FreeAddr(t))
	if err := p.wait(t); err == nil || !strings.Contains(p.stderr.String(), "no operator token") {
		t.Fatalf("without a token: %v\n%s", err, p.stderr.String())
	}

	addr := brokertest.FreeAddr(t)
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
				p := start(t, []string{"MSGMESH_CTRLPLANE_TOKEN=" + token}, "--data-dir", dir, "--listen", brokertest.FreeAddr(t))
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

// TestBinaryMigratesClearCredentials: a ctrlplane.db an older control
// plane wrote holds app credentials and the forwarding CA's key in clear.
// The binary started on it with a seal key stores the credentials' hashes
// instead, seals the CA key and compacts the file: neither is left in
// ctrlplane.db, byte for byte; every credential works as it did (the
// previous one, still in its grace period, receives the current one in
// its config), and certificates come from the same CA.
func TestBinaryMigratesClearCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const (
		cur  = "mmc1.orders.CURRENTcurrentCURRENTcurrentCURRENTcurrent123"
		prev = "mmc1.orders.PREVIOUSpreviousPREVIOUSpreviousPREVIOUSprevi"
		bil  = "mmc1.billing.BILLINGbillingBILLINGbillingBILLINGbillingBIL"
	)
	dir := t.TempDir()
	path := filepath.Join(dir, store.BoltFile)
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	// orders has many instances: its record spans several pages, which
	// bbolt frees, but does not clear, when the record is rewritten.
	var instances []string
	for i := range 300 {
		a := fmt.Sprintf("10.0.%d.%d:7610", i/250, i%250+1)
		instances = append(instances, `{"id":"`+a+`","addr":"`+a+`","weight":100}`)
	}
	for key, rec := range map[string]string{
		// As the control plane wrote them before credential hashing.
		"apps/orders": `{"name":"orders","created_at":"` + now.Add(-time.Hour).Format(time.RFC3339Nano) + `","credential":"` + cur +
			`","previous_credential":"` + prev + `","previous_expires":"` + now.Add(time.Hour).Format(time.RFC3339Nano) +
			`","rotated_at":"` + now.Add(-time.Minute).Format(time.RFC3339Nano) + `","instances":[` + strings.Join(instances, ",") + `]}`,
		"apps/billing": `{"name":"billing","created_at":"` + now.Format(time.RFC3339Nano) + `","credential":"` + bil + `","instances":[]}`,
	} {
		if _, err := st.Put(t.Context(), key, []byte(rec), 0); err != nil {
			t.Fatal(err)
		}
	}
	// The forwarding CA, its key in clear as before seal keys.
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	caRec, _ := json.Marshal(map[string]string{"cert": string(ca.CertPEM()), "key": string(caKey)})
	if _, err := st.Put(t.Context(), "pki/ca", caRec, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// What to look for: a credential's random part, the key's first line
	// of base64.
	secrets := map[string]string{"current credential": cur[len("mmc1.orders."):], "previous credential": prev[len("mmc1.orders."):],
		"billing credential": bil[len("mmc1.billing."):], "CA key": strings.Split(string(caKey), "\n")[1]}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range secrets {
		if !bytes.Contains(raw, []byte(s)) {
			t.Fatalf("the old-format file does not hold the %s; the test is wrong", name)
		}
	}

	addr := brokertest.FreeAddr(t)
	p := start(t, []string{"MSGMESH_CTRLPLANE_TOKEN=" + token, "MSGMESH_CTRLPLANE_SEAL_KEY=" + sealKey}, "--data-dir", dir, "--listen", addr)
	op, err := ctrlclient.New(addr, token)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "ctrlplane to answer /healthz", func() bool { return op.Health(t.Context()) == nil })
	if raw, err = os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	for name, s := range secrets {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("after the migration ctrlplane.db still holds the %s in clear", name)
		}
	}
	// The sealed CA is the same CA.
	_, csr, err := pki.NewKeyAndCSR("orders")
	if err != nil {
		t.Fatal(err)
	}
	sidecar, err := ctrlclient.New(addr, cur)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := sidecar.IssueCertificate(t.Context(), "orders", csr); err != nil || got.CA != string(ca.CertPEM()) {
		t.Errorf("certificate after sealing the CA key: %v; same CA %v", err, err == nil && got.CA == string(ca.CertPEM()))
	}
	for _, tc := range []struct{ app, cred, want string }{{"orders", cur, cur}, {"orders", prev, cur}, {"billing", bil, bil}} {
		c, err := ctrlclient.New(addr, tc.cred)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := c.Config(t.Context(), tc.app)
		if err != nil || cfg.Credential != tc.want || (tc.app == "orders" && len(cfg.Instances) != 300) {
			t.Errorf("%s config read with %s: %+v, %v; want credential %s", tc.app, tc.cred, cfg, err, tc.want)
		}
	}
	if !strings.Contains(p.stderr.String(), "stored their hashes instead") {
		t.Errorf("the log does not say the credentials were migrated:\n%s", p.stderr.String())
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

// TestBinaryTokenNotInArgv: the operator token is read from a file
// (--token-file) or the environment, so it is not in the process's
// command line; given as --token it still works but the binary warns, and
// a token file others can read gets a warning too.
func TestBinaryTokenNotInArgv(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "token-loose")
	if err := os.WriteFile(loose, []byte(token+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		inArgv bool
		warn   string
	}{
		{"token file", []string{"--token-file", file}, false, ""},
		{"environment", nil, false, ""},
		{"flag", []string{"--token", token}, true, "every local user can read (ps, /proc/PID/cmdline)"},
		{"loose token file", []string{"--token-file", loose}, false, "readable by other users (mode 0644)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := []string{"MSGMESH_CTRLPLANE_TOKEN=", "MSGMESH_CTRLPLANE_SEAL_KEY=" + sealKey}
			if tc.args == nil {
				env[0] = "MSGMESH_CTRLPLANE_TOKEN=" + token
			}
			addr := brokertest.FreeAddr(t)
			p := start(t, env, append([]string{"--data-dir", t.TempDir(), "--listen", addr}, tc.args...)...)
			c, err := ctrlclient.New(addr, token)
			if err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "ctrlplane to answer /healthz", func() bool { return c.Health(t.Context()) == nil })
			if _, err := c.ListApps(t.Context()); err != nil {
				t.Fatalf("the operator token does not work: %v", err)
			}
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.cmd.Process.Pid))
			if err != nil {
				t.Skipf("reading the process's command line needs /proc: %v", err)
			}
			if got := bytes.Contains(cmdline, []byte(token)); got != tc.inArgv {
				t.Errorf("token in /proc/PID/cmdline: %v, want %v", got, tc.inArgv)
			}
			logs := p.stderr.String()
			if tc.warn == "" && strings.Contains(logs, "level=WARN") {
				t.Errorf("a warning without reason:\n%s", logs)
			}
			if tc.warn != "" && !strings.Contains(logs, tc.warn) {
				t.Errorf("no warning saying %q:\n%s", tc.warn, logs)
			}
		})
	}
}
