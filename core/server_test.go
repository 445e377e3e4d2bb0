package core

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type testServer struct {
	*Server
	addr  string
	serve chan error // Serve's return value
}

// startServer runs a Server with handler (and the connection limit, if
// given) on a fresh 127.0.0.1 listener. At cleanup it shuts the server
// down and waits for Serve to return.
func startServer(t *testing.T, handler ConnHandler, lim ...ConnLimit) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: NewServer(handler, quietLog()), addr: ln.Addr().String(), serve: make(chan error, 1)}
	for _, l := range lim {
		ts.LimitConns(l)
	}
	go func() { ts.serve <- ts.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Errorf("cleanup Shutdown: %v", err)
		}
		select {
		case err := <-ts.serve:
			if err != nil {
				t.Errorf("Serve = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Shutdown")
		}
		_ = ln.Close()
	})
	return ts
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// echo is a handler that echoes lines until the peer closes or ctx ends.
func echo(started, returned *atomic.Int32) ConnHandler {
	return func(ctx context.Context, conn net.Conn) {
		defer returned.Add(1)
		defer conn.Close()
		started.Add(1)
		stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
		defer stop()
		_, _ = io.Copy(conn, conn)
	}
}

func echoOnce(c net.Conn, msg string) error {
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		return fmt.Errorf("write %q: %w", msg, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read echo of %q: %w", msg, err)
	}
	if line != msg+"\n" {
		return fmt.Errorf("echo = %q, want %q", line, msg+"\n")
	}
	return nil
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if err := echoOnce(c, msg); err != nil {
		t.Fatal(err)
	}
}

func TestServerHandlerPerConnection(t *testing.T) {
	var started, returned atomic.Int32
	ts := startServer(t, echo(&started, &returned))
	const n = 20
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dial(t, ts.addr)
	}
	// All handlers run at once: each connection is served while the
	// others are still open.
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			if err := echoOnce(c, fmt.Sprintf("conn %d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if got := started.Load(); got != n {
		t.Fatalf("%d handlers ran for %d connections", got, n)
	}
	// A handler returns when its peer hangs up.
	for _, c := range conns[:n/2] {
		_ = c.Close()
	}
	waitFor(t, 5*time.Second, "handlers of closed connections to return", func() bool { return returned.Load() == n/2 })
}

func TestServerCloseStopsAcceptingOnly(t *testing.T) {
	var started, returned atomic.Int32
	ts := startServer(t, echo(&started, &returned))
	c := dial(t, ts.addr)
	roundTrip(t, c, "before close")

	ts.Close()
	if err := recvWithin(t, ts.serve, 5*time.Second, "Serve to return after Close"); err != nil {
		t.Fatalf("Serve after Close = %v, want nil", err)
	}
	ts.serve <- nil // for the cleanup
	ts.Close()      // twice is fine

	// New connections are refused, or at worst closed unserved.
	if nc, err := net.Dial("tcp", ts.addr); err == nil {
		_ = nc.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = nc.Write([]byte("anyone?\n"))
		if _, err := nc.Read(make([]byte, 1)); err == nil {
			t.Fatal("a connection dialled after Close was served")
		}
		_ = nc.Close()
	}
	if got := started.Load(); got != 1 {
		t.Fatalf("%d handlers started, want 1", got)
	}
	// The running handler goes on.
	roundTrip(t, c, "after close")
	if got := returned.Load(); got != 0 {
		t.Fatalf("%d handlers returned after Close, want 0", got)
	}
}

func TestServerShutdownCancelsAndWaits(t *testing.T) {
	const n = 8
	var returned atomic.Int32
	started := make(chan struct{}, n)
	ctxErrs := make(chan error, n)
	ts := startServer(t, func(ctx context.Context, conn net.Conn) {
		defer conn.Close()
		started <- struct{}{}
		<-ctx.Done()
		ctxErrs <- ctx.Err()
		returned.Add(1)
	})
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dial(t, ts.addr)
	}
	for range n {
		recvWithin(t, started, 5*time.Second, "a handler to start")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	// Shutdown waited: every handler has returned by now.
	if got := returned.Load(); got != n {
		t.Fatalf("Shutdown returned with %d of %d handlers returned", got, n)
	}
	for range n {
		if err := <-ctxErrs; !errors.Is(err, context.Canceled) {
			t.Fatalf("handler context error = %v, want Canceled", err)
		}
	}
	if err := recvWithin(t, ts.serve, 5*time.Second, "Serve to return after Shutdown"); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	ts.serve <- nil
	// Handlers closed their connections.
	for _, c := range conns {
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("connection still open after its handler returned")
		}
	}
	// Twice is fine.
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown = %v", err)
	}
}

func TestServerShutdownStubbornHandler(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	ts := startServer(t, func(_ context.Context, conn net.Conn) {
		defer conn.Close()
		started <- struct{}{}
		<-release // ignores its context
	})
	t.Cleanup(unblock) // runs before startServer's cleanup
	dial(t, ts.addr)
	recvWithin(t, started, 5*time.Second, "the handler to start")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	begin := time.Now()
	err := ts.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck handler = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("Shutdown took %v with a 50ms context", d)
	}

	// An already-cancelled context returns at once too.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := ts.Shutdown(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with a cancelled context = %v, want Canceled", err)
	}

	unblock()
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown after the handler returned = %v", err)
	}
}

func TestServerServeAfterClose(t *testing.T) {
	for _, stop := range []struct {
		name string
		do   func(*Server)
	}{
		{"Close", func(s *Server) { s.Close() }},
		{"Shutdown", func(s *Server) {
			if err := s.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(stop.name, func(t *testing.T) {
			ran := make(chan struct{}, 1)
			s := NewServer(func(ctx context.Context, conn net.Conn) {
				ran <- struct{}{}
				_ = conn.Close()
			}, quietLog())
			stop.do(s)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ln.Close() })
			if err := s.Serve(ln); err != nil {
				t.Fatalf("Serve after %s = %v, want nil", stop.name, err)
			}
			if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Accept on the listener after Serve = %v, want net.ErrClosed", err)
			}
			select {
			case <-ran:
				t.Fatal("handler ran")
			default:
			}
		})
	}
}

// Serve returns the accept error that stopped it when the server was not
// closed.
func TestServerServeReturnsAcceptError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(func(context.Context, net.Conn) {}, quietLog())
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	_ = ln.Close()
	if err := s.Serve(ln); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve on a listener closed behind its back = %v, want net.ErrClosed", err)
	}
}

// Shutdown racing with incoming connections: every accepted connection is
// either served (and its handler waited for) or closed unserved.
func TestServerShutdownUnderLoad(t *testing.T) {
	var started, returned atomic.Int32
	ts := startServer(t, echo(&started, &returned))
	var wg sync.WaitGroup
	stopDialling := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stopDialling:
					return
				default:
				}
				c, err := net.Dial("tcp", ts.addr)
				if err != nil {
					return // listener closed
				}
				_ = c.Close()
			}
		})
	}
	waitFor(t, 5*time.Second, "some connections to be served", func() bool { return started.Load() >= 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if s, r := started.Load(), returned.Load(); s != r {
		t.Fatalf("Shutdown returned with %d handlers started and %d returned", s, r)
	}
	close(stopDialling)
	wg.Wait()
}
