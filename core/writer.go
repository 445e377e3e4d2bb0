package core

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrWriterClosed is returned by Write after the writer failed or was closed.
var ErrWriterClosed = errors.New("core: connection writer closed")

// Writer serialises whole frames from many goroutines onto one connection.
// Frames are buffered and flushed when no other writer is waiting, so under
// load many frames share one syscall and an idle connection still flushes
// each frame at once. Every flush has a deadline, so a peer that stops
// reading makes Write fail instead of blocking its callers forever.
type Writer struct {
	conn    net.Conn
	timeout time.Duration
	waiting atomic.Int32

	mu  sync.Mutex // guards bw and err
	bw  *bufio.Writer
	err error
}

// NewWriter returns a Writer on conn. timeout bounds each flush; zero means
// 10 seconds.
func NewWriter(conn net.Conn, timeout time.Duration) *Writer {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return &Writer{conn: conn, timeout: timeout, bw: bufio.NewWriterSize(conn, 64<<10)}
}

// Write writes one complete frame. The frame is on the wire (or in the
// kernel) when Write returns nil, unless another writer's frame is about to
// be flushed with it, in which case that writer flushes both.
func (w *Writer) Write(frame []byte) error {
	w.waiting.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	last := w.waiting.Add(-1) == 0
	if w.err != nil {
		return w.err
	}
	if len(frame) > w.bw.Available() {
		// bufio writes to conn from inside Write (flushing the buffer, or
		// writing a big frame straight through); bound that write too,
		// not only flush's, or it runs with no deadline or a stale one.
		_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	}
	if _, err := w.bw.Write(frame); err != nil {
		return w.fail(err)
	}
	if last {
		if err := w.flush(); err != nil {
			return err
		}
	}
	return nil
}

// flush must be called with w.mu held.
func (w *Writer) flush() error {
	if w.bw.Buffered() == 0 {
		return nil
	}
	_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	if err := w.bw.Flush(); err != nil {
		return w.fail(err)
	}
	return nil
}

// fail must be called with w.mu held.
func (w *Writer) fail(err error) error {
	w.err = fmt.Errorf("%w: %w", ErrWriterClosed, err)
	return w.err
}

// Close flushes what is buffered and makes later writes fail. It does not
// close the connection.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return nil
	}
	err := w.flush()
	if w.err == nil {
		w.err = ErrWriterClosed
	}
	return err
}
