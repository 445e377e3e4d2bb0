package core

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"
)

// ErrWriterClosed is returned by Write after the writer failed or was closed.
var ErrWriterClosed = errors.New("core: connection writer closed")

// Writer writes whole frames from many goroutines onto one connection
// with group commit, and never holds its lock across the write syscall: the
// first writer to find no flush in progress becomes the flusher and writes
// what is buffered; writers arriving meanwhile only append their frame and
// return, and the flusher writes everything they appended in its next
// syscall. Under load many frames share one syscall without any writer
// sleeping on a mutex; an idle connection still writes each frame at once,
// on the caller's goroutine (no handoff to a writer goroutine). Queue is
// the exception, for one goroutine writing a stream of frames alone: its
// flush runs on a goroutine of its own; TryQueue is Queue for a read loop
// that must not even wait for room.
//
// Before its first syscall the flusher yields the processor once
// (runtime.Gosched), so that goroutines already runnable and about to
// write (the other calls answered by the same read) join the batch; when
// nothing else is runnable the yield returns at once. The proxy's codecs
// and the message sidecar use it: a sidecar relays every frame twice and, on loopback,
// write syscalls are most of its cost; batching this way tripled the mesh
// codec's throughput through two sidecars (see rpcproxy/rpcbench).
//
// Memory is bounded: when maxPending bytes wait for the flusher, writers
// block until it has written them. Every write syscall has a deadline, so a
// peer that stops reading fails the writer (and every later Write) instead
// of blocking its callers forever. Frames a Write accepted are on their
// way but not yet written when it returns; a write error shows on a later
// Write or on Close.
type Writer struct {
	conn       net.Conn
	timeout    time.Duration
	maxPending int

	mu       sync.Mutex
	room     sync.Cond // signalled when the flusher took the buffer
	buf      []byte    // frames waiting to be written
	spare    []byte    // the other buffer, written by the flusher
	flushing bool      // a writer is writing; others only append
	err      error
}

// NewWriter returns a Writer on conn. timeout bounds each write syscall
// (zero: 10 seconds). At most 4 MiB wait to be written (a bigger frame is
// still accepted alone); NewWriterSize sets another bound.
func NewWriter(conn net.Conn, timeout time.Duration) *Writer {
	return NewWriterSize(conn, timeout, 0)
}

// NewWriterSize is NewWriter with maxPending bytes waiting at most (zero:
// 4 MiB).
func NewWriterSize(conn net.Conn, timeout time.Duration, maxPending int) *Writer {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if maxPending <= 0 {
		maxPending = 4 << 20
	}
	w := &Writer{conn: conn, timeout: timeout, maxPending: maxPending,
		buf: make([]byte, 0, 16<<10), spare: make([]byte, 0, 16<<10)}
	w.room.L = &w.mu
	return w
}

// Write queues one complete frame and, unless another writer is flushing,
// writes it (with whatever else is queued) before it returns.
func (w *Writer) Write(frame []byte) error {
	flush, err := w.append(frame)
	if !flush {
		return err
	}
	return w.flush()
}

// Queue is Write for a caller that should not wait for the syscall, such
// as the sidecar's upstream loop, the only writer of deliveries: with
// Write, each of its frames went out in a syscall of its own, since no
// other writer appended while it flushed. Queue appends frame and, unless
// a flush is in progress, starts one on a new goroutine, so that the
// caller goes on to its next frame while the previous ones are written
// and a stream of frames from one goroutine shares syscalls too. A write
// error of that flush is passed to failed (on the flusher's goroutine,
// after Close no longer waits for it); Queue itself returns only an error
// the writer already had. Close waits for the flush as it does for
// Write's.
func (w *Writer) Queue(frame []byte, failed func(error)) error {
	flush, err := w.append(frame)
	if flush {
		go func() {
			if err := w.flush(); err != nil && failed != nil {
				failed(err)
			}
		}()
	}
	return err
}

// TryQueue is Queue for a goroutine that must not wait (a read loop
// answering for many callers): when the frame does not fit under the
// writer's bound it queues nothing and returns false, and the caller
// writes it some other way (Write, on a goroutine that may wait).
func (w *Writer) TryQueue(frame []byte, failed func(error)) (queued bool, err error) {
	flush, err := w.appendMaybe(frame, false)
	if errors.Is(err, errNoRoom) {
		return false, nil
	}
	if flush {
		go func() {
			if err := w.flush(); err != nil && failed != nil {
				failed(err)
			}
		}()
	}
	return true, err
}

var errNoRoom = errors.New("core: no room in the writer")

// append queues frame, waiting for room, and reports whether the caller
// became the flusher (then it must call flush).
func (w *Writer) append(frame []byte) (flush bool, err error) {
	return w.appendMaybe(frame, true)
}

// appendMaybe is append that, unless wait, returns errNoRoom instead of
// waiting for room.
func (w *Writer) appendMaybe(frame []byte, wait bool) (flush bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.err == nil && len(w.buf) > 0 && len(w.buf)+len(frame) > w.maxPending {
		if !wait {
			return false, errNoRoom
		}
		w.room.Wait()
	}
	if w.err != nil {
		return false, w.err
	}
	w.buf = append(w.buf, frame...)
	if w.flushing {
		return false, nil
	}
	w.flushing = true
	return true, nil
}

// flush writes what is queued, as the flusher append appointed. Before
// its first syscall it yields once, so that writers about to append join
// the batch (the type's comment).
func (w *Writer) flush() error {
	runtime.Gosched()
	w.mu.Lock()
	err := w.flushLocked()
	w.flushing = false
	w.room.Broadcast() // Close may wait for the flush to end
	w.mu.Unlock()
	return err
}

// flushLocked writes until the buffer is empty, releasing the lock during
// each syscall. w.mu held on entry and on return.
func (w *Writer) flushLocked() error {
	for len(w.buf) > 0 && w.err == nil {
		b := w.buf
		w.buf = w.spare[:0]
		w.room.Broadcast()
		w.mu.Unlock()
		_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
		_, err := w.conn.Write(b)
		w.mu.Lock()
		if cap(b) <= 1<<20 {
			w.spare = b[:0]
		} else {
			w.spare = nil
		}
		if err != nil {
			w.err = fmt.Errorf("%w: %w", ErrWriterClosed, err)
			w.room.Broadcast()
		}
	}
	return w.err
}

// Close waits for a flush in progress, writes what is queued and makes
// later writes fail with ErrWriterClosed. It does not close the
// connection. Safe to call more than once.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.flushing && w.err == nil {
		w.room.Wait()
	}
	if w.err != nil {
		return nil
	}
	w.flushing = true
	err := w.flushLocked()
	w.flushing = false
	if w.err == nil {
		w.err = ErrWriterClosed
	}
	w.room.Broadcast()
	return err
}
