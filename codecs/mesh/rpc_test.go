package mesh

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"testing"

	"github.com/msgmesh/msgmesh/internal/allocs"
)

// TestWireFormatGoldenRPC pins the layout of the RPC kinds (docs/protocol.md
// §5.13, §5.14).
func TestWireFormatGoldenRPC(t *testing.T) {
	req := encodeFrame(t, KindRequest, 0, 9, &Request{Service: "s", Method: "m", Headers: []HeaderField{{"k", "v"}}, Body: []byte("hi")})
	//              length   ver kind flg rsv id                service method headers      body
	want := unhex(t, "00000018 01  0d   00  00  0000000000000009  0173    016d   01 016b 0176 026869")
	if !bytes.Equal(req, want) {
		t.Fatalf("REQUEST =\n%x\nwant\n%x", req, want)
	}
	resp := encodeFrame(t, KindResponse, FlagResponse, 9, &Response{Body: []byte("ok")})
	//               length   ver kind flg rsv id                headers body
	want = unhex(t, "00000010 01  0e   01  00  0000000000000009  00      026f6b")
	if !bytes.Equal(resp, want) {
		t.Fatalf("RESPONSE =\n%x\nwant\n%x", resp, want)
	}
}

// TestRequestViewMatchesDecode: the view accepts what Decode accepts, with
// the same error, and points at the same bytes.
func TestRequestViewMatchesDecode(t *testing.T) {
	var inputs [][]byte
	for _, tc := range roundTripCases() {
		if tc.kind == KindRequest {
			inputs = append(inputs, tc.in.AppendTo(nil))
		}
	}
	full := (&Request{Service: "svc", Method: "M", Headers: manyHeaders(5), Body: []byte("body")}).AppendTo(nil)
	for cut := 0; cut <= len(full); cut++ {
		inputs = append(inputs, full[:cut])
	}
	inputs = append(inputs, append(full, 0), cat(str("s"), str("m"), uv(maxListLen+1)))
	for _, in := range inputs {
		var r Request
		derr := r.Decode(in)
		var v RequestView
		verr := v.Parse(in)
		if (derr == nil) != (verr == nil) || derr != nil && derr.Error() != verr.Error() {
			t.Fatalf("input %x: Decode %v, Parse %v", in, derr, verr)
		}
		if derr != nil {
			continue
		}
		if string(v.Service) != r.Service || string(v.Method) != r.Method || !bytes.Equal(v.Body, r.Body) {
			t.Fatalf("view %q %q %q, decoded %+v", v.Service, v.Method, v.Body, r)
		}
		for _, h := range r.Headers {
			got, ok := v.Header(h.Key)
			want := ""
			for _, h2 := range r.Headers { // the first one with that key
				if h2.Key == h.Key {
					want = h2.Value
					break
				}
			}
			if !ok || got != want {
				t.Fatalf("Header(%q) = %q, %v; want %q", h.Key, got, ok, want)
			}
		}
		if _, ok := v.Header("no-such-header"); ok {
			t.Fatal("Header found a key that is not there")
		}
	}
}

func TestRequestViewDoesNotAllocate(t *testing.T) {
	p := (&Request{Service: "inventory", Method: "Reserve", Headers: manyHeaders(8), Body: make([]byte, 1024)}).AppendTo(nil)
	var v RequestView
	if n := testing.AllocsPerRun(100, func() {
		if err := v.Parse(p); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Parse allocates %v times per call", n)
	}
}

func TestReadFrameInto(t *testing.T) {
	var stream []byte
	samples := sampleFrames()
	for _, s := range samples {
		stream = append(stream, encodeFrame(t, s.kind, s.flags, s.id, s.payload)...)
	}
	r := NewReader(bytes.NewReader(stream), 0)
	buf := make([]byte, 0, 8)
	rest := stream
	for _, s := range samples {
		f, b, err := r.ReadFrameInto(buf)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		df, n, _ := DecodeFrame(rest, 0)
		if !bytes.Equal(b, rest[:n]) || f.Kind != df.Kind || f.ID != df.ID || !bytes.Equal(f.Payload, df.Payload) {
			t.Fatalf("%s: ReadFrameInto %+v %x, DecodeFrame %+v", s.name, f, b, df)
		}
		if len(f.Payload) > 0 && &f.Payload[0] != &b[HeaderSize] {
			t.Fatalf("%s: payload does not alias the returned buffer", s.name)
		}
		rest = rest[n:]
		buf = b // reuse
	}
	if _, _, err := r.ReadFrameInto(buf); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestReadFrameIntoRefusesBeforeGrowing(t *testing.T) {
	h := header(math.MaxUint32, Version, KindRequest, 0, 0, 5)
	r := NewReader(bufio.NewReader(bytes.NewReader(h)), 1<<20)
	if n := allocs.BytesPerRun(1, func() {
		f, b, err := r.ReadFrameInto(nil)
		if !errors.Is(err, ErrFrameTooLarge) || f.ID != 5 || len(b) != 0 {
			t.Fatalf("ReadFrameInto = %+v, %d bytes, %v", f, len(b), err)
		}
		r = NewReader(bytes.NewReader(h), 1<<20)
	}); n > 1<<18 {
		t.Fatalf("refusing a 4 GiB frame allocated %d bytes", n)
	}
	cut := encodeFrame(t, KindRequest, 0, 6, &Request{Service: "s", Body: []byte("abcdef")})
	r = NewReader(bytes.NewReader(cut[:len(cut)-2]), 0)
	if _, _, err := r.ReadFrameInto(nil); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut frame: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestSetFrameID(t *testing.T) {
	b := encodeFrame(t, KindRequest, 0, 1, &Request{Service: "s"})
	SetFrameID(b, math.MaxUint64-1)
	f, _, err := DecodeFrame(b, 0)
	if err != nil || f.ID != math.MaxUint64-1 || f.Kind != KindRequest {
		t.Fatalf("after SetFrameID: %+v, %v", f, err)
	}
}

func TestPeekErrorCode(t *testing.T) {
	p := (&Error{Code: CodeNoHealthyHost, Message: "cluster echo: 2 hosts refused"}).AppendTo(nil)
	if c, ok := PeekErrorCode(p); !ok || c != CodeNoHealthyHost {
		t.Fatalf("PeekErrorCode = %v, %v", c, ok)
	}
	if _, ok := PeekErrorCode(p[:1]); ok {
		t.Fatal("PeekErrorCode accepted one byte")
	}
}

// ReadFrameInto serves carried-over bytes first and finishes a frame that
// ReadFrame was interrupted in.
func TestReadFrameIntoAfterPrefillAndResume(t *testing.T) {
	a := encodeFrame(t, KindRequest, 0, 1, &Request{Service: "a", Body: []byte("first")})
	b := encodeFrame(t, KindRequest, 0, 2, &Request{Service: "b", Body: []byte("second")})
	c := encodeFrame(t, KindRequest, 0, 3, &Request{Service: "c"})

	// Prefill holds all of a and half of b; the stream has the rest.
	r := NewReader(bytes.NewReader(append(append([]byte(nil), b[10:]...), c...)), 0)
	r.Prefill(append(append([]byte(nil), a...), b[:10]...))
	for i, want := range [][]byte{a, b, c} {
		f, got, err := r.ReadFrameInto(nil)
		if err != nil || !bytes.Equal(got, want) || f.ID != uint64(i+1) {
			t.Fatalf("frame %d: %x, %v; want %x", i+1, got, err, want)
		}
	}

	// A read error in the middle of a frame, then ReadFrameInto finishes it.
	st := &stallReader{data: a, stallAt: 20}
	r = NewReader(st, 0)
	if _, err := r.ReadFrame(); !errors.Is(err, errStall) {
		t.Fatalf("ReadFrame: %v, want the stall", err)
	}
	f, got, err := r.ReadFrameInto(make([]byte, 0, 4))
	if err != nil || !bytes.Equal(got, a) || string(f.Payload) != string(a[HeaderSize:]) {
		t.Fatalf("resumed frame %x, %v; want %x", got, err, a)
	}
}

var errStall = errors.New("stalled")

// stallReader fails once after stallAt bytes.
type stallReader struct {
	data    []byte
	stallAt int
	off     int
	stalled bool
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.off >= len(s.data) {
		return 0, io.EOF
	}
	end := len(s.data)
	if !s.stalled && s.off < s.stallAt {
		end = s.stallAt
	} else if !s.stalled {
		s.stalled = true
		return 0, errStall
	}
	n := copy(p, s.data[s.off:end])
	s.off += n
	return n, nil
}
