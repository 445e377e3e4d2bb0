package mesh

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// A read deadline that interrupts a frame loses nothing: Buffered holds the
// partial frame, and the next ReadFrame finishes it.
func TestReadFrameResumesAfterDeadline(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	frame, err := AppendFrame(nil, 0, KindPublish, 0, 42, &Publish{Topic: "t", Body: bytes.Repeat([]byte("x"), 100)})
	if err != nil {
		t.Fatal(err)
	}
	rd := NewReader(b, 0)
	for _, cut := range []int{5, HeaderSize + 10} { // inside the header, inside the payload
		go func() { _, _ = a.Write(frame[:cut]) }()
		_ = b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := rd.ReadFrame(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("cut at %d: err %v, want a deadline error", cut, err)
		}
		if got := rd.Buffered(); !bytes.Equal(got, frame[:cut]) {
			t.Fatalf("cut at %d: Buffered() = %d bytes, want the %d read so far", cut, len(got), cut)
		}
		go func() { _, _ = a.Write(frame[cut:]) }()
		_ = b.SetReadDeadline(time.Time{})
		f, err := rd.ReadFrame()
		if err != nil || f.ID != 42 || len(f.Payload) != len(frame)-HeaderSize {
			t.Fatalf("cut at %d: resumed frame %+v, err %v", cut, f, err)
		}
	}
}

// Prefill: a new owner parses the carried-over bytes, then the stream.
func TestPrefillThenStream(t *testing.T) {
	f1, _ := AppendFrame(nil, 0, KindHeartbeat, 0, 1, nil)
	f2, _ := AppendFrame(nil, 0, KindHeartbeat, 0, 2, nil)
	both := append(append([]byte{}, f1...), f2...)
	carried, rest := both[:HeaderSize+3], both[HeaderSize+3:] // a frame and a bit
	rd := NewReader(bytes.NewReader(rest), 0)
	rd.Prefill(carried)
	for want := uint64(1); want <= 2; want++ {
		f, err := rd.ReadFrame()
		if err != nil || f.ID != want {
			t.Fatalf("frame %d: %+v, %v", want, f, err)
		}
	}
}
