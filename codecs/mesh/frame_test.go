package mesh

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/internal/allocs"
)

func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		tb.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// TestWireFormatGolden pins the byte layout that docs/protocol.md describes,
// so the spec and the code cannot drift apart silently.
func TestWireFormatGolden(t *testing.T) {
	tests := []struct {
		name    string
		kind    Kind
		flags   Flags
		id      uint64
		payload Encoder
		want    string // hex; spaces separate fields
	}{
		{
			name: "hello", kind: KindHello, id: 42,
			payload: &Hello{App: "a", Client: "", MaxInflight: 5},
			//     length   ver kind flg rsv id                app   client max_inflight
			want: "00000013 01  01   00  00  000000000000002a  0161  00     00000005",
		},
		{
			// The optional trailing secret (§5.1): a HELLO without one is
			// the frame above, unchanged; with one, a str follows.
			name: "hello_secret", kind: KindHello, id: 42,
			payload: &Hello{App: "a", Client: "", MaxInflight: 5, Secret: "xy"},
			//     length   ver kind flg rsv id                app   client max_inflight secret
			want: "00000016 01  01   00  00  000000000000002a  0161  00     00000005     027879",
		},
		{
			name: "publish_ack", kind: KindPublishAck, flags: FlagResponse, id: 3,
			payload: &PublishAck{Stream: "s", Partition: -1, Offset: 258},
			//     length   ver kind flg rsv id                stream partition offset            message_id
			want: "0000001b 01  04   01  00  0000000000000003  0173   ffffffff  0000000000000102  00",
		},
		{
			name: "ack", kind: KindAck, flags: FlagResponse, id: 7,
			want: "0000000c 01  06   01  00  0000000000000007",
		},
		{
			name: "error", kind: KindError, flags: FlagResponse, id: math.MaxUint64,
			payload: &Error{Code: CodeNotDeclared, Message: "x"},
			//     length   ver kind flg rsv id                code message
			want: "00000010 01  0c   01  00  ffffffffffffffff  000e 0178",
		},
		{
			name: "publish", kind: KindPublish, id: 1,
			payload: &Publish{Topic: "t", Key: "", Headers: []HeaderField{{"k", "v"}}, Body: bytes.Repeat([]byte{0xaa}, 130)},
			//     length   ver kind flg rsv id                topic key headers       body (len 130 = uvarint 8201)
			want: "00000098 01  03   00  00  0000000000000001  0174  00  01 016b 0176  8201" + strings.Repeat("aa", 130),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := unhex(t, tc.want)
			got := encodeFrame(t, tc.kind, tc.flags, tc.id, tc.payload)
			if !bytes.Equal(got, want) {
				t.Fatalf("AppendFrame =\n%x\nwant\n%x", got, want)
			}
			f, n, err := DecodeFrame(want, 0)
			if err != nil || n != len(want) || f.Kind != tc.kind || f.Flags != tc.flags || f.ID != tc.id {
				t.Fatalf("DecodeFrame = %v/%v/%d, %d bytes, %v", f.Kind, f.Flags, f.ID, n, err)
			}
		})
	}
}

// headerCase is a bad frame header and what each reader must say about it.
type headerCase struct {
	name     string
	hdr      []byte
	max      int
	sentinel error
	code     Code
	reason   string
}

func badHeaderCases() []headerCase {
	const id = 0xdeadbeef
	ok := func(length uint32, version byte, kind Kind, flags Flags, reserved byte) []byte {
		return header(length, version, kind, flags, reserved, id)
	}
	return []headerCase{
		{"length_0", ok(0, Version, KindOK, 0, 0), 0, ErrMalformed, CodeBadFrame, "frame length 0 is shorter than the header"},
		{"length_11", ok(11, Version, KindOK, 0, 0), 0, ErrMalformed, CodeBadFrame, "frame length 11 is shorter than the header"},
		{"version_0", ok(12, 0, KindOK, 0, 0), 0, ErrUnsupportedVersion, CodeUnsupported, "version 0, this peer speaks 1"},
		{"version_2", ok(12, 2, KindOK, 0, 0), 0, ErrUnsupportedVersion, CodeUnsupported, "version 2"},
		{"version_255", ok(12, 255, KindOK, 0, 0), 0, ErrUnsupportedVersion, CodeUnsupported, "version 255"},
		{"kind_0", ok(12, Version, 0, 0, 0), 0, ErrMalformed, CodeBadFrame, "unknown frame kind 0"},
		{"kind_after_last", ok(12, Version, kindMax+1, 0, 0), 0, ErrMalformed, CodeBadFrame, fmt.Sprintf("unknown frame kind %d", kindMax+1)},
		{"kind_255", ok(12, Version, 255, 0, 0), 0, ErrMalformed, CodeBadFrame, "unknown frame kind 255"},
		{"flag_bit_1", ok(12, Version, KindOK, 0x02, 0), 0, ErrMalformed, CodeBadFrame, "unknown flags 0x2/0x0"},
		{"flag_bit_7", ok(12, Version, KindOK, 0x80|FlagResponse, 0), 0, ErrMalformed, CodeBadFrame, "unknown flags 0x81/0x0"},
		{"reserved_1", ok(12, Version, KindOK, FlagResponse, 1), 0, ErrMalformed, CodeBadFrame, "unknown flags 0x1/0x1"},
		{"reserved_80", ok(12, Version, KindOK, 0, 0x80), 0, ErrMalformed, CodeBadFrame, "unknown flags 0x0/0x80"},
		{"too_large_2GiB", ok(2<<30, Version, KindPublish, 0, 0), 0, ErrFrameTooLarge, CodeFrameTooLarge, "frame of 2147483652 bytes exceeds the limit of 4194304 bytes"},
		{"too_large_max_u32", ok(math.MaxUint32, Version, KindPublish, 0, 0), 0, ErrFrameTooLarge, CodeFrameTooLarge, "frame of 4294967299 bytes"},
		{"too_large_by_one", ok(100-lengthSize+1, Version, KindPublish, 0, 0), 100, ErrFrameTooLarge, CodeFrameTooLarge, "frame of 101 bytes exceeds the limit of 100 bytes"},
		// The size is checked last: only an otherwise valid header is
		// refused as too large (and its payload skipped); a huge frame
		// with a bad header is refused for the bad field.
		{"too_large_and_bad_version", ok(2<<30, 9, 0, 0xff, 0xff), 0, ErrUnsupportedVersion, CodeUnsupported, "version 9"},
		{"too_large_and_bad_kind", ok(2<<30, Version, 0, 0, 0), 0, ErrMalformed, CodeBadFrame, "unknown frame kind 0"},
		{"too_large_and_bad_flags", ok(2<<30, Version, KindPublish, 0x04, 0), 0, ErrMalformed, CodeBadFrame, "unknown flags"},
	}
}

// checkHeaderError checks the error and the partial frame a reader returned
// for a bad header.
func checkHeaderError(t *testing.T, tc headerCase, f Frame, err error) {
	t.Helper()
	if !errors.Is(err, tc.sentinel) {
		t.Fatalf("error %v: want errors.Is %v", err, tc.sentinel)
	}
	if tc.sentinel == ErrFrameTooLarge {
		var se *FrameSizeError
		if !errors.As(err, &se) {
			t.Fatalf("error %v (%T): want a *FrameSizeError", err, err)
		}
		var pe *ProtocolError
		if errors.As(err, &pe) {
			t.Fatalf("error %v is also a *ProtocolError", err)
		}
	} else {
		var pe *ProtocolError
		if !errors.As(err, &pe) {
			t.Fatalf("error %v (%T): want a *ProtocolError", err, err)
		}
		if pe.Field != "" {
			t.Errorf("header error names payload field %q", pe.Field)
		}
	}
	if !strings.Contains(err.Error(), tc.reason) {
		t.Errorf("error %q does not contain %q", err, tc.reason)
	}
	if got := CodeOf(err, nil); got != tc.code {
		t.Errorf("CodeOf = %v, want %v", got, tc.code)
	}
	// The id is readable in any 16-byte header, so the ERROR answer can
	// name the offending request.
	if f.ID != 0xdeadbeef {
		t.Errorf("frame id = %#x, want 0xdeadbeef", f.ID)
	}
	if f.Payload != nil {
		t.Errorf("frame carries a payload of %d bytes after a header error", len(f.Payload))
	}
}

func TestDecodeFrameBadHeader(t *testing.T) {
	for _, tc := range badHeaderCases() {
		t.Run(tc.name, func(t *testing.T) {
			// A payload after the header changes nothing: the header alone
			// decides.
			b := append(append([]byte(nil), tc.hdr...), make([]byte, 64)...)
			f, n, err := DecodeFrame(b, tc.max)
			if n != 0 {
				t.Errorf("DecodeFrame used %d bytes of a bad frame", n)
			}
			checkHeaderError(t, tc, f, err)
		})
	}
}

func TestReadFrameBadHeader(t *testing.T) {
	for _, tc := range badHeaderCases() {
		t.Run(tc.name, func(t *testing.T) {
			// Only the header is on the stream: a reader that wanted the
			// payload of a bad frame would get io.ErrUnexpectedEOF instead.
			r := NewReader(bytes.NewReader(tc.hdr), tc.max)
			f, err := r.ReadFrame()
			checkHeaderError(t, tc, f, err)
		})
	}
}

// TestReadFrameHugeLengthDoesNotAllocate: a header claiming 2 GiB is refused
// from its 16 bytes, with no allocation but the error value.
func TestReadFrameHugeLengthDoesNotAllocate(t *testing.T) {
	hdr := header(2<<30, Version, KindPublish, 0, 0, 1)
	src := bytes.NewReader(hdr)
	br := bufio.NewReader(src)
	var err error
	read := func() {
		src.Reset(hdr)
		br.Reset(src)
		// A fresh Reader each time: this one would skip the payload first.
		_, err = NewReader(br, 0).ReadFrame()
	}
	if allocs := testing.AllocsPerRun(100, read); allocs > 2 {
		t.Errorf("ReadFrame of a 2 GiB claim made %v allocations, want at most 2 (the Reader and the error)", allocs)
	}
	if n := allocs.BytesPerRun(100, read); n > 1024 {
		t.Errorf("ReadFrame of a 2 GiB claim allocated %d bytes per call", n)
	}
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("error %v, want ErrFrameTooLarge", err)
	}

	decode := func() { _, _, err = DecodeFrame(hdr, 0) }
	if allocs := testing.AllocsPerRun(100, decode); allocs > 1 {
		t.Errorf("DecodeFrame of a 2 GiB claim made %v allocations, want at most 1 (the error)", allocs)
	}
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("error %v, want ErrFrameTooLarge", err)
	}
}

// TestFrameSizeLimit: a frame of exactly the limit passes every path, one
// byte more is refused by every path.
func TestFrameSizeLimit(t *testing.T) {
	// frameOf returns a PUBLISH whose frame is exactly size bytes.
	frameOf := func(size int) *Publish {
		p := &Publish{Topic: "t"}
		for n := size - HeaderSize; ; n-- {
			p.Body = make([]byte, n)
			if got := HeaderSize + len(p.AppendTo(nil)); got == size {
				return p
			}
		}
	}
	for _, tc := range []struct {
		name      string
		max       int // passed to the API
		effective int // the limit in force
	}{
		{"custom", 20000, 20000},
		{"default_zero", 0, DefaultMaxFrameSize},
		{"default_negative", -1, DefaultMaxFrameSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			atMax := frameOf(tc.effective)
			b, err := AppendFrame(nil, tc.max, KindPublish, 0, 1, atMax)
			if err != nil || len(b) != tc.effective {
				t.Fatalf("AppendFrame at the limit: %d bytes, %v; want %d bytes", len(b), err, tc.effective)
			}
			if _, n, err := DecodeFrame(b, tc.max); err != nil || n != len(b) {
				t.Fatalf("DecodeFrame at the limit: %d bytes, %v", n, err)
			}
			if f, err := NewReader(bytes.NewReader(b), tc.max).ReadFrame(); err != nil || len(f.Payload) != len(b)-HeaderSize {
				t.Fatalf("ReadFrame at the limit: %d payload bytes, %v", len(f.Payload), err)
			}

			over := frameOf(tc.effective + 1)
			wantErr := &FrameSizeError{Size: tc.effective + 1, Max: tc.effective}
			check := func(what string, err error) {
				t.Helper()
				var se *FrameSizeError
				if !errors.Is(err, ErrFrameTooLarge) || !errors.As(err, &se) || *se != *wantErr {
					t.Fatalf("%s one byte over the limit: error %v, want %v", what, err, wantErr)
				}
			}
			_, err = AppendFrame(nil, tc.max, KindPublish, 0, 1, over)
			check("AppendFrame", err)

			// Forge the over-limit frame with a bigger limit to feed the
			// readers.
			big, err := AppendFrame(nil, tc.effective+1, KindPublish, 0, 1, over)
			if err != nil || len(big) != tc.effective+1 {
				t.Fatalf("forging a frame of %d bytes: %d bytes, %v", tc.effective+1, len(big), err)
			}
			_, _, err = DecodeFrame(big, tc.max)
			check("DecodeFrame", err)
			_, err = NewReader(bytes.NewReader(big), tc.max).ReadFrame()
			check("ReadFrame", err)
		})
	}
}

func TestAppendFrameTooLargeKeepsDst(t *testing.T) {
	dst := []byte("keep")
	got, err := AppendFrame(dst, 100, KindPublish, 0, 1, &Publish{Topic: "t", Body: make([]byte, 100)})
	var se *FrameSizeError
	if !errors.Is(err, ErrFrameTooLarge) || !errors.As(err, &se) {
		t.Fatalf("error %v, want a *FrameSizeError", err)
	}
	if se.Max != 100 || se.Size != HeaderSize+2+1+1+1+100 {
		t.Errorf("FrameSizeError = %+v, want Size %d, Max 100", *se, HeaderSize+2+1+1+1+100)
	}
	if string(got) != "keep" {
		t.Fatalf("AppendFrame returned %q after refusing, want the original %q", got, "keep")
	}
	// The caller goes on appending to the returned slice.
	got, err = AppendFrame(got, 100, KindAck, FlagResponse, 9, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, n, err := DecodeFrame(got[len("keep"):], 100)
	if err != nil || n != HeaderSize || f.Kind != KindAck || f.ID != 9 || len(f.Payload) != 0 {
		t.Fatalf("frame after a refused one: %+v, %d bytes, %v", f, n, err)
	}
}

func TestAppendFrameNilPayload(t *testing.T) {
	b := encodeFrame(t, KindHeartbeat, 0, 5, nil)
	want := header(HeaderSize-lengthSize, Version, KindHeartbeat, 0, 0, 5)
	if !bytes.Equal(b, want) {
		t.Fatalf("AppendFrame(nil payload) = %x, want %x", b, want)
	}
}

// TestDecodeFrameStream decodes back-to-back frames from one buffer, the way
// a connection's carried-over bytes are parsed, and checks every cut short
// of a whole frame asks for more bytes.
func TestDecodeFrameStream(t *testing.T) {
	samples := sampleFrames()
	var stream []byte
	for _, s := range samples {
		stream = append(stream, encodeFrame(t, s.kind, s.flags, s.id, s.payload)...)
	}
	rest := stream
	for _, s := range samples {
		whole := encodeFrame(t, s.kind, s.flags, s.id, s.payload)
		for cut := 0; cut < len(whole); cut++ {
			f, n, err := DecodeFrame(rest[:cut], 0)
			if err != io.ErrUnexpectedEOF || n != 0 || f.Kind != 0 {
				t.Fatalf("%s cut at %d of %d: %v, %d bytes, %v; want io.ErrUnexpectedEOF", s.name, cut, len(whole), f.Kind, n, err)
			}
		}
		f, n, err := DecodeFrame(rest, 0)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		checkSample(t, s, f)
		if cap(f.Payload) != len(f.Payload) {
			t.Errorf("%s: payload cap %d > len %d: appending to it would overwrite the next frame", s.name, cap(f.Payload), len(f.Payload))
		}
		rest = rest[n:]
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes left after every frame", len(rest))
	}
}

// checkSample checks a decoded frame against the sample it was made from.
func checkSample(t *testing.T, s sampleFrame, f Frame) {
	t.Helper()
	if f.Kind != s.kind || f.Flags != s.flags || f.ID != s.id {
		t.Fatalf("%s: header %v/%v/%d, want %v/%v/%d", s.name, f.Kind, f.Flags, f.ID, s.kind, s.flags, s.id)
	}
	if s.payload == nil {
		if len(f.Payload) != 0 {
			t.Fatalf("%s: %d payload bytes, want none", s.name, len(f.Payload))
		}
		return
	}
	got := newPayload(s.kind)
	if err := got.Decode(f.Payload); err != nil {
		t.Fatalf("%s: payload: %v", s.name, err)
	}
	assertEqualPayload(t, got, s.payload)
}

// writeChunks writes b in pieces of n bytes, so the reader sees frames split
// at every kind of boundary.
func writeChunks(w io.Writer, b []byte, n int) error {
	for len(b) > 0 {
		k := min(n, len(b))
		if _, err := w.Write(b[:k]); err != nil {
			return err
		}
		b = b[k:]
	}
	return nil
}

// TestReadFramePipe sends a frame of every kind over a synchronous in-memory
// connection, in odd-sized writes, and reads them back.
func TestReadFramePipe(t *testing.T) {
	for _, chunk := range []int{1, 7, 16, 1 << 20} {
		t.Run(fmt.Sprint("chunk_", chunk), func(t *testing.T) {
			client, server := net.Pipe()
			defer server.Close()
			samples := sampleFrames()
			errc := make(chan error, 1)
			go func() {
				defer client.Close()
				var buf []byte
				for _, s := range samples {
					var err error
					if buf, err = AppendFrame(buf[:0], 0, s.kind, s.flags, s.id, s.payload); err != nil {
						errc <- err
						return
					}
					if err := writeChunks(client, buf, chunk); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()

			r := NewReader(server, 0)
			for _, s := range samples {
				f, err := r.ReadFrame()
				if err != nil {
					t.Fatalf("ReadFrame for %s: %v", s.name, err)
				}
				checkSample(t, s, f)
			}
			if f, err := r.ReadFrame(); err != io.EOF {
				t.Fatalf("after the last frame: %+v, %v; want io.EOF", f, err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("writer: %v", err)
			}
		})
	}
}

// TestReadFramePayloadIsOwned: ReadFrame's payload survives the next read.
func TestReadFramePayloadIsOwned(t *testing.T) {
	a := encodeFrame(t, KindNack, FlagResponse, 1, &Nack{DelayMillis: 1})
	b := encodeFrame(t, KindNack, FlagResponse, 2, &Nack{DelayMillis: 2})
	r := NewReader(bytes.NewReader(append(a, b...)), 0)
	f1, err1 := r.ReadFrame()
	f2, err2 := r.ReadFrame()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	var n1, n2 Nack
	if err := n1.Decode(f1.Payload); err != nil || n1.DelayMillis != 1 {
		t.Fatalf("first payload after a second read: %+v, %v", n1, err)
	}
	if err := n2.Decode(f2.Payload); err != nil || n2.DelayMillis != 2 {
		t.Fatalf("second payload: %+v, %v", n2, err)
	}
}

func TestReadFrameEndOfStream(t *testing.T) {
	frame := encodeFrame(t, KindPull, 0, 4, &Pull{Group: "g", Topic: "t", Max: 1})
	tests := []struct {
		name   string
		stream []byte
		frames int
		want   error
	}{
		{"empty", nil, 0, io.EOF},
		{"between_frames", append(append([]byte(nil), frame...), frame...), 2, io.EOF},
		{"inside_length", frame[:3], 0, io.ErrUnexpectedEOF},
		{"inside_header", frame[:HeaderSize-1], 0, io.ErrUnexpectedEOF},
		{"after_header", frame[:HeaderSize], 0, io.ErrUnexpectedEOF},
		{"inside_payload", frame[:len(frame)-1], 0, io.ErrUnexpectedEOF},
		{"second_frame_cut", append(append([]byte(nil), frame...), frame[:HeaderSize+2]...), 1, io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tc.stream), 0)
			for i := 0; i < tc.frames; i++ {
				if _, err := r.ReadFrame(); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
			}
			f, err := r.ReadFrame()
			if err != tc.want {
				t.Fatalf("ReadFrame = %v, want %v", err, tc.want)
			}
			if f.Kind != 0 || f.Payload != nil {
				t.Fatalf("ReadFrame returned a frame %+v with %v", f, err)
			}
		})
	}
}

// errAfter returns its data, then err.
type errAfter struct {
	data []byte
	err  error
}

func (e *errAfter) Read(p []byte) (int, error) {
	if len(e.data) == 0 {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

// TestReadFrameStreamError: an error of the underlying stream is returned
// as is, inside a header or inside a payload.
func TestReadFrameStreamError(t *testing.T) {
	boom := errors.New("connection reset")
	frame := encodeFrame(t, KindHello, 0, 1, &Hello{App: "a"})
	for _, cut := range []int{0, 5, HeaderSize, len(frame) - 1} {
		r := NewReader(&errAfter{data: frame[:cut], err: boom}, 0)
		if _, err := r.ReadFrame(); err != boom {
			t.Errorf("stream failing after %d bytes: ReadFrame = %v, want %v", cut, err, boom)
		}
	}
}

// TestReaderBuffered: Buffered returns exactly the bytes read from the
// stream but not yet parsed, and a new Reader fed with them (the upgrade
// hand-over) goes on where the old one stopped.
func TestReaderBuffered(t *testing.T) {
	var frames [][]byte
	for _, s := range sampleFrames()[:4] {
		frames = append(frames, encodeFrame(t, s.kind, s.flags, s.id, s.payload))
	}
	last := frames[3]
	var stream []byte
	for _, f := range frames[:3] {
		stream = append(stream, f...)
	}
	stream = append(stream, last[:HeaderSize+3]...) // the 4th frame is half there

	r := NewReader(bytes.NewReader(stream), 0)
	if got := r.Buffered(); len(got) != 0 {
		t.Fatalf("Buffered before any read = %d bytes, want 0", len(got))
	}
	consumed := 0
	for i := 0; i < 3; i++ {
		if _, err := r.ReadFrame(); err != nil {
			t.Fatal(err)
		}
		consumed += len(frames[i])
		// bytes.Reader hands the whole stream to the first fill of the
		// buffer, so everything past the parsed frames is buffered.
		if got := r.Buffered(); !bytes.Equal(got, stream[consumed:]) {
			t.Fatalf("after frame %d Buffered = %x, want %x", i, got, stream[consumed:])
		}
	}
	// Buffered does not consume.
	if got := r.Buffered(); !bytes.Equal(got, last[:HeaderSize+3]) {
		t.Fatalf("second Buffered = %x, want %x", got, last[:HeaderSize+3])
	}

	// Hand over: the buffered bytes, then the rest of the connection.
	carried := append([]byte(nil), r.Buffered()...)
	next := NewReader(io.MultiReader(bytes.NewReader(carried), bytes.NewReader(last[HeaderSize+3:])), 0)
	f, err := next.ReadFrame()
	if err != nil {
		t.Fatalf("ReadFrame after hand-over: %v", err)
	}
	checkSample(t, sampleFrames()[3], f)
	if _, err := next.ReadFrame(); err != io.EOF {
		t.Fatalf("after the handed-over frame: %v, want io.EOF", err)
	}
}

// TestNewReaderKeepsBufioBuffer: a *bufio.Reader that already buffered
// bytes is used as is, so those bytes are not lost.
func TestNewReaderKeepsBufioBuffer(t *testing.T) {
	frame := encodeFrame(t, KindHello, 0, 1, &Hello{App: "app"})
	br := bufio.NewReader(bytes.NewReader(frame))
	if _, err := br.Peek(HeaderSize); err != nil { // an earlier owner sniffed the stream
		t.Fatal(err)
	}
	r := NewReader(br, 0)
	if got := r.Buffered(); !bytes.Equal(got, frame) {
		t.Fatalf("Buffered = %x, want the peeked %x", got, frame)
	}
	f, err := r.ReadFrame()
	if err != nil || f.Kind != KindHello || f.ID != 1 {
		t.Fatalf("ReadFrame = %+v, %v", f, err)
	}
}

func TestKindString(t *testing.T) {
	want := map[Kind]string{
		KindHello: "HELLO", KindDeclare: "DECLARE", KindPublish: "PUBLISH", KindPublishAck: "PUBLISH_ACK",
		KindDeliver: "DELIVER", KindAck: "ACK", KindNack: "NACK", KindPull: "PULL", KindPullResult: "PULL_RESULT",
		KindHeartbeat: "HEARTBEAT", KindOK: "OK", KindError: "ERROR",
		KindRequest: "REQUEST", KindResponse: "RESPONSE",
		0: "KIND(0)", kindMax + 1: fmt.Sprintf("KIND(%d)", kindMax+1), 255: "KIND(255)",
	}
	for k, w := range want {
		if got := k.String(); got != w {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(k), got, w)
		}
	}
	for k := Kind(1); k <= kindMax; k++ {
		if _, ok := want[k]; !ok {
			t.Errorf("kind %v has no test row", k)
		}
	}
}

func TestCodes(t *testing.T) {
	tests := []struct {
		code      Code
		name      string
		retryable bool
	}{
		{CodeBadFrame, "BAD_FRAME", false},
		{CodeFrameTooLarge, "FRAME_TOO_LARGE", false},
		{CodeUnsupported, "UNSUPPORTED", false},
		{CodeNotRegistered, "NOT_REGISTERED", false},
		{CodeInvalid, "INVALID", false},
		{CodeBrokerError, "BROKER_ERROR", false},
		{CodeUnavailable, "UNAVAILABLE", true},
		{CodeTimeout, "TIMEOUT", true},
		{CodeRateLimited, "RATE_LIMITED", true},
		{CodeSchemaInvalid, "SCHEMA_INVALID", false},
		{CodeShuttingDown, "SHUTTING_DOWN", true},
		{CodeMessageTooBig, "MESSAGE_TOO_BIG", false},
		{CodeInternal, "INTERNAL", false},
		{CodeNotDeclared, "NOT_DECLARED", false},
		{CodeUnknownRequest, "UNKNOWN_REQUEST", false},
		{CodeNoRoute, "NO_ROUTE", false},
		{CodeNoHealthyHost, "NO_HEALTHY_HOST", true},
		{CodeUpstreamReset, "UPSTREAM_RESET", true},
		{CodeStorageFull, "STORAGE_FULL", true},
		{CodeForbidden, "FORBIDDEN", false},
		{CodeUnauthorized, "UNAUTHORIZED", false},
		{0, "CODE(0)", false},
		{codeMax + 1, fmt.Sprintf("CODE(%d)", codeMax+1), false},
		{math.MaxUint16, "CODE(65535)", false},
	}
	for i, tc := range tests {
		if i < int(codeMax) && tc.code != Code(i+1) {
			t.Fatalf("row %d is code %d: the table must list every code in order", i, tc.code)
		}
		if got := tc.code.String(); got != tc.name {
			t.Errorf("Code(%d).String() = %q, want %q", uint16(tc.code), got, tc.name)
		}
		if got := tc.code.Retryable(); got != tc.retryable {
			t.Errorf("%v.Retryable() = %v, want %v", tc.code, got, tc.retryable)
		}
	}
	e := &Error{Code: CodeTimeout, Message: "broker did not answer in 5s"}
	if got, want := e.Error(), "TIMEOUT: broker did not answer in 5s"; got != want {
		t.Errorf("Error.Error() = %q, want %q", got, want)
	}
}

func TestCodeOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Code
	}{
		{"size", &FrameSizeError{Size: 10, Max: 5}, CodeFrameTooLarge},
		{"version", &ProtocolError{Err: ErrUnsupportedVersion, Reason: "v2"}, CodeUnsupported},
		{"malformed", &ProtocolError{Err: ErrMalformed, Kind: KindPull, Field: "max", Reason: "short"}, CodeBadFrame},
		{"wrapped", fmt.Errorf("conn 7: %w", &ProtocolError{Err: ErrMalformed, Reason: "x"}), CodeBadFrame},
		{"sentinel", ErrFrameTooLarge, CodeFrameTooLarge},
		{"eof", io.ErrUnexpectedEOF, CodeInternal},
		{"other", errors.New("boom"), CodeInternal},
	}
	for _, tc := range tests {
		if got := CodeOf(tc.err, nil); got != tc.want {
			t.Errorf("%s: CodeOf(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestErrorMessages(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&ProtocolError{Err: ErrMalformed, Kind: KindPull, Field: "max", Reason: "needs 4 bytes, 1 left"},
			"mesh: malformed frame PULL field max: needs 4 bytes, 1 left"},
		{&ProtocolError{Err: ErrMalformed, Kind: KindHello, Reason: "2 trailing bytes"},
			"mesh: malformed frame HELLO: 2 trailing bytes"},
		{&ProtocolError{Err: ErrUnsupportedVersion, Reason: "version 2, this peer speaks 1"},
			"mesh: unsupported protocol version: version 2, this peer speaks 1"},
		{&FrameSizeError{Size: 5 << 20, Max: 4 << 20},
			"mesh: frame of 5242880 bytes exceeds the limit of 4194304 bytes"},
	}
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
