package netfault

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echo serves one loopback echo listener for the test.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo of %q = %q, %v", msg, buf, err)
	}
}

func TestCutHoldsAndHealReleases(t *testing.T) {
	r, err := NewRelay(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "before")

	r.Cut()
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatalf("write during the cut: %v (a silent cut reports nothing)", err)
	}
	// Nothing can come back while cut: the read deadline passes, and the
	// connection is still open (no EOF, no reset).
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read during the cut = %d bytes, %v; want the deadline to pass", n, err)
	}
	// A connection made during the cut hears nothing either.
	c2, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, _ = c2.Write([]byte("late"))

	r.Heal()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "held" {
		t.Fatalf("after Heal got %q, %v; want the held bytes", buf, err)
	}
	_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c2, buf); err != nil || string(buf) != "late" {
		t.Fatalf("connection made during the cut got %q, %v after Heal", buf, err)
	}
	roundTrip(t, c, "after")
}

func TestCloseEndsConnections(t *testing.T) {
	r, err := NewRelay(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "x")
	r.Cut() // Close must not wait for a Heal
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after Close = %v, want the connection closed", err)
	}
	if _, err := net.Dial("tcp", r.Addr()); err == nil {
		t.Fatal("the relay still accepts after Close")
	}
}
