package sidecarapp

import (
	"log/slog"
	"os"
	"strings"
	"testing"
)

func TestLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7601": true, "127.9.9.9:0": true, "localhost:7601": true, "LOCALHOST:1": true,
		"[::1]:7601": true, "[::ffff:127.0.0.1]:7601": true,
		"0.0.0.0:7601": false, "[::]:7601": false, ":7601": false, "10.0.0.5:7601": false,
		"sidecar.example:7601": false, "localhost.example:7601": false, "127.0.0.1": false,
		"unix:/run/msgmesh/mesh.sock": true, // no other host reaches a unix socket
	} {
		if got := loopbackAddr(addr); got != want {
			t.Errorf("loopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}

// The access section of the config file and the flags add up; unknown
// listener names are errors in either.
func TestAccessSection(t *testing.T) {
	f, err := LoadFile(writeFile(t, "access:\n  allow_remote: [mesh]\n  http_allowed_hosts: [pod.local]\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := f.Access.merge("http, nats", "10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(a.AllowRemote, ",") != "mesh,http,nats" || strings.Join(a.HTTPAllowedHosts, ",") != "pod.local,10.0.0.0/8" {
		t.Fatalf("merged: %+v", a)
	}
	log := slog.New(slog.DiscardHandler)
	if err := checkListeners(log, a, listener{name: remoteHTTP, flag: "--http", addr: "0.0.0.0:1"}); err != nil {
		t.Errorf("allowed listener refused: %v", err)
	}
	if err := checkListeners(log, Access{}, listener{name: remoteHTTP, flag: "--http", addr: "0.0.0.0:1"}); err == nil {
		t.Error("a remote listener passed without --allow-remote")
	}
	if _, err := LoadFile(writeFile(t, "access:\n  allow_remote: [htttp]\n")); err == nil || !strings.Contains(err.Error(), `access.allow_remote: unknown listener "htttp"`) {
		t.Errorf("unknown listener in the file: %v", err)
	}
	if _, err := (Access{}).merge("web", ""); err == nil || !strings.Contains(err.Error(), `--allow-remote: unknown listener "web"`) {
		t.Errorf("unknown listener in the flag: %v", err)
	}
}

// The credentials are made once, 0600, and read back the same.
func TestNATSCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	u1, p1, path, err := ensureNATSCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, %v", path, st, err)
	}
	u2, p2, _, err := ensureNATSCredentials(dir)
	if err != nil || u1 != u2 || p1 != p2 || len(p1) < 40 {
		t.Fatalf("second read: %q %q %v; first %q %q", u2, p2, err, u1, p1)
	}
	if err := os.WriteFile(path, []byte("NATS_USER=x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ensureNATSCredentials(dir); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Errorf("a file without a password: %v", err)
	}
}

// The gRPC listener is checked like the others: beyond loopback only with
// --allow-remote grpc; the binary refuses to start otherwise, naming the
// flag and what to pass.
func TestGRPCExposure(t *testing.T) {
	var stderr strings.Builder
	err := Run(t.Context(), []string{"--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--grpc", "0.0.0.0:0"}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--grpc 0.0.0.0:0 is not a loopback address") || !strings.Contains(err.Error(), "--allow-remote grpc") {
		t.Fatalf("--grpc on every interface: %v", err)
	}
	log := slog.New(slog.DiscardHandler)
	grpcOn := func(addr string) listener { return listener{remoteGRPC, "--grpc", addr, "test"} }
	if _, err := checkAccess(log, &File{}, "grpc", "", "127.0.0.1:1", "127.0.0.1:2", "", false, grpcOn("0.0.0.0:3")); err != nil {
		t.Errorf("--allow-remote grpc: %v", err)
	}
	if _, err := checkAccess(log, &File{}, "", "", "127.0.0.1:1", "127.0.0.1:2", "", false, grpcOn("")); err != nil {
		t.Errorf("--grpc \"\" (off): %v", err)
	}
}
