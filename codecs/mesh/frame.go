// Package mesh is the codec of the msgmesh wire protocol: the binary,
// length-prefixed frames that apps (through the client SDK) and the sidecar
// exchange on a long-lived connection.
//
// The protocol is symmetric: either side may send a request, and every
// request carries an id that its answer repeats. The sidecar pushes
// deliveries as DELIVER requests that the app answers with ACK or NACK, and
// the app sends PUBLISH, PULL, DECLARE and HELLO requests that the sidecar
// answers. docs/protocol.md is the normative spec: frame layout, every kind
// and every error code.
//
// The package only turns bytes into frames and back. It knows nothing about
// brokers, groups or sessions, so the sidecar (package msgmesh) and the RPC
// proxy can reuse it, and a new wire protocol is a new codec package beside
// this one, not a change above it.
//
// A Reader enforces the maximum frame size before it allocates, so a peer
// cannot make the process allocate a huge buffer with a four-byte length.
// A frame over the limit whose header is otherwise valid is refused and
// its payload skipped without being stored, so the connection can go on.
package mesh

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Version is the protocol version carried in every frame header.
const Version = 1

// HeaderSize is the size of the fixed frame header, length prefix included.
const HeaderSize = 16

// lengthSize is the size of the length prefix; the length counts the bytes
// after it (the rest of the header and the payload).
const lengthSize = 4

// DefaultMaxFrameSize bounds a whole frame (header and payload) when a
// Reader is given no maximum: 4 MiB, well above the default message size
// limit, so the message limit, not the frame limit, is what apps meet.
const DefaultMaxFrameSize = 4 << 20

// Kind says what a frame carries. The payload layout of each kind is in
// docs/protocol.md and in the payload types of this package.
type Kind uint8

// Frame kinds. Values are part of the wire format: never renumber.
const (
	KindHello      Kind = 1  // app → sidecar request: who the app is
	KindDeclare    Kind = 2  // app → sidecar request: the groups this connection serves
	KindPublish    Kind = 3  // app → sidecar request: publish one message
	KindPublishAck Kind = 4  // answer to PUBLISH: the broker acknowledged it
	KindDeliver    Kind = 5  // sidecar → app request: one delivery
	KindAck        Kind = 6  // answer to DELIVER (or to a pulled message): processed
	KindNack       Kind = 7  // answer to DELIVER (or to a pulled message): redeliver later
	KindPull       Kind = 8  // app → sidecar request: up to N messages, long poll
	KindPullResult Kind = 9  // answer to PULL
	KindHeartbeat  Kind = 10 // either side, request and answer
	KindOK         Kind = 11 // generic success answer
	KindError      Kind = 12 // typed error answer
	KindRequest    Kind = 13 // RPC request: a call to a service (docs/rpc.md)
	KindResponse   Kind = 14 // answer to REQUEST: the call succeeded
	kindMax             = KindResponse
)

var kindNames = [...]string{
	KindHello: "HELLO", KindDeclare: "DECLARE", KindPublish: "PUBLISH",
	KindPublishAck: "PUBLISH_ACK", KindDeliver: "DELIVER", KindAck: "ACK",
	KindNack: "NACK", KindPull: "PULL", KindPullResult: "PULL_RESULT",
	KindHeartbeat: "HEARTBEAT", KindOK: "OK", KindError: "ERROR",
	KindRequest: "REQUEST", KindResponse: "RESPONSE",
}

func (k Kind) String() string {
	if k > 0 && k <= kindMax {
		return kindNames[k]
	}
	return fmt.Sprintf("KIND(%d)", uint8(k))
}

// Flags is the frame's flag byte.
type Flags uint8

// FlagResponse marks a frame as the answer to the request with the same id.
// Without it a frame is a request (or, for ACK/NACK, see docs/protocol.md).
const FlagResponse Flags = 1

// flagsKnown holds every defined flag; a frame with another bit set is
// malformed, so that future flags are never silently ignored.
const flagsKnown = FlagResponse

// Frame is one decoded frame. Payload aliases the Reader's buffer for that
// frame only; decode it (or copy it) before reading the next frame.
type Frame struct {
	Kind    Kind
	Flags   Flags
	ID      uint64
	Payload []byte
}

// IsResponse reports whether the frame answers a request.
func (f *Frame) IsResponse() bool { return f.Flags&FlagResponse != 0 }

// Encoder is a payload that can append its wire form to a buffer.
type Encoder interface {
	AppendTo(b []byte) []byte
}

// AppendFrame appends a complete frame (header and payload) to dst. It
// returns ErrFrameTooLarge (as a *FrameSizeError) if the frame would exceed
// max, so a sender never emits a frame its peer must refuse. A nil payload
// encodes an empty payload.
func AppendFrame(dst []byte, max int, kind Kind, flags Flags, id uint64, payload Encoder) ([]byte, error) {
	if max <= 0 {
		max = DefaultMaxFrameSize
	}
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, Version, byte(kind), byte(flags), 0)
	dst = binary.BigEndian.AppendUint64(dst, id)
	if payload != nil {
		dst = payload.AppendTo(dst)
	}
	size := len(dst) - start
	if size > max {
		return dst[:start], &FrameSizeError{Size: size, Max: max}
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(size-lengthSize))
	return dst, nil
}

// Reader reads frames from a byte stream. It is not safe for concurrent use;
// one goroutine (a connection's read loop) owns it.
type Reader struct {
	br  *bufio.Reader
	max int
	hdr [HeaderSize]byte

	// A frame whose reading was interrupted (a read deadline) resumes on
	// the next ReadFrame: nhdr header bytes are in hdr and npay payload
	// bytes in part. pre holds carried-over bytes served before br.
	nhdr int
	part []byte
	npay int
	pre  []byte
	// skip is how many payload bytes of a frame refused as too large are
	// still to be read and dropped before the next frame.
	skip int64
}

// NewReader returns a Reader that refuses frames larger than max bytes
// (header included); max <= 0 means DefaultMaxFrameSize. If r is already a
// *bufio.Reader it is used as is, so bytes buffered by an earlier owner of
// the connection are not lost.
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxFrameSize
	}
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &Reader{br: br, max: max}
}

// Buffered returns a copy of the bytes read from the stream but not yet
// returned as a frame: a frame ReadFrame was interrupted in, carried-over
// bytes, and what the buffer holds, less the payload of a refused frame
// still to be skipped (see Skipping). A connection handed to another
// process carries them along (the new owner calls Prefill).
func (r *Reader) Buffered() []byte {
	b, _ := r.br.Peek(r.br.Buffered())
	pre := r.pre
	skip := r.skip
	n := min(skip, int64(len(pre)))
	pre, skip = pre[n:], skip-n
	b = b[min(skip, int64(len(b))):]
	out := make([]byte, 0, r.nhdr+r.npay+len(pre)+len(b))
	out = append(out, r.hdr[:r.nhdr]...)
	out = append(out, r.part[:r.npay]...)
	out = append(out, pre...)
	return append(out, b...)
}

// Skipping returns how many bytes of the stream, beyond the Buffered ones,
// belong to the payload of a frame refused as too large and are still to
// be skipped. It and Buffered are never both non-empty. A connection handed
// to another process carries it along (the new owner calls Skip).
func (r *Reader) Skipping() int64 {
	return max(0, r.skip-int64(len(r.pre)+r.br.Buffered()))
}

// Prefill makes b the first bytes the Reader parses, before the stream: the
// carried-over bytes of a connection adopted from another process. Call it
// before the first ReadFrame.
func (r *Reader) Prefill(b []byte) { r.pre = append([]byte(nil), b...) }

// Skip makes the Reader drop the next n bytes (Prefill bytes first, then
// the stream) before it reads a frame: the rest of a refused frame's
// payload that another Reader was skipping (Skipping) when the connection
// was handed over. Call it before the first ReadFrame.
func (r *Reader) Skip(n int64) { r.skip = max(0, n) }

// discard drops the payload of a refused frame, reading it through the
// buffer without storing it. It resumes after a stream error like a frame.
func (r *Reader) discard() error {
	for r.skip > 0 {
		if len(r.pre) > 0 {
			n := min(r.skip, int64(len(r.pre)))
			r.pre = r.pre[n:]
			r.skip -= n
			continue
		}
		n, err := r.br.Discard(int(min(r.skip, 1<<30)))
		r.skip -= int64(n)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// refuse records a header error: for a frame too large (whose header is
// otherwise valid, see parseHeader) the payload is to be skipped, so the
// next frame can be read; after any other the position stays undefined.
func (r *Reader) refuse(err error) {
	if _, ok := err.(*FrameSizeError); ok {
		r.skip = int64(binary.BigEndian.Uint32(r.hdr[:lengthSize])) + lengthSize - HeaderSize
		r.nhdr = 0
	}
}

// read fills p from the carried-over bytes first, then the stream.
func (r *Reader) read(p []byte) (int, error) {
	if len(r.pre) > 0 {
		n := copy(p, r.pre)
		r.pre = r.pre[n:]
		return n, nil
	}
	return r.br.Read(p)
}

// ReadFrame reads the next frame. The payload is freshly allocated for each
// frame, after the size check. Errors:
//   - io.EOF when the stream ends cleanly between frames;
//   - io.ErrUnexpectedEOF when it ends inside a frame;
//   - *FrameSizeError (errors.Is ErrFrameTooLarge) for a frame over the
//     limit whose header is otherwise valid. The returned Frame has its
//     kind, flags and id; the next ReadFrame first skips its payload
//     (reading it without storing it), so the caller may answer with an
//     ERROR and go on;
//   - *ProtocolError (errors.Is ErrMalformed or ErrUnsupportedVersion) for a
//     bad header. After it the stream position is undefined: the caller
//     answers with an ERROR frame if it can and closes the connection;
//   - the stream's own error (a read deadline, say), after which nothing is
//     lost: the next ReadFrame resumes the frame (or the skip), and Buffered
//     and Skipping include it.
func (r *Reader) ReadFrame() (Frame, error) {
	if err := r.discard(); err != nil {
		return Frame{}, err
	}
	for r.nhdr < HeaderSize {
		n, err := r.read(r.hdr[r.nhdr:])
		r.nhdr += n
		if err != nil {
			if err == io.EOF && r.nhdr > 0 {
				err = io.ErrUnexpectedEOF
			}
			return Frame{}, err
		}
	}
	f, size, err := parseHeader(r.hdr[:], r.max)
	if err != nil {
		r.refuse(err)
		return f, err
	}
	if size > 0 {
		if r.part == nil {
			r.part = make([]byte, size)
		}
		for r.npay < size {
			n, err := r.read(r.part[r.npay:])
			r.npay += n
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return Frame{}, err
			}
		}
		f.Payload = r.part
	}
	r.nhdr, r.part, r.npay = 0, nil, 0
	return f, nil
}

// ReadFrameInto reads the next frame into buf, reusing its capacity, and
// returns the frame and the buffer that holds it whole (header included,
// so a proxy can forward it as is after SetFrameID). Frame.Payload aliases
// that buffer. The size check comes before buf grows. It lets a caller keep
// frame buffers in a pool instead of allocating one per frame.
//
// It reads carried-over bytes (Prefill) first, and finishes a frame an
// earlier ReadFrame was interrupted in, like ReadFrame. Its errors are
// those of ReadFrame, except that a stream error inside a frame is final:
// ReadFrameInto does not resume (the RPC proxy, its user, closes the
// connection on any read error).
func (r *Reader) ReadFrameInto(buf []byte) (Frame, []byte, error) {
	if err := r.discard(); err != nil {
		return Frame{}, buf[:0], err
	}
	if r.nhdr > 0 || r.npay > 0 {
		// Finish the frame ReadFrame was interrupted in.
		f, err := r.ReadFrame()
		if err != nil {
			return f, buf[:0], err
		}
		buf = append(buf[:0], r.hdr[:]...)
		buf = append(buf, f.Payload...)
		if len(f.Payload) > 0 {
			f.Payload = buf[HeaderSize:len(buf):len(buf)]
		}
		return f, buf, nil
	}
	if err := r.readFull(r.hdr[:]); err != nil {
		return Frame{}, buf[:0], err
	}
	f, size, err := parseHeader(r.hdr[:], r.max)
	if err != nil {
		r.refuse(err)
		return f, buf[:0], err
	}
	n := HeaderSize + size
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	copy(buf, r.hdr[:])
	if size > 0 {
		if err := r.readFull(buf[HeaderSize:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return Frame{}, buf[:0], err
		}
		f.Payload = buf[HeaderSize:n:n]
	}
	return f, buf, nil
}

// readFull fills p through read: io.EOF if nothing was read, else
// io.ErrUnexpectedEOF when the stream ends first.
func (r *Reader) readFull(p []byte) error {
	for n := 0; n < len(p); {
		m, err := r.read(p[n:])
		n += m
		if err != nil {
			if n == len(p) && err == io.EOF {
				return nil // the last bytes came with the end of the stream
			}
			if err == io.EOF && n > 0 {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// SetFrameID overwrites the id of the encoded frame at the start of frame.
// It is how a proxy rewrites request ids on a shared connection without
// decoding or re-encoding the payload. frame must hold at least a header.
func SetFrameID(frame []byte, id uint64) {
	binary.BigEndian.PutUint64(frame[8:HeaderSize], id)
}

// parseHeader checks a frame header and returns the frame (without payload)
// and the payload size. On an error the returned frame still carries the
// kind and id when they could be read, so the answer can name the request.
// The size is checked last (docs/protocol.md §2.3): a frame is refused as
// too large only when the rest of its header is valid, so its length can
// be trusted to skip it.
func parseHeader(h []byte, max int) (Frame, int, error) {
	length := binary.BigEndian.Uint32(h[0:4])
	f := Frame{Kind: Kind(h[5]), Flags: Flags(h[6]), ID: binary.BigEndian.Uint64(h[8:16])}
	if length < HeaderSize-lengthSize {
		return f, 0, &ProtocolError{Err: ErrMalformed, Reason: fmt.Sprintf("frame length %d is shorter than the header", length)}
	}
	if h[4] != Version {
		return f, 0, &ProtocolError{Err: ErrUnsupportedVersion, Reason: fmt.Sprintf("version %d, this peer speaks %d", h[4], Version)}
	}
	if f.Kind == 0 || f.Kind > kindMax {
		return f, 0, &ProtocolError{Err: ErrMalformed, Reason: fmt.Sprintf("unknown frame kind %d", h[5])}
	}
	if f.Flags&^flagsKnown != 0 || h[7] != 0 {
		return f, 0, &ProtocolError{Err: ErrMalformed, Reason: fmt.Sprintf("unknown flags %#x/%#x", h[6], h[7])}
	}
	if int64(length)+lengthSize > int64(max) {
		return f, 0, &FrameSizeError{Size: int(length) + lengthSize, Max: max}
	}
	return f, int(length) - (HeaderSize - lengthSize), nil
}

// DecodeFrame parses one whole frame from the front of b and returns it and
// the number of bytes it used. It is ReadFrame for callers that hold bytes
// already (tests, fuzzing, a connection's carried-over buffer). The payload
// aliases b.
func DecodeFrame(b []byte, max int) (Frame, int, error) {
	if max <= 0 {
		max = DefaultMaxFrameSize
	}
	if len(b) < HeaderSize {
		return Frame{}, 0, io.ErrUnexpectedEOF
	}
	f, size, err := parseHeader(b[:HeaderSize], max)
	if err != nil {
		return f, 0, err
	}
	if len(b)-HeaderSize < size {
		return Frame{}, 0, io.ErrUnexpectedEOF
	}
	if size > 0 {
		f.Payload = b[HeaderSize : HeaderSize+size : HeaderSize+size]
	}
	return f, HeaderSize + size, nil
}
