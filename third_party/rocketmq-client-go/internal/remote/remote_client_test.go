package remote

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveOnce answers every request frame on one accepted connection with a
// response of the same opaque and the request's own ext fields.
func serveOnce(t testing.TB, ln net.Listener) {
	c, err := ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	for {
		var n uint32
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		f := make([]byte, n)
		if _, err := io.ReadFull(c, f); err != nil {
			return
		}
		req, err := decode(f)
		if err != nil {
			t.Error(err)
			return
		}
		resp := &RemotingCommand{Code: 0, Opaque: req.Opaque, Flag: ResponseType, ExtFields: req.ExtFields, Body: req.Body}
		out, _ := encode(resp)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// InvokeSync gets its own response (patch 8 completes it on the reading
// goroutine), from many goroutines at once, and a request the peer never
// answers still ends with its context.
func TestInvokeSyncResponses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() { defer close(done); serveOnce(t, ln) }()
	c := NewRemotingClient(nil)
	defer func() { c.ShutDown(); <-done }()
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		go func(g int) {
			for i := 0; i < 50; i++ {
				want := fmt.Sprintf("%d/%d", g, i)
				req := NewRemotingCommand(10, nil, []byte(want))
				req.ExtFields["who"] = want
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := c.InvokeSync(ctx, ln.Addr().String(), req)
				cancel()
				if err != nil {
					errs <- err
					return
				}
				if resp.Opaque != req.Opaque || resp.ExtFields["who"] != want || string(resp.Body) != want {
					errs <- fmt.Errorf("request %s (opaque %d) got %+v", want, req.Opaque, resp)
					return
				}
			}
			errs <- nil
		}(g)
	}
	for g := 0; g < 16; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// A response nobody waits for any more is dropped.
	c.processCMD(&RemotingCommand{Opaque: -5, Flag: ResponseType}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	lonely := &ResponseFuture{Opaque: -6, Done: make(chan bool), ctx: ctx}
	c.responseTable.Store(lonely.Opaque, lonely)
	if _, err := lonely.waitResponse(); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("unanswered request: %v, want a timeout", err)
	}
}

// Round trips of InvokeSync to a peer on loopback that answers at once,
// one caller. cpu-ns/op is the process's CPU time (the peer's included).
func BenchmarkInvokeSync(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() { defer close(done); serveOnce(b, ln) }()
	c := NewRemotingClient(nil)
	defer func() { c.ShutDown(); <-done }()
	body := make([]byte, 1024)
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.InvokeSync(ctx, ln.Addr().String(), NewRemotingCommand(10, nil, body))
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// silentPeer accepts connections and reads what they send, never
// answering, until the listener closes.
func silentPeer(t *testing.T) (addr string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	return ln.Addr().String(), func() { ln.Close(); <-done }
}

// InvokeSyncTimeout (patch 11) ends an unanswered request with
// ErrRequestTimeout at its timeout, on a new connection (the dial path)
// and on an open one, and when ctx ends first; a timer that fired is not
// seen by the next request that reuses it.
func TestInvokeSyncTimeout(t *testing.T) {
	silent, stopSilent := silentPeer(t)
	defer stopSilent()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() { defer close(done); serveOnce(t, ln) }()
	c := NewRemotingClient(nil)
	defer func() { c.ShutDown(); <-done }()

	for i, timeout := range []time.Duration{50 * time.Millisecond, 50 * time.Millisecond} {
		start := time.Now()
		_, err := c.InvokeSyncTimeout(context.Background(), silent, NewRemotingCommand(10, nil, nil), timeout)
		if err == nil || !strings.Contains(err.Error(), "timeout") {
			t.Fatalf("request %d: %v, want a timeout", i, err)
		}
		if d := time.Since(start); d < timeout {
			t.Fatalf("request %d timed out after %v, before its %v", i, d, timeout)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	start := time.Now()
	_, err = c.InvokeSyncTimeout(ctx, silent, NewRemotingCommand(10, nil, nil), time.Hour)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "timeout") || time.Since(start) > time.Minute {
		t.Fatalf("request with an ending ctx: %v after %v, want a timeout at the ctx's end", err, time.Since(start))
	}
	for i := 0; i < 20; i++ {
		if _, err := c.InvokeSyncTimeout(context.Background(), silent, NewRemotingCommand(10, nil, nil), time.Millisecond); err == nil {
			t.Fatal("unanswered request succeeded")
		}
		resp, err := c.InvokeSyncTimeout(context.Background(), ln.Addr().String(), NewRemotingCommand(10, nil, []byte("x")), 10*time.Second)
		if err != nil || string(resp.Body) != "x" {
			t.Fatalf("answered request after a timeout: %v, %v", resp, err)
		}
	}
}

// A stopped timer that fired unread (Go's timer channels before 1.23, as
// this module's tests run) is drained, so that its next user does not
// time out at once.
func TestStopTimerDrains(t *testing.T) {
	tm := time.NewTimer(time.Nanosecond)
	deadline := time.Now().Add(5 * time.Second)
	for len(tm.C) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
	stopTimer(tm)
	tm.Reset(time.Hour)
	select {
	case <-tm.C:
		t.Fatal("a timer reset to an hour fired at once")
	default:
	}
	stopTimer(tm)
}
