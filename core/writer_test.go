package core

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// Test frames are a 4-byte big-endian length and a body. The body of frame
// (g, i) is an 8-byte header holding g and i followed by filler bytes that
// are a function of g, i and the offset, so a frame that was split,
// interleaved with another or corrupted does not check out.

func frameBodyLen(g, i int) int {
	if i%97 == 13 {
		// Now and then a frame larger than the Writer's buffer, so that
		// bufio writes straight through to the connection.
		return 70<<10 + g
	}
	return 8 + (g*131+i*17)%3000
}

func fillByte(g, i, off int) byte { return byte(g*7 + i*3 + off) }

func makeFrame(g, i int) []byte {
	n := frameBodyLen(g, i)
	f := make([]byte, 4+n)
	binary.BigEndian.PutUint32(f, uint32(n))
	binary.BigEndian.PutUint32(f[4:], uint32(g))
	binary.BigEndian.PutUint32(f[8:], uint32(i))
	for off := 8; off < n; off++ {
		f[4+off] = fillByte(g, i, off)
	}
	return f
}

// readFrames reads frames from r until EOF and checks each: the body must be
// exactly the one makeFrame built, and each goroutine's frames must arrive
// in the order it wrote them. It returns the number of frames read.
func readFrames(r io.Reader, goroutines int) (int, error) {
	br := bufio.NewReader(r)
	next := make([]int, goroutines)
	var hdr [4]byte
	count := 0
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if err == io.EOF {
				return count, nil
			}
			return count, fmt.Errorf("frame %d: reading length: %w", count, err)
		}
		n := int(binary.BigEndian.Uint32(hdr[:]))
		if n < 8 || n > 1<<20 {
			return count, fmt.Errorf("frame %d: implausible length %d", count, n)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return count, fmt.Errorf("frame %d: reading %d-byte body: %w", count, n, err)
		}
		g := int(binary.BigEndian.Uint32(body))
		i := int(binary.BigEndian.Uint32(body[4:]))
		if g < 0 || g >= goroutines {
			return count, fmt.Errorf("frame %d: bad goroutine %d", count, g)
		}
		if i != next[g] {
			return count, fmt.Errorf("frame %d: goroutine %d: got frame %d, want %d", count, g, i, next[g])
		}
		next[g]++
		if want := frameBodyLen(g, i); n != want {
			return count, fmt.Errorf("frame (%d,%d): length %d, want %d", g, i, n, want)
		}
		for off := 8; off < n; off++ {
			if body[off] != fillByte(g, i, off) {
				return count, fmt.Errorf("frame (%d,%d): byte %d corrupt", g, i, off)
			}
		}
		count++
	}
}

func TestWriterConcurrentFramesArriveIntact(t *testing.T) {
	checkConcurrentFrames(t, 32, 500, func(w *Writer, g, i int) error { return w.Write(makeFrame(g, i)) })
}

// checkConcurrentFrames has goroutines write perG frames each with write,
// then closes the Writer, and checks that the peer read them all, whole
// and in each goroutine's order.
func checkConcurrentFrames(t *testing.T, goroutines, perG int, write func(w *Writer, g, i int) error) {
	t.Helper()
	c, s := tcpPair(t)
	type result struct {
		n   int
		err error
	}
	got := make(chan result, 1)
	go func() {
		n, err := readFrames(s, goroutines)
		got <- result{n, err}
	}()

	w := NewWriter(c, 0)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				if err := write(w, g, i); err != nil {
					errs <- fmt.Errorf("goroutine %d frame %d: %w", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r := recvWithin(t, got, 30*time.Second, "the reader to see EOF")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.n != goroutines*perG {
		t.Fatalf("read %d frames, want %d", r.n, goroutines*perG)
	}
}

// A peer that stops reading must make Write fail within the flush timeout,
// not block its caller forever, and the Writer stays failed.
func TestWriterStalledPeerTimesOut(t *testing.T) {
	cases := []struct {
		name  string
		frame int // bytes per Write
	}{
		// Larger than the Writer's 64 KiB buffer: bufio writes straight
		// to the connection from inside Write.
		{"big frames", 4 << 20},
		// Smaller than the buffer: every Write is flushed by flush().
		{"small frames", 16 << 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, s := tcpPair(t)
			// Small kernel buffers so they fill quickly; s is never read.
			_ = c.SetWriteBuffer(16 << 10)
			_ = s.SetReadBuffer(16 << 10)
			const timeout = 100 * time.Millisecond
			w := NewWriter(c, timeout)
			frame := bytes.Repeat([]byte{'x'}, tc.frame)

			type result struct {
				err     error
				slowest time.Duration
				writes  int
			}
			done := make(chan result, 1)
			go func() {
				var r result
				for r.writes = 0; r.writes < 100000; r.writes++ {
					start := time.Now()
					err := w.Write(frame)
					r.slowest = max(r.slowest, time.Since(start))
					if err != nil {
						r.err = err
						break
					}
				}
				done <- r
			}()
			// If Write blocks forever, closing the connection at cleanup
			// unblocks it; the test has failed by then.
			r := recvWithin(t, done, 20*time.Second, "Write to fail on a peer that does not read")
			if r.err == nil {
				t.Fatalf("%d writes of %d bytes to a peer that does not read all succeeded", r.writes, tc.frame)
			}
			if !errors.Is(r.err, ErrWriterClosed) {
				t.Fatalf("Write error %v is not ErrWriterClosed", r.err)
			}
			if !errors.Is(r.err, os.ErrDeadlineExceeded) {
				t.Fatalf("Write error %v is not a deadline error", r.err)
			}
			// Generous slack for -race and loaded machines, but far below
			// "forever".
			if limit := timeout + 2*time.Second; r.slowest > limit {
				t.Fatalf("slowest Write took %v; timeout is %v", r.slowest, timeout)
			}
			for _, f := range [][]byte{frame, []byte("tiny"), nil} {
				if err := w.Write(f); !errors.Is(err, ErrWriterClosed) {
					t.Fatalf("Write(%d bytes) after failure = %v, want ErrWriterClosed", len(f), err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatalf("Close after failure = %v, want nil", err)
			}
		})
	}
}

// The flush deadline is set per flush. A frame larger than the free buffer
// space is written to the connection from inside bufio.Writer.Write, which
// must get a fresh deadline too, not the stale one of an earlier flush.
func TestWriterBigFrameAfterIdle(t *testing.T) {
	c, s := tcpPair(t)
	drained := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, s)
		drained <- n
	}()
	const timeout = 50 * time.Millisecond
	w := NewWriter(c, timeout)
	if err := w.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	// Let the deadline of that flush lapse: the connection is idle, as a
	// real one is between bursts. (Waiting for the clock, not for another
	// goroutine.)
	<-time.After(3 * timeout)
	big := make([]byte, 100<<10)
	if err := w.Write(big); err != nil {
		t.Fatalf("Write of %d bytes on a healthy, idle connection: %v", len(big), err)
	}
	if err := w.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	want := int64(len("hello") + len(big) + len("bye"))
	if n := recvWithin(t, drained, 10*time.Second, "the reader to drain"); n != want {
		t.Fatalf("peer read %d bytes, want %d", n, want)
	}
}

// A single Write on an idle connection is flushed by that Write: the peer
// gets it without any further write or Close.
func TestWriterSingleWriteFlushes(t *testing.T) {
	c, s := tcpPair(t)
	w := NewWriter(c, time.Second)
	msg := []byte("one frame, no followers")
	if err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	n := len(w.buf)
	w.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d bytes left queued after a lone Write", n)
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatalf("peer did not get the frame: %v", err)
	}
	if !bytes.Equal(buf, msg) {
		t.Fatalf("peer got %q, want %q", buf, msg)
	}
}

// A Write that finds a flush in progress queues its frame for that flusher;
// Close flushes it and later writes fail.
func TestWriterCloseFlushesBuffered(t *testing.T) {
	c, s := tcpPair(t)
	w := NewWriter(c, time.Second)

	// Pretend another writer is flushing.
	setFlushing(w, true)
	if err := w.Write([]byte("buffered ")); err != nil {
		t.Fatal(err)
	}
	if err := w.Write([]byte("twice")); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	n := len(w.buf)
	w.mu.Unlock()
	setFlushing(w, false)
	if n != len("buffered twice") {
		t.Fatalf("%d bytes queued, want %d (batching did not hold the frames)", n, len("buffered twice"))
	}

	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := w.Write([]byte("late")); !errors.Is(err, ErrWriterClosed) {
		t.Fatalf("Write after Close = %v, want ErrWriterClosed", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	// Close does not close the connection.
	if _, err := c.Write([]byte("!")); err != nil {
		t.Fatalf("connection unusable after Writer.Close: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "buffered twice!" {
		t.Fatalf("peer got %q, want %q", got, "buffered twice!")
	}
}

func TestWriterCloseReportsFlushError(t *testing.T) {
	c, _ := tcpPair(t)
	w := NewWriter(c, time.Second)
	setFlushing(w, true)
	if err := w.Write([]byte("stranded")); err != nil {
		t.Fatal(err)
	}
	setFlushing(w, false)
	_ = c.Close()
	err := w.Close()
	if !errors.Is(err, ErrWriterClosed) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Close with a dead connection = %v, want ErrWriterClosed wrapping net.ErrClosed", err)
	}
	if err := w.Write([]byte("x")); !errors.Is(err, ErrWriterClosed) {
		t.Fatalf("Write after failed Close = %v, want ErrWriterClosed", err)
	}
}

// Frames queued (Queue) and written (Write) by many goroutines at once
// arrive whole and in each goroutine's order, and Close writes what the
// queued flushes have not.
func TestWriterQueueFramesArriveIntact(t *testing.T) {
	failed := func(err error) { t.Errorf("queued flush failed: %v", err) }
	checkConcurrentFrames(t, 16, 500, func(w *Writer, g, i int) error {
		if (g+i)%3 == 0 {
			return w.Write(makeFrame(g, i))
		}
		return w.Queue(makeFrame(g, i), failed)
	})
}

// TryQueue queues nothing and says so when the frame does not fit under
// the writer's bound, instead of waiting for room; frames it queued
// arrive, with those of Queue and Write, whole and in order.
func TestWriterTryQueue(t *testing.T) {
	c, s := tcpPair(t)
	w := NewWriterSize(c, 0, 64)
	setFlushing(w, true) // frames stay queued
	if ok, err := w.TryQueue([]byte("0123456789012345678901234567890123456789"), nil); !ok || err != nil {
		t.Fatalf("TryQueue into an empty writer = %v, %v", ok, err)
	}
	if ok, err := w.TryQueue([]byte("abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"), nil); ok || err != nil {
		t.Fatalf("TryQueue past the bound = %v, %v; want false, nil", ok, err)
	}
	setFlushing(w, false)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "0123456789012345678901234567890123456789" {
		t.Fatalf("read %q, %v: want only the queued frame", got, err)
	}
	failed := func(err error) { t.Errorf("queued flush failed: %v", err) }
	checkConcurrentFrames(t, 8, 500, func(w *Writer, g, i int) error {
		if (g+i)%2 == 0 {
			if ok, err := w.TryQueue(makeFrame(g, i), failed); ok || err != nil {
				return err
			}
		}
		return w.Write(makeFrame(g, i))
	})
}

// A queued flush that fails (a peer that stops reading) tells its caller
// through failed, once, and later frames are refused.
func TestWriterQueueFailureReported(t *testing.T) {
	c, s := tcpPair(t)
	_ = c.SetWriteBuffer(16 << 10)
	_ = s.SetReadBuffer(16 << 10) // s is never read
	w := NewWriter(c, 100*time.Millisecond)
	reported := make(chan error, 100)
	failed := func(err error) { reported <- err }
	frame := bytes.Repeat([]byte{'x'}, 16<<10)
	var qerr error
	for range 100000 {
		if qerr = w.Queue(frame, failed); qerr != nil {
			break
		}
	}
	if !errors.Is(qerr, ErrWriterClosed) {
		t.Fatalf("Queue to a peer that does not read ended with %v, want ErrWriterClosed", qerr)
	}
	err := recvWithin(t, reported, 20*time.Second, "failed to be called")
	if !errors.Is(err, ErrWriterClosed) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("failed got %v, want ErrWriterClosed wrapping a deadline error", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close after failure = %v, want nil", err)
	}
	if n := len(reported); n != 0 {
		t.Fatalf("failed called %d more times", n)
	}
}

func BenchmarkWriterParallel(b *testing.B) {
	c, s := tcpPair(b)
	drained := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, s)
		close(drained)
	}()
	b.Cleanup(func() { _ = c.Close(); <-drained })
	w := NewWriter(c, 0)
	frame := make([]byte, 1<<10)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := w.Write(frame); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// setFlushing pretends (or stops pretending) that another writer is
// flushing, the only way to leave frames queued on purpose.
func setFlushing(w *Writer, on bool) {
	w.mu.Lock()
	w.flushing = on
	w.room.Broadcast()
	w.mu.Unlock()
}
