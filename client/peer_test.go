package client_test

// The peer in this file stands in for the msgmesh sidecar: it speaks the
// mesh wire protocol over a real TCP listener on 127.0.0.1:0 and lets each
// test script the sidecar's side of the conversation frame by frame. The
// real sidecar is tested together with this SDK in package msgmesh.

import (
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/codecs/mesh/meshconn"
)

// wait bounds every wait in these tests; generous for -race on busy CI.
const wait = 15 * time.Second

type peer struct {
	t     testing.TB
	ln    net.Listener
	conns chan *peerConn
	wg    sync.WaitGroup

	// onDeclare decides the answer to DECLARE (nil: OK). It runs on the
	// connection's reader, so blocking in it holds that connection.
	onDeclare func(mesh.Declare) *mesh.Error
	// afterDeclare runs on the reader right after a DECLARE was answered OK.
	afterDeclare func(*peerConn, mesh.Declare)
	// autoPublish answers every PUBLISH with a PUBLISH_ACK whose Offset
	// counts publishes on the connection; the frame is still recorded.
	autoPublish bool
	// onAnswer, if set, sees every answer frame from the client.
	onAnswer func(mesh.Frame)
	// noRecord: do not keep frames for the test (benchmarks). With
	// autoPublish it also has the PUBLISH_ACKs queued on a
	// meshconn.Writer, as the sidecar's are, so answers in a row share
	// write syscalls and the peer's cost does not hide the SDK's.
	noRecord bool
	// oldSidecar makes the peer answer a HELLO carrying features as a
	// sidecar that predates them does: ERROR BAD_FRAME (trailing bytes).
	oldSidecar bool
	// helloGate, if set, holds the HELLO answer of every connection after
	// the first until a value is received from it.
	helloGate chan struct{}
	accepted  atomic.Int32
}

type peerConn struct {
	t      testing.TB
	p      *peer
	nc     net.Conn
	wmu    sync.Mutex
	frames chan mesh.Frame // every frame received, in order
	mute   atomic.Bool     // stop answering heartbeats
	done   chan struct{}   // closed when the reader returned

	lastHello []byte // the payload of the HELLO handshake read
}

func newPeer(t testing.TB) *peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startPeer(t, ln)
}

func startPeer(t testing.TB, ln net.Listener) *peer {
	p := &peer{t: t, ln: ln, conns: make(chan *peerConn, 16)}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			pc := &peerConn{t: t, p: p, nc: nc, frames: make(chan mesh.Frame, 4096), done: make(chan struct{})}
			n := p.accepted.Add(1)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				pc.read(n)
			}()
			p.conns <- pc
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		for {
			select {
			case pc := <-p.conns:
				_ = pc.nc.Close()
				continue
			default:
			}
			break
		}
		p.wg.Wait()
	})
	return p
}

func (p *peer) addr() string { return p.ln.Addr().String() }

// accept returns the next connection the client opened.
func (p *peer) accept(t testing.TB) *peerConn {
	t.Helper()
	select {
	case pc := <-p.conns:
		t.Cleanup(func() { _ = pc.nc.Close() })
		return pc
	case <-time.After(wait):
		t.Fatal("peer: no connection from the client")
		return nil
	}
}

func (pc *peerConn) read(n int32) {
	defer close(pc.done)
	r := mesh.NewReader(pc.nc, 0)
	var published int64
	var acks *meshconn.Writer // made at the first PUBLISH (tests set the fields after newPeer)
	defer func() {
		if acks != nil {
			_ = acks.Close()
		}
	}()
	for {
		f, err := r.ReadFrame()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				pc.t.Logf("peer: read: %v", err)
			}
			return
		}
		if !pc.p.noRecord {
			select {
			case pc.frames <- f:
			default:
				pc.t.Errorf("peer: frame buffer full")
				return
			}
		}
		if f.IsResponse() {
			if pc.p.onAnswer != nil {
				pc.p.onAnswer(f)
			}
			continue
		}
		switch f.Kind {
		case mesh.KindHello:
			var h mesh.Hello
			if pc.p.oldSidecar && h.Decode(f.Payload) == nil && h.Features != 0 {
				pc.send(mesh.KindError, mesh.FlagResponse, f.ID, &mesh.Error{Code: mesh.CodeBadFrame, Message: "mesh: malformed frame HELLO: 4 trailing bytes"})
				continue
			}
			if n > 1 && pc.p.helloGate != nil {
				select {
				case <-pc.p.helloGate:
				case <-time.After(wait):
				}
			}
			pc.send(mesh.KindOK, mesh.FlagResponse, f.ID, nil)
		case mesh.KindDeclare:
			var d mesh.Declare
			if err := d.Decode(f.Payload); err != nil {
				pc.t.Errorf("peer: bad DECLARE: %v", err)
			}
			if pc.p.onDeclare != nil {
				if e := pc.p.onDeclare(d); e != nil {
					pc.send(mesh.KindError, mesh.FlagResponse, f.ID, e)
					continue
				}
			}
			pc.send(mesh.KindOK, mesh.FlagResponse, f.ID, nil)
			if pc.p.afterDeclare != nil {
				pc.p.afterDeclare(pc, d)
			}
		case mesh.KindHeartbeat:
			if !pc.mute.Load() {
				pc.send(mesh.KindHeartbeat, mesh.FlagResponse, f.ID, nil)
			}
		case mesh.KindPublish:
			if pc.p.autoPublish {
				published++
				ack := mesh.PublishAck{Stream: "S", Partition: -1, Offset: published}
				if acks == nil && pc.p.noRecord {
					acks = meshconn.NewWriter(pc.nc, 0, 0)
				}
				if acks != nil {
					_ = acks.Queue(mesh.KindPublishAck, mesh.FlagResponse, f.ID, &ack)
					continue
				}
				pc.send(mesh.KindPublishAck, mesh.FlagResponse, f.ID, &ack)
			}
		}
	}
}

// send writes one frame to the client.
func (pc *peerConn) send(kind mesh.Kind, flags mesh.Flags, id uint64, payload mesh.Encoder) {
	b, err := mesh.AppendFrame(nil, 0, kind, flags, id, payload)
	if err != nil {
		pc.t.Errorf("peer: encode %s: %v", kind, err)
		return
	}
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	if _, err := pc.nc.Write(b); err != nil {
		pc.t.Logf("peer: write %s: %v", kind, err)
	}
}

// next returns the next frame from the client, heartbeats included.
func (pc *peerConn) next(t *testing.T) mesh.Frame {
	t.Helper()
	select {
	case f := <-pc.frames:
		return f
	case <-time.After(wait):
		t.Fatal("peer: no frame from the client")
		return mesh.Frame{}
	}
}

// expect returns the next frame that is not a heartbeat and checks its kind
// and whether it is an answer.
func (pc *peerConn) expect(t *testing.T, kind mesh.Kind, response bool) mesh.Frame {
	t.Helper()
	for {
		f := pc.next(t)
		if f.Kind == mesh.KindHeartbeat && kind != mesh.KindHeartbeat {
			continue
		}
		if f.Kind != kind || f.IsResponse() != response {
			t.Fatalf("peer: got %s (response %v, id %d), want %s (response %v)", f.Kind, f.IsResponse(), f.ID, kind, response)
		}
		return f
	}
}

// handshake consumes the client's HELLO and DECLARE (answered by the
// reader) and returns them.
func (pc *peerConn) handshake(t *testing.T) (mesh.Hello, mesh.Declare) {
	t.Helper()
	var h mesh.Hello
	var d mesh.Declare
	pc.lastHello = pc.expect(t, mesh.KindHello, false).Payload
	if err := h.Decode(pc.lastHello); err != nil {
		t.Fatal(err)
	}
	if err := d.Decode(pc.expect(t, mesh.KindDeclare, false).Payload); err != nil {
		t.Fatal(err)
	}
	return h, d
}

func (pc *peerConn) expectDeclare(t *testing.T) []mesh.Subscription {
	t.Helper()
	var d mesh.Declare
	if err := d.Decode(pc.expect(t, mesh.KindDeclare, false).Payload); err != nil {
		t.Fatal(err)
	}
	return d.Subs
}

// drop closes the connection the way a crashing sidecar would.
func (pc *peerConn) drop() {
	_ = pc.nc.Close()
	<-pc.done
}

// noGoroutinesAbove polls until at most n goroutines run.
func noGoroutinesAbove(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(2 * time.Millisecond)
	}
}
