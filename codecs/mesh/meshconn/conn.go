// Package meshconn is the connection engine of the mesh protocol: what
// every side of a mesh connection does the same way, written once. The
// SDK (client), both sides of forwarding (msgmesh/forward), the sidecar's
// app sessions (msgmesh) and the RPC codec (codecs/meshrpc) run on it,
// and only decide what the frames mean.
//
// It sits between the wire codec (package mesh: bytes ↔ frames) and the
// protocol-free connection layer (package core: the group-commit Writer,
// request ids, the table of outstanding requests), and adds what the mesh
// protocol says about a connection (docs/protocol.md §2, §4):
//
//   - Writer: frames encoded into pooled buffers and handed to one
//     core.Writer, so many goroutines write one connection with group
//     commit and no allocation per frame;
//   - Conn: a single read loop (Run), request ids, answers matched to
//     requests by id (Start, Call; a ctx gives up waiting), HEARTBEAT
//     requests answered and sent, a connection that went quiet for three
//     heartbeats closed, frames over the size limit answered or failed
//     without losing the connection, and Close that fails what is
//     outstanding exactly once;
//   - Freeze: the read loop stops at a frame boundary without closing the
//     connection, and the Reader hands its unread bytes to a hot upgrade's
//     next process.
//
// A Conn owns one goroutine besides the caller's read loop (the heartbeat
// ticker); Run returns only after it has stopped.
package meshconn

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/core"
)

// Writer writes mesh frames onto one connection from many goroutines. Each
// frame is encoded into a pooled buffer and copied into the core.Writer's
// batch (or written) before Send returns, so the buffer is reused at once.
type Writer struct {
	w   *core.Writer
	max int
	// fail, if set, is told of a write error and returns what Send
	// returns (a Conn closes itself).
	fail func(error) error
	// failLater passes a write error of a queued frame on to fail; made
	// once, so that Queue does not allocate a method value per frame.
	failLater func(error)
}

// NewWriter returns a Writer on nc. timeout bounds each write syscall (zero:
// core.NewWriter's default); maxFrame bounds the frames it sends (zero:
// mesh.DefaultMaxFrameSize): a bigger one is refused with a
// *mesh.FrameSizeError and nothing is written.
func NewWriter(nc net.Conn, timeout time.Duration, maxFrame int) *Writer {
	w := &Writer{w: core.NewWriter(nc, timeout), max: maxFrame}
	w.failLater = func(err error) {
		if w.fail != nil {
			_ = w.fail(err)
		}
	}
	return w
}

// bufs holds encode buffers.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooled keeps a few huge frames from pinning memory in the pool.
const maxPooled = 1 << 20

// Send encodes and writes one frame. An encode error (the frame is over
// the limit) leaves the connection usable; a write error does not (see
// core.Writer).
func (w *Writer) Send(kind mesh.Kind, flags mesh.Flags, id uint64, payload mesh.Encoder) error {
	return w.encode(kind, flags, id, payload, false)
}

// Queue is Send that does not wait for the write syscall
// (core.Writer.Queue): for a goroutine sending a stream of frames alone,
// whose frames then share syscalls. A write error found later closes a
// Conn as Send's does; Queue returns only an encode error or an error the
// writer already had.
func (w *Writer) Queue(kind mesh.Kind, flags mesh.Flags, id uint64, payload mesh.Encoder) error {
	return w.encode(kind, flags, id, payload, true)
}

// encode is Send, or Queue if queue.
func (w *Writer) encode(kind mesh.Kind, flags mesh.Flags, id uint64, payload mesh.Encoder, queue bool) error {
	bp := bufs.Get().(*[]byte)
	b, err := mesh.AppendFrame((*bp)[:0], w.max, kind, flags, id, payload)
	if err == nil {
		if queue {
			err = w.w.Queue(b, w.failLater)
		} else {
			err = w.w.Write(b)
		}
	}
	if cap(b) <= maxPooled {
		*bp = b[:0]
		bufs.Put(bp)
	}
	if err != nil && w.fail != nil && !errors.Is(err, mesh.ErrFrameTooLarge) {
		return w.fail(err)
	}
	return err
}

// Answer sends the answer of kind to request id.
func (w *Writer) Answer(kind mesh.Kind, id uint64, payload mesh.Encoder) error {
	return w.Send(kind, mesh.FlagResponse, id, payload)
}

// Error answers request id with an ERROR of code.
func (w *Writer) Error(id uint64, code mesh.Code, msg string) error {
	e := mesh.Error{Code: code, Message: msg}
	return w.Send(mesh.KindError, mesh.FlagResponse, id, &e)
}

// QueueFrame queues an encoded frame as is without waiting, neither for
// the syscall nor for room (core.Writer.TryQueue): false when the writer
// is full, and the caller writes the frame with WriteFrame on a goroutine
// that may wait.
func (w *Writer) QueueFrame(frame []byte) (bool, error) { return w.w.TryQueue(frame, w.failLater) }

// WriteFrame writes an encoded frame as is (a proxy forwarding the bytes
// it read, its id rewritten with mesh.SetFrameID).
func (w *Writer) WriteFrame(frame []byte) error { return w.w.Write(frame) }

// Close flushes what was accepted and stops writing; the connection itself
// stays open (its owner closes it).
func (w *Writer) Close() error { return w.w.Close() }

// Errors of a Conn.
var (
	// ErrFrozen: Run returned because Freeze stopped it; the connection
	// is open and the Reader holds its unread bytes.
	ErrFrozen = errors.New("meshconn: connection frozen")
	// ErrSilent: nothing came from the peer for three heartbeat intervals.
	ErrSilent = errors.New("meshconn: no frame from the peer for three heartbeat intervals")
)

// Handler is what a side does with the frames its peer sends. Both methods
// run on the read loop: they must not block on the peer, and a frame's
// Payload is valid only until they return.
type Handler interface {
	// HandleRequest handles a request from the peer; HEARTBEAT requests never
	// reach it (Conn answers them).
	HandleRequest(f mesh.Frame)
	// HandleAnswer handles an answer no Start or Call waits for: the answers of
	// a side that tracks its requests itself (the forwarder's OK, ACK,
	// NACK), late answers, an ERROR about the connection. HEARTBEAT
	// answers never reach it. err is non-nil (wrapping
	// mesh.ErrFrameTooLarge) for an answer over the frame limit, whose
	// payload was skipped.
	HandleAnswer(f mesh.Frame, err error)
}

// Config configures a Conn. The zero value sends no heartbeats, sets no
// read deadline and uses mesh.DefaultMaxFrameSize.
type Config struct {
	// MaxFrameSize bounds the frames read and sent; zero:
	// mesh.DefaultMaxFrameSize.
	MaxFrameSize int
	// MaxSendSize, if set, bounds the frames sent instead (a sidecar
	// passes on deliveries bigger than what it accepts from its apps).
	MaxSendSize int
	// WriteTimeout bounds each write syscall; zero: core.Writer's default.
	WriteTimeout time.Duration
	// Heartbeat, if set, sends a HEARTBEAT every Heartbeat and closes the
	// connection with ErrSilent when no frame came for three of them.
	Heartbeat time.Duration
	// ReadDeadline, if set, gives the deadline of each read (an idle or
	// handshake timeout); a read past it ends Run with its error. It is
	// asked before every frame, and the connection's deadline is only
	// changed when the answer differs from the last one: a deadline rounded
	// up to a coarse step costs nothing for most frames (setting it is a
	// lock and a timer-heap operation in the runtime).
	ReadDeadline func() time.Time
	// Reader, if set, is read instead of a new Reader on the connection: a
	// connection adopted from another process with its unread bytes.
	Reader *mesh.Reader
	// OnClose, if set, is called once, first thing in Close (the owner
	// forgets the connection), with Close's cause.
	OnClose func(cause error)
	// Lost, if set, maps Close's cause to the error outstanding and later
	// requests fail with; nil: the cause itself.
	Lost func(cause error) error
	// OnReadError, if set, is told why the read loop ends (not for
	// Freeze) before Close runs, so it can still answer (a HELLO that
	// never came), and returns the cause Close and Run get.
	OnReadError func(f mesh.Frame, err error) error
	// OnTooLarge, if set, is told of each request over the frame limit,
	// after Conn answered it ERROR FRAME_TOO_LARGE (for logs and metrics).
	OnTooLarge func(f mesh.Frame, err error)
}

// Conn is one mesh connection: its read loop, its outstanding requests and
// its writer. Create it with New, run Run on a goroutine of the owner's,
// and Close it (or let Run end it). Safe for concurrent use.
type Conn struct {
	*Writer
	nc      net.Conn
	rd      *mesh.Reader
	cfg     Config
	h       Handler
	ids     core.IDs
	pending *core.Pending[mesh.Frame]
	born    time.Time
	heard   atomic.Int64 // when the last frame came, on the clock of Clock

	freezing atomic.Bool
	stopHB   chan struct{} // closed when Run returns

	once  sync.Once
	done  chan struct{} // closed by Close
	cause error         // Close's cause; written before done is closed
	lost  error         // what requests fail with; written before done is closed
}

// New returns a Conn on nc that hands the peer's frames to h.
func New(nc net.Conn, h Handler, cfg Config) *Conn {
	if cfg.MaxFrameSize <= 0 {
		cfg.MaxFrameSize = mesh.DefaultMaxFrameSize
	}
	rd := cfg.Reader
	if rd == nil {
		rd = mesh.NewReader(nc, cfg.MaxFrameSize)
	}
	if cfg.MaxSendSize <= 0 {
		cfg.MaxSendSize = cfg.MaxFrameSize
	}
	c := &Conn{
		Writer:  NewWriter(nc, cfg.WriteTimeout, cfg.MaxSendSize),
		nc:      nc,
		rd:      rd,
		cfg:     cfg,
		h:       h,
		pending: core.NewPending[mesh.Frame](),
		born:    time.Now(),
		stopHB:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	// A write error closes the connection: a frame may be half written.
	c.Writer.fail = func(err error) error {
		c.Close(err)
		return c.lost
	}
	return c
}

// NetConn is the connection Conn reads and writes.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Reader is the connection's frame reader: read it only before Run (a
// handshake) or after Run returned ErrFrozen (its Buffered and Skipping
// bytes go with a handed-over connection).
func (c *Conn) Reader() *mesh.Reader { return c.rd }

// IDs hands out this connection's request ids (Continue them on a
// connection adopted from another process).
func (c *Conn) IDs() *core.IDs { return &c.ids }

// Clock is t on the connection's monotonic clock: nanoseconds since New,
// plus one, so that zero means "never".
func (c *Conn) Clock(t time.Time) int64 { return int64(t.Sub(c.born)) + 1 }

// Heard is when the last frame from the peer came, on Clock's clock; zero
// if none came yet.
func (c *Conn) Heard() int64 { return c.heard.Load() }

// Done is closed by Close.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Closed reports whether Close was called.
func (c *Conn) Closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Cause is why the connection was closed; call it only after Done.
func (c *Conn) Cause() error { return c.cause }

// Err is the error requests fail with once the connection is closed (Lost
// of the cause); call it only after Done.
func (c *Conn) Err() error { return c.lost }

// Close closes the connection once: OnClose runs, frames the writer took
// are flushed, the connection closes (Run returns) and every outstanding
// request fails with Lost(cause).
func (c *Conn) Close(cause error) { c.close(cause, true) }

// Abort is Close without the flush: the connection closes first, so
// frames not yet written are dropped and nothing waits on a peer that
// stopped reading (a sibling found silent).
func (c *Conn) Abort(cause error) { c.close(cause, false) }

func (c *Conn) close(cause error, flush bool) {
	c.once.Do(func() {
		if c.cfg.OnClose != nil {
			c.cfg.OnClose(cause)
		}
		lost := cause
		if c.cfg.Lost != nil {
			lost = c.cfg.Lost(cause)
		}
		c.cause, c.lost = cause, lost
		close(c.done)
		if !flush {
			_ = c.nc.Close()
		}
		_ = c.Writer.Close()
		_ = c.nc.Close()
		c.pending.FailAll(lost)
	})
}

// Start sends a request under a fresh id and returns the id and the
// channel its answer (or the connection's end) arrives on; the caller only
// receives from it. A caller that stops waiting calls Forget; one that
// received the answer may give the channel back with Release.
func (c *Conn) Start(kind mesh.Kind, payload mesh.Encoder) (uint64, chan core.Result[mesh.Frame], error) {
	return c.start(kind, payload, false)
}

// StartQueued is Start that does not wait for the write syscall
// (Writer.Queue): for a goroutine that sends a stream of requests alone
// (an SDK's asynchronous publishes), whose frames then share syscalls
// instead of taking one each. A write error found later closes the
// connection, and the request fails with Lost(cause) on its channel, as
// every outstanding one does.
func (c *Conn) StartQueued(kind mesh.Kind, payload mesh.Encoder) (uint64, chan core.Result[mesh.Frame], error) {
	return c.start(kind, payload, true)
}

func (c *Conn) start(kind mesh.Kind, payload mesh.Encoder, queue bool) (uint64, chan core.Result[mesh.Frame], error) {
	id := c.ids.Next()
	ch := c.pending.Add(id)
	if err := c.encode(kind, 0, id, payload, queue); err != nil {
		c.pending.Remove(id)
		return 0, nil, err
	}
	return id, ch, nil
}

// Forget stops waiting for the answer to id; it will reach Handler.HandleAnswer
// if it comes.
func (c *Conn) Forget(id uint64) { c.pending.Remove(id) }

// Release gives back the channel Start returned, once its answer was
// received from it, for a later request to reuse (core.Pending.Done): a
// request then costs no channel allocation. Never release the channel of
// a request given up on with Forget: its answer may still be on its way.
func (c *Conn) Release(ch chan core.Result[mesh.Frame]) { c.pending.Done(ch) }

// Call sends a request and waits for its answer, or for ctx to end.
func (c *Conn) Call(ctx context.Context, kind mesh.Kind, payload mesh.Encoder) (mesh.Frame, error) {
	id, ch, err := c.Start(kind, payload)
	if err != nil {
		return mesh.Frame{}, err
	}
	select {
	case r := <-ch:
		c.Release(ch)
		return r.Val, r.Err
	case <-ctx.Done():
		c.pending.Remove(id)
		return mesh.Frame{}, ctx.Err()
	}
}

// Freeze makes Run return ErrFrozen at the next frame boundary without
// closing the connection; a frame being read stays whole in the Reader.
func (c *Conn) Freeze() {
	c.freezing.Store(true)
	_ = c.nc.SetReadDeadline(time.Now())
}

// Run is the connection's read loop: it reads frames until the connection
// ends (then it has called Close with the reason and returns it) or Freeze
// stops it (ErrFrozen, the connection stays open). Answers go to the
// request waiting for them, or to Handler.HandleAnswer; requests
// to Handler.HandleRequest, but for HEARTBEAT, answered here.
func (c *Conn) Run() error {
	defer close(c.stopHB)
	if c.cfg.Heartbeat > 0 {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); c.heartbeat() }()
		defer wg.Wait()
	}
	var deadline time.Time // the read deadline last set
	for {
		if c.freezing.Load() {
			return ErrFrozen
		}
		if c.cfg.ReadDeadline != nil {
			if d := c.cfg.ReadDeadline(); !d.Equal(deadline) {
				deadline = d
				_ = c.nc.SetReadDeadline(d)
			}
		}
		f, err := c.rd.ReadFrame()
		if err != nil {
			var ne net.Error
			if c.freezing.Load() && errors.As(err, &ne) && ne.Timeout() {
				return ErrFrozen
			}
			if errors.Is(err, mesh.ErrFrameTooLarge) {
				c.heard.Store(c.Clock(time.Now()))
				c.tooLarge(f, err)
				continue
			}
			if code, ok := mesh.ReadErrorCode(err); ok && !c.Closed() {
				// The stream position is lost after a bad header:
				// answer for the id it named, then end (§2.3).
				_ = c.Writer.Error(f.ID, code, err.Error())
			}
			if c.cfg.OnReadError != nil {
				err = c.cfg.OnReadError(f, err)
			}
			c.Close(err)
			return err
		}
		c.heard.Store(c.Clock(time.Now()))
		c.dispatch(f)
	}
}

func (c *Conn) dispatch(f mesh.Frame) {
	if f.IsResponse() {
		if c.pending.Resolve(f.ID, core.Result[mesh.Frame]{Val: f}) || f.Kind == mesh.KindHeartbeat {
			return
		}
		c.h.HandleAnswer(f, nil)
		return
	}
	if f.Kind != mesh.KindHeartbeat {
		c.h.HandleRequest(f)
		return
	}
	if len(f.Payload) != 0 {
		_ = c.Error(f.ID, mesh.CodeBadFrame, "HEARTBEAT with a payload")
		return
	}
	_ = c.Answer(mesh.KindHeartbeat, f.ID, nil)
}

// tooLarge handles a frame over the frame limit, whose payload the reader
// skips (docs/protocol.md §2.2): the request it answers fails with err; a
// request is answered ERROR FRAME_TOO_LARGE.
func (c *Conn) tooLarge(f mesh.Frame, err error) {
	if f.IsResponse() {
		if !c.pending.Resolve(f.ID, core.Result[mesh.Frame]{Err: err}) {
			c.h.HandleAnswer(f, err)
		}
		return
	}
	_ = c.Error(f.ID, mesh.CodeFrameTooLarge, err.Error()+"; it was skipped, the connection goes on")
	if c.cfg.OnTooLarge != nil {
		c.cfg.OnTooLarge(f, err)
	}
}

// heartbeat sends a HEARTBEAT every interval and closes the connection
// when nothing came for three. Nothing waits for the answers: any frame
// counts as a sign of life.
func (c *Conn) heartbeat() {
	every := c.cfg.Heartbeat
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.stopHB:
			return
		case now := <-t.C:
			last := max(c.heard.Load(), 1) // before any frame: since New
			if time.Duration(c.Clock(now)-last) >= 3*every {
				c.Close(ErrSilent)
				return
			}
		}
		_ = c.Send(mesh.KindHeartbeat, 0, c.ids.Next(), nil)
	}
}
