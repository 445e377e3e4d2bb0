package msgmesh_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// startOrRefuse runs the binary with args and waits until it either
// exits (returned true, with its log) or answers /healthz on httpAddr.
func startOrRefuse(t *testing.T, httpAddr string, args ...string) (refused bool, log string) {
	t.Helper()
	p := sidecartest.StartProc(t, sidecarBinary(t), args...)
	sidecartest.WaitFor(t, 30*time.Second, "the sidecar to exit or answer /healthz", func() bool {
		select {
		case <-p.Done:
			refused = true
			return true
		default:
		}
		return sidecartest.Healthy(httpAddr)
	})
	if refused && p.Cmd.ProcessState.Success() {
		t.Errorf("the sidecar exited with status 0 on a refused start")
	}
	return refused, p.Output()
}

// TestRemoteListenersNeedAllowRemote runs the binary with its HTTP API,
// mesh listener or embedded NATS listener on an address beyond loopback:
// it refuses to start and says why and what to pass, unless --allow-remote
// (or access.allow_remote in the config file) names that listener.
func TestRemoteListenersNeedAllowRemote(t *testing.T) {
	sidecarBinary(t)
	for _, c := range []struct {
		name  string
		args  func(mesh, http, nats string) []string
		file  string   // the config file, if any
		wants []string // in the refusal; none: it must start
	}{
		{"http on every interface", func(_, h, _ string) []string { return []string{"--http", "0.0.0.0:" + h} },
			"", []string{"--http 0.0.0.0:", "is not a loopback address", "--allow-remote http"}},
		{"http on [::]", func(_, h, _ string) []string { return []string{"--http", "[::]:" + h} },
			"", []string{"--http [::]:", "--allow-remote http"}},
		{"mesh with an empty host", func(m, _, _ string) []string { return []string{"--listen", ":" + m} },
			"", []string{"--listen :", "--allow-remote mesh"}},
		{"mesh on a host name", func(m, _, _ string) []string { return []string{"--listen", "sidecar.example:" + m} },
			"", []string{"--listen sidecar.example:", "--allow-remote mesh"}},
		{"embedded nats on every interface", func(_, _, n string) []string { return []string{"--nats-listen", "0.0.0.0:" + n} },
			"", []string{"--nats-listen 0.0.0.0:", "--allow-remote nats", "credentials"}},
		{"allowing another listener does not do", func(_, h, _ string) []string {
			return []string{"--http", "0.0.0.0:" + h, "--allow-remote", "mesh,nats"}
		}, "", []string{"--allow-remote http"}},
		{"unknown listener", func(_, _, _ string) []string { return []string{"--allow-remote", "htp"} },
			"", []string{`unknown listener "htp"`}},
		{"nats-listen without the embedded server", func(_, _, n string) []string {
			return []string{"--nats-url", "nats://127.0.0.1:1", "--nats-listen", "127.0.0.1:" + n}
		}, "", []string{"--nats-listen exposes the embedded NATS server"}},
		{"bad allowed host", func(_, _, _ string) []string { return []string{"--http-allowed-hosts", "pod:7601"} },
			"", []string{`HTTPAllowedHosts[0] "pod:7601"`}},
		{"http allowed by the flag", func(_, h, _ string) []string {
			return []string{"--http", "0.0.0.0:" + h, "--allow-remote", "http"}
		}, "", nil},
		{"mesh and nats allowed by the config file", func(m, _, n string) []string {
			return []string{"--listen", "0.0.0.0:" + m, "--nats-listen", "0.0.0.0:" + n}
		}, "access:\n  allow_remote: [mesh, nats]\n", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			port := func() string { _, p, _ := net.SplitHostPort(freePort(t)); return p }
			meshPort, httpPort, natsPort := port(), port(), port()
			args := []string{"--data-dir", t.TempDir(), "--listen", "127.0.0.1:" + meshPort, "--http", "127.0.0.1:" + httpPort}
			if c.file != "" {
				path := filepath.Join(t.TempDir(), "msgmesh.yaml")
				if err := os.WriteFile(path, []byte(c.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", path)
			}
			args = append(args, c.args(meshPort, httpPort, natsPort)...)
			refused, log := startOrRefuse(t, "127.0.0.1:"+httpPort, args...)
			switch {
			case c.wants == nil && refused:
				t.Fatalf("msgmesh %s: refused to start:\n%s", strings.Join(args, " "), log)
			case c.wants != nil && !refused:
				t.Fatalf("msgmesh %s: started; want a refusal", strings.Join(args, " "))
			case c.wants == nil:
				if !strings.Contains(log, "as --allow-remote allows") {
					t.Errorf("no warning of the listener beyond loopback in the log:\n%s", log)
				}
				return
			}
			for _, w := range c.wants {
				if !strings.Contains(log, w) {
					t.Errorf("the refusal does not say %q:\n%s", w, log)
				}
			}
			t.Logf("refused: %s", strings.TrimSpace(log))
		})
	}
}

// natsCredsOf reads the credentials file the sidecar wrote.
func natsCredsOf(t *testing.T, path string) (user, password string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "NATS_USER="); ok {
			user = v
		}
		if v, ok := strings.CutPrefix(sc.Text(), "NATS_PASSWORD="); ok {
			password = v
		}
	}
	if user == "" || len(password) < 32 {
		t.Fatalf("%s: user %q, password of %d characters", path, user, len(password))
	}
	return user, password
}

// TestEmbeddedNATSNeedsCredentials exposes the binary's embedded NATS
// server beyond loopback (--nats-listen 0.0.0.0:… --allow-remote nats): a
// client without credentials is refused, one with the credentials the
// sidecar wrote into its data directory (0600, path in the log) sees the
// stream the sidecar's own in-process connection publishes to. A restart
// keeps the credentials; a credentials file others may read stops the
// start.
func TestEmbeddedNATSNeedsCredentials(t *testing.T) {
	bin := sidecarBinary(t)
	dataDir := t.TempDir()
	creds := filepath.Join(dataDir, "nats-credentials.env")
	httpAddr, natsAddr := freePort(t), freePort(t)
	_, natsPort, _ := net.SplitHostPort(natsAddr)
	args := []string{"--data-dir", dataDir, "--listen", freePort(t), "--http", httpAddr, "--log-json"}
	p := sidecartest.StartProc(t, bin, append(args, "--nats-listen", "0.0.0.0:"+natsPort, "--allow-remote", "nats")...)
	sidecartest.WaitHealthy(t, p, httpAddr)
	if !strings.Contains(p.Output(), `"credentials":"`+creds+`"`) {
		t.Errorf("the log does not name the credentials file %s:\n%s", creds, p.Output())
	}
	st, err := os.Stat(creds)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, %v; want mode 0600", st, err)
	}
	user, password := natsCredsOf(t, creds)

	// Every address the server listens on wants the credentials.
	urls := []string{"nats://127.0.0.1:" + natsPort}
	if ip := nonLoopbackIP(); ip != "" {
		urls = append(urls, "nats://"+net.JoinHostPort(ip, natsPort))
	}
	t.Logf("trying %v", urls)
	for _, u := range urls {
		nc, err := nats.Connect(u, nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
			t.Fatalf("%s without credentials: connected", u)
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("%s without credentials: %v, want an authorization violation", u, err)
		}
		if nc, err := nats.Connect(u, nats.UserInfo(user, "wrong")); err == nil {
			nc.Close()
			t.Fatalf("%s with a wrong password: connected", u)
		}
	}

	// The sidecar's own (in-process) connection works: a publish through
	// it is in the stream a client with the credentials sees.
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, nil); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	status, body := sidecartest.HTTPDo(t, http.MethodPost, "http://"+httpAddr+"/v1/publish/"+topic, "application/octet-stream", []byte("m1"))
	var ack struct{ Stream string }
	if err := json.Unmarshal([]byte(body), &ack); status != http.StatusOK || err != nil {
		t.Fatalf("publish: %d %s", status, body)
	}
	for _, u := range urls {
		nc, err := nats.Connect(u, nats.UserInfo(user, password))
		if err != nil {
			t.Fatalf("%s with the credentials: %v", u, err)
		}
		js, err := nc.JetStream()
		if err != nil {
			t.Fatal(err)
		}
		info, err := js.StreamInfo(ack.Stream)
		nc.Close()
		if err != nil || info.State.Msgs != 1 {
			t.Fatalf("%s with the credentials: stream %s: %+v, %v; want 1 message", u, ack.Stream, info, err)
		}
	}

	// A restart (on loopback now, where the credentials are wanted too)
	// keeps them.
	before, _ := os.ReadFile(creds)
	_ = p.Cmd.Process.Signal(os.Interrupt)
	<-p.Done
	natsAddr2 := freePort(t)
	p = sidecartest.StartProc(t, bin, append(args, "--nats-listen", natsAddr2)...)
	sidecartest.WaitHealthy(t, p, httpAddr)
	if after, _ := os.ReadFile(creds); string(after) != string(before) {
		t.Fatalf("the restart changed the credentials file")
	}
	if nc, err := nats.Connect("nats://"+natsAddr2, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("loopback listener without credentials: connected")
	}
	nc, err := nats.Connect("nats://"+natsAddr2, nats.UserInfo(user, password))
	if err != nil {
		t.Fatalf("loopback listener with the credentials after the restart: %v", err)
	}
	nc.Close()
	_ = p.Cmd.Process.Signal(os.Interrupt)
	<-p.Done

	// Credentials others may read are not used.
	if err := os.Chmod(creds, 0o644); err != nil {
		t.Fatal(err)
	}
	refused, log := startOrRefuse(t, httpAddr, append(args, "--nats-listen", freePort(t))...)
	if !refused || !strings.Contains(log, "lets other users read them") {
		t.Fatalf("start with a world-readable credentials file: refused %v:\n%s", refused, log)
	}
}

// nonLoopbackIP is an IPv4 address of this host beyond loopback, "" when
// there is none.
func nonLoopbackIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}
