package mesh

import (
	"bytes"
	"testing"
)

// benchPublish is a typical publish: a topic, a key, a trace header and a
// 1 KiB body.
func benchPublish() *Publish {
	return &Publish{
		Topic:   "orders",
		Key:     "customer-42",
		Headers: []HeaderField{{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
		Body:    bytes.Repeat([]byte{0x5a}, 1<<10),
	}
}

func BenchmarkAppendFramePublish1KiB(b *testing.B) {
	p := benchPublish()
	buf := encodeFrame(b, KindPublish, 0, 1, p)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for i := uint64(0); b.Loop(); i++ {
		var err error
		if buf, err = AppendFrame(buf[:0], 0, KindPublish, 0, i+1, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePublish1KiB(b *testing.B) {
	frame := encodeFrame(b, KindPublish, 0, 1, benchPublish())
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	var p Publish
	for b.Loop() {
		f, _, err := DecodeFrame(frame, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Decode(f.Payload); err != nil {
			b.Fatal(err)
		}
	}
	if len(p.Body) != 1<<10 {
		b.Fatalf("decoded a body of %d bytes", len(p.Body))
	}
}

// loopReader returns the same bytes forever, like a connection carrying an
// endless run of identical frames.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.data[l.off:])
		n += c
		l.off = (l.off + c) % len(l.data)
	}
	return n, nil
}

func BenchmarkReadFrame1KiB(b *testing.B) {
	frame := encodeFrame(b, KindPublish, 0, 1, benchPublish())
	r := NewReader(&loopReader{data: frame}, 0)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := r.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		if f.Kind != KindPublish || len(f.Payload) != len(frame)-HeaderSize {
			b.Fatalf("read %v with %d payload bytes", f.Kind, len(f.Payload))
		}
	}
}
