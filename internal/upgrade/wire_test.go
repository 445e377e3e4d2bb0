package upgrade

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Files sent over the control socket are the same open files on the other
// side: a pipe written through a passed fd is read through the original.
func TestSendRecvFilesAndMessages(t *testing.T) {
	path := filepath.Join(t.TempDir(), SocketName)
	if _, err := Dial(path, time.Second); !errors.Is(err, ErrNoPredecessor) {
		t.Fatalf("Dial with no socket: %v, want ErrNoPredecessor", err)
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	const n = 450 // more than one batch
	readers := make([]*os.File, n)
	writers := make([]*os.File, n)
	for i := range readers {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		readers[i], writers[i] = r, w
		t.Cleanup(func() { r.Close(); w.Close() })
	}

	errc := make(chan error, 1)
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		m, err := Read(c)
		if err != nil || m.Op != OpTakeover {
			errc <- errors.Join(err, errors.New("want takeover"))
			return
		}
		if err := Write(c, Msg{Op: OpState, State: []byte(`{"x":1}`), Files: n}); err != nil {
			errc <- err
			return
		}
		errc <- SendFiles(c, writers)
	}()

	c, err := Dial(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := Write(c, Msg{Op: OpTakeover, PID: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	m, err := Read(c)
	if err != nil || m.Op != OpState || string(m.State) != `{"x":1}` || m.Files != n {
		t.Fatalf("state message %+v, %v", m, err)
	}
	files, err := RecvFiles(c, m.Files)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		if _, err := f.Write([]byte{byte(i)}); err != nil {
			t.Fatalf("write through passed file %d: %v", i, err)
		}
		f.Close()
		var b [1]byte
		if _, err := readers[i].Read(b[:]); err != nil || b[0] != byte(i) {
			t.Fatalf("pipe %d read %v, %v", i, b, err)
		}
	}
}

// A socket file left by a crashed process is not mistaken for a live one.
func TestStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), SocketName)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // the file stays, nobody listens
	if _, err := Dial(path, time.Second); !errors.Is(err, ErrNoPredecessor) {
		t.Fatalf("Dial on a stale socket: %v, want ErrNoPredecessor", err)
	}
	ln2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()
}

// ListenUnix, the mesh listener's socket: a stale file is replaced, a live
// socket and a file that is not a socket are refused and left alone, the
// file has the asked mode, and closing the listener leaves the file (a
// successor may serve it).
func TestListenUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err := ListenUnix(path, 0o600)
	if err != nil {
		t.Fatalf("ListenUnix over a stale socket: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket file mode %v, want a socket with 0600", fi.Mode())
	}
	if _, err := ListenUnix(path, 0o600); !errors.Is(err, ErrSocketInUse) {
		t.Fatalf("ListenUnix on a live socket: %v, want ErrSocketInUse", err)
	}
	if fi2, err := os.Stat(path); err != nil || !os.SameFile(fi, fi2) {
		t.Fatalf("the live socket's file was replaced (%v)", err)
	}
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("closing the listener removed its file: %v", err)
	}

	plain := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(plain, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(plain, 0o600); err == nil {
		t.Fatal("ListenUnix over a regular file succeeded")
	}
	if b, err := os.ReadFile(plain); err != nil || string(b) != "keep" {
		t.Fatalf("the regular file was touched: %q, %v", b, err)
	}
}
