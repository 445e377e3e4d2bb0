package mesh

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/msgmesh/msgmesh/internal/allocs"
)

// oversized returns a PUBLISH frame of size bytes, over any limit below it.
func oversized(t testing.TB, id uint64, size int) []byte {
	t.Helper()
	b := encodeFrame(t, KindHeartbeat, 0, id, nil) // header only, fixed below
	b = append(b[:HeaderSize], bytes.Repeat([]byte{0xee}, size-HeaderSize)...)
	b[5] = byte(KindPublish)
	b[0], b[1], b[2], b[3] = byte((size-4)>>24), byte((size-4)>>16), byte((size-4)>>8), byte(size-4)
	return b
}

// wantTooLarge fails unless err is a *FrameSizeError for a frame of size
// and f names the refused frame.
func wantTooLarge(t *testing.T, f Frame, err error, id uint64, size int) {
	t.Helper()
	var se *FrameSizeError
	if !errors.As(err, &se) || se.Size != size {
		t.Fatalf("error %v, want a FrameSizeError for %d bytes", err, size)
	}
	if f.ID != id || f.Kind != KindPublish || f.Payload != nil {
		t.Fatalf("refused frame %+v, want PUBLISH #%d without payload", f, id)
	}
}

// TestReadFrameSkipsOversized: a frame over the limit is refused, its
// payload skipped, and the frames after it are read as if it was not
// there, by ReadFrame and ReadFrameInto alike.
func TestReadFrameSkipsOversized(t *testing.T) {
	const max = 1000
	hb := func(id uint64) []byte { return encodeFrame(t, KindHeartbeat, 0, id, nil) }
	big := oversized(t, 2, 200_000) // more than the Reader's 64 KiB buffer
	stream := cat(hb(1), big, hb(3), oversized(t, 4, max+1), oversized(t, 5, 70_000), hb(6))
	for _, into := range []bool{false, true} {
		r := NewReader(bytes.NewReader(stream), max)
		read := func() (Frame, error) {
			if into {
				f, _, err := r.ReadFrameInto(nil)
				return f, err
			}
			return r.ReadFrame()
		}
		for _, want := range []struct {
			id   uint64
			size int // 0: a heartbeat to read
		}{{1, 0}, {2, len(big)}, {3, 0}, {4, max + 1}, {5, 70_000}, {6, 0}} {
			f, err := read()
			if want.size > 0 {
				wantTooLarge(t, f, err, want.id, want.size)
				continue
			}
			if err != nil || f.Kind != KindHeartbeat || f.ID != want.id {
				t.Fatalf("into=%v: frame %+v, %v; want HEARTBEAT #%d", into, f, err, want.id)
			}
		}
		if _, err := read(); err != io.EOF {
			t.Fatalf("into=%v: after the last frame: %v, want io.EOF", into, err)
		}
	}
	// A stream that ends inside the skipped payload is a broken one.
	r := NewReader(bytes.NewReader(big[:len(big)-1]), max)
	f, err := r.ReadFrame()
	wantTooLarge(t, f, err, 2, len(big))
	if _, err := r.ReadFrame(); err != io.ErrUnexpectedEOF {
		t.Fatalf("stream cut inside a skipped payload: %v, want io.ErrUnexpectedEOF", err)
	}
}

// TestSkipDoesNotAllocate: skipping a 64 MiB payload reads it through the
// Reader's buffer and stores none of it.
func TestSkipDoesNotAllocate(t *testing.T) {
	big := oversized(t, 1, 64<<20)
	next := encodeFrame(t, KindHeartbeat, 0, 2, nil)
	stream := cat(big, next)
	src := bytes.NewReader(stream)
	r := NewReader(src, DefaultMaxFrameSize)
	if n := allocs.BytesPerRun(3, func() {
		src.Reset(stream)
		r = NewReader(src, DefaultMaxFrameSize)
		if _, err := r.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("oversized frame: %v", err)
		}
		if f, err := r.ReadFrame(); err != nil || f.ID != 2 {
			t.Fatalf("frame after the skipped one: %+v, %v", f, err)
		}
	}); n > 128<<10 {
		t.Fatalf("skipping a 64 MiB payload allocated %d bytes", n)
	}
}

// stutter returns its bytes a few at a time with a timeout error between
// reads, like a socket whose read deadline keeps passing.
type stutter struct {
	b       []byte
	timeout bool
}

func (s *stutter) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	if s.timeout = !s.timeout; s.timeout {
		return 0, os.ErrDeadlineExceeded
	}
	n := copy(p[:min(len(p), 7)], s.b)
	s.b = s.b[n:]
	return n, nil
}

// TestSkipResumesAfterTimeout: a read deadline in the middle of a skip
// loses nothing: the next ReadFrame goes on skipping.
func TestSkipResumesAfterTimeout(t *testing.T) {
	const max = 100
	r := NewReader(&stutter{b: cat(oversized(t, 1, 1000), encodeFrame(t, KindHeartbeat, 0, 2, nil))}, max)
	var got []Frame
	for timeouts := 0; ; {
		f, err := r.ReadFrame()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if timeouts++; timeouts > 10_000 {
				t.Fatal("no progress")
			}
			continue
		case errors.Is(err, ErrFrameTooLarge):
			wantTooLarge(t, f, err, 1, 1000)
		case err == io.EOF:
			if len(got) != 1 || got[0].ID != 2 {
				t.Fatalf("frames after the skipped one: %+v", got)
			}
			return
		case err != nil:
			t.Fatal(err)
		default:
			got = append(got, f)
		}
	}
}

// TestSkipHandover: a Reader stopped in the middle of a skip hands its
// state on (Buffered, Skipping); a new Reader on the rest of the stream
// with Prefill and Skip reads the next frame, as an adopted connection
// does after a hot upgrade.
func TestSkipHandover(t *testing.T) {
	const max = 1000
	next := encodeFrame(t, KindHeartbeat, 0, 2, nil)
	for _, size := range []int{max + 1, 2000, 100_000, 300_000} {
		stream := cat(oversized(t, 1, size), next)
		src := bytes.NewReader(stream)
		r := NewReader(src, max)
		f, err := r.ReadFrame()
		wantTooLarge(t, f, err, 1, size)
		buf, skip := r.Buffered(), r.Skipping()
		if len(buf) > 0 && skip > 0 {
			t.Fatalf("size %d: Buffered %d bytes and Skipping %d", size, len(buf), skip)
		}
		// The rest of the stream is what the first Reader did not read.
		r2 := NewReader(src, max)
		r2.Prefill(buf)
		r2.Skip(skip)
		f, err = r2.ReadFrame()
		if err != nil || f.ID != 2 || f.Kind != KindHeartbeat {
			t.Fatalf("size %d: after the handover: %+v, %v; want HEARTBEAT #2", size, f, err)
		}
		if _, err := r2.ReadFrame(); err != io.EOF {
			t.Fatalf("size %d: %v, want io.EOF", size, err)
		}
	}
}
