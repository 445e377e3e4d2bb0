package meshconn_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/codecs/mesh/meshconn"
)

// tcpPair returns both ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-acc
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

// echo answers every PUBLISH with a PUBLISH_ACK naming the request id as
// offset, and records the answers no request waits for.
type echo struct {
	c       *meshconn.Conn
	answers chan mesh.Frame
}

func (e *echo) HandleRequest(f mesh.Frame) {
	if f.Kind == mesh.KindPublish {
		_ = e.c.Answer(mesh.KindPublishAck, f.ID, &mesh.PublishAck{Offset: int64(f.ID), Partition: -1})
		return
	}
	_ = e.c.Error(f.ID, mesh.CodeUnsupported, f.Kind.String())
}

func (e *echo) HandleAnswer(f mesh.Frame, err error) {
	select {
	case e.answers <- mesh.Frame{Kind: f.Kind, ID: f.ID}:
	default:
	}
}

// start runs a Conn on nc; the test's cleanup closes it and waits for Run.
func start(t *testing.T, nc net.Conn, cfg meshconn.Config) (*meshconn.Conn, *echo, <-chan error) {
	t.Helper()
	h := &echo{answers: make(chan mesh.Frame, 16)}
	h.c = meshconn.New(nc, h, cfg)
	done := make(chan error, 1)
	ended := make(chan struct{})
	go func() { done <- h.c.Run(); close(ended) }()
	t.Cleanup(func() {
		h.c.Close(errors.New("test over"))
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after Close")
		}
	})
	return h.c, h, done
}

func TestCallsMatchAnswers(t *testing.T) {
	a, b := tcpPair(t)
	ca, _, _ := start(t, a, meshconn.Config{})
	start(t, b, meshconn.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		kind mesh.Kind
		want mesh.Kind
	}{
		{mesh.KindPublish, mesh.KindPublishAck},
		{mesh.KindHeartbeat, mesh.KindHeartbeat},
		{mesh.KindPull, mesh.KindError},
	} {
		var p mesh.Encoder
		if tc.kind == mesh.KindPublish {
			p = &mesh.Publish{Topic: "t", Body: []byte("x")}
		}
		if tc.kind == mesh.KindPull {
			p = &mesh.Pull{Group: "g", Topic: "t", Max: 1}
		}
		f, err := ca.Call(ctx, tc.kind, p)
		if err != nil {
			t.Fatalf("%s: %v", tc.kind, err)
		}
		if f.Kind != tc.want || !f.IsResponse() {
			t.Fatalf("%s answered %s (response %v), want %s", tc.kind, f.Kind, f.IsResponse(), tc.want)
		}
		if tc.kind == mesh.KindPublish {
			var ack mesh.PublishAck
			if err := ack.Decode(f.Payload); err != nil || uint64(ack.Offset) != ca.IDs().Last() {
				t.Fatalf("PUBLISH_ACK %+v (%v) does not name request %d", ack, err, ca.IDs().Last())
			}
		}
	}
}

// A request over the frame limit is refused before anything is written
// (mesh.ErrFrameTooLarge), and the connection goes on.
func TestTooLargeNotSent(t *testing.T) {
	a, b := tcpPair(t)
	ca, _, _ := start(t, a, meshconn.Config{MaxFrameSize: 200})
	start(t, b, meshconn.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	f, err := ca.Call(ctx, mesh.KindPublish, &mesh.Publish{Topic: "t", Body: make([]byte, 300)})
	if err == nil && f.Kind != mesh.KindError {
		t.Fatalf("a 300-byte PUBLISH over a 200-byte limit was sent: %s", f.Kind)
	}
	if !errors.Is(err, mesh.ErrFrameTooLarge) {
		t.Fatalf("Call = %v, want mesh.ErrFrameTooLarge", err)
	}
	if _, err := ca.Call(ctx, mesh.KindHeartbeat, nil); err != nil {
		t.Fatalf("after a refused frame: %v", err)
	}
}

// A request over the receiver's limit is answered FRAME_TOO_LARGE, its
// payload skipped, and the connection goes on.
func TestTooLargeRequestAnswered(t *testing.T) {
	a, b := tcpPair(t)
	seen := make(chan error, 1)
	start(t, a, meshconn.Config{MaxFrameSize: 200, OnTooLarge: func(_ mesh.Frame, err error) { seen <- err }})
	cb, _, _ := start(t, b, meshconn.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := cb.Call(ctx, mesh.KindPublish, &mesh.Publish{Topic: "t", Body: make([]byte, 300)})
	if err != nil {
		t.Fatal(err)
	}
	var e mesh.Error
	if f.Kind != mesh.KindError || e.Decode(f.Payload) != nil || !errors.Is(&e, mesh.FrameTooLarge) {
		t.Fatalf("answer %s %+v, want ERROR FRAME_TOO_LARGE", f.Kind, e)
	}
	if err := <-seen; !errors.Is(err, mesh.ErrFrameTooLarge) {
		t.Fatalf("OnTooLarge got %v", err)
	}
	if _, err := cb.Call(ctx, mesh.KindHeartbeat, nil); err != nil {
		t.Fatalf("after a refused frame: %v", err)
	}
}

// Close fails what is outstanding with Lost(cause), once; a ctx gives up
// waiting without closing.
func TestCloseFailsOutstanding(t *testing.T) {
	a, b := tcpPair(t)
	errLost := errors.New("lost")
	closed := make(chan error, 2)
	ca, _, runA := start(t, a, meshconn.Config{
		Lost:    func(cause error) error { return errors.Join(errLost, cause) },
		OnClose: func(cause error) { closed <- cause },
	})
	// b reads nothing: no answer will come.
	_ = b
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := ca.Call(ctx, mesh.KindHeartbeat, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call past its ctx = %v", err)
	}
	_, ch, err := ca.Start(mesh.KindHeartbeat, nil)
	if err != nil {
		t.Fatal(err)
	}
	cause := errors.New("going away")
	ca.Close(cause)
	ca.Close(errors.New("again"))
	r := <-ch
	if !errors.Is(r.Err, errLost) || !errors.Is(r.Err, cause) {
		t.Fatalf("outstanding request failed with %v", r.Err)
	}
	if got := <-closed; got != cause {
		t.Fatalf("OnClose(%v), want the first cause", got)
	}
	if err := <-runA; err == nil {
		t.Fatal("Run returned nil after Close")
	}
	if _, _, err := ca.Start(mesh.KindHeartbeat, nil); !errors.Is(err, errLost) {
		t.Fatalf("Start after Close = %v", err)
	}
}

// A peer that sends nothing for three heartbeats is dropped (ErrSilent).
func TestHeartbeatSilence(t *testing.T) {
	a, _ := tcpPair(t) // the other end never answers
	ca, _, runA := start(t, a, meshconn.Config{Heartbeat: 20 * time.Millisecond})
	select {
	case err := <-runA:
		if !errors.Is(ca.Cause(), meshconn.ErrSilent) {
			t.Fatalf("closed for %v (Run: %v), want ErrSilent", ca.Cause(), err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a silent peer was not dropped")
	}
}

// Freeze stops the read loop at a frame boundary with the connection open
// and unread bytes in the Reader, for a hot upgrade to carry along.
func TestFreezeKeepsUnreadBytes(t *testing.T) {
	a, b := tcpPair(t)
	ca, h, runA := start(t, a, meshconn.Config{})
	w := meshconn.NewWriter(b, 0, 0)
	if err := w.Send(mesh.KindOK, mesh.FlagResponse, 7, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-h.answers:
		if f.ID != 7 {
			t.Fatalf("unmatched answer id %d, want 7", f.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("unmatched answer not handed to the Handler")
	}
	ca.Freeze()
	select {
	case err := <-runA:
		if !errors.Is(err, meshconn.ErrFrozen) {
			t.Fatalf("Run = %v, want ErrFrozen", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Freeze did not stop Run")
	}
	if ca.Closed() {
		t.Fatal("Freeze closed the connection")
	}
	// Half a frame arrives after the freeze: the next owner reads it.
	frame, _ := mesh.AppendFrame(nil, 0, mesh.KindHeartbeat, 0, 9, nil)
	if _, err := b.Write(frame[:5]); err != nil {
		t.Fatal(err)
	}
	_ = a.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := ca.Reader().ReadFrame(); err == nil {
		t.Fatal("read a whole frame from half of one")
	}
	got := ca.Reader().Buffered()
	if string(got) != string(frame[:5]) {
		t.Fatalf("Buffered = %x, want %x", got, frame[:5])
	}
}
