package meshrpc

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); ch <- c }()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-ch
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func frame(t *testing.T, kind mesh.Kind, flags mesh.Flags, id uint64, p mesh.Encoder) []byte {
	t.Helper()
	b, err := mesh.AppendFrame(nil, 0, kind, flags, id, p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServerConn(t *testing.T) {
	client, server := pair(t)
	sc := Codec{}.NewServerConn(server, bufio.NewReader(server), stream.Limits{MaxHeaderBytes: 64, MaxBodyBytes: 1024})
	var in []byte
	in = append(in, frame(t, mesh.KindHeartbeat, 0, 1, nil)...)                                                         // answered by the codec
	in = append(in, frame(t, mesh.KindRequest, 0, 2, &mesh.Request{Service: "svc", Method: "M", Body: []byte("b")})...) // a request
	in = append(in, frame(t, mesh.KindRequest, 0, 3, rawPayload{1, 'x'})...)                                            // malformed payload
	in = append(in, frame(t, mesh.KindPublish, 0, 4, &mesh.Publish{Topic: "t"})...)                                     // not RPC
	in = append(in, frame(t, mesh.KindOK, mesh.FlagResponse, 99, nil)...)                                               // stray answer: dropped
	in = append(in, frame(t, mesh.KindRequest, 0, 5, &mesh.Request{Service: "svc", Headers: []mesh.HeaderField{{Key: "k", Value: string(make([]byte, 100))}}})...)
	in = append(in, 0, 0, 0, 12, 9, byte(mesh.KindRequest), 0, 0, 0, 0, 0, 0, 0, 0, 0, 6) // version 9: framing lost
	go func() { _, _ = client.Write(in) }()

	m, err := sc.ReadRequest()
	if err != nil || m.ID != 2 || m.Service != "svc" || m.Path != "M" {
		t.Fatalf("request: %+v, %v", m, err)
	}
	expectRefusal := func(id uint64, code stream.ErrorCode, closes bool) {
		t.Helper()
		m, err := sc.ReadRequest()
		var e *stream.Error
		if m == nil || m.ID != id || !errors.As(err, &e) || e.Code != code || m.Close != closes {
			t.Fatalf("want refusal %v of %d (close %v), got %+v, %v", code, id, closes, m, err)
		}
		if err := sc.WriteError(m, e); err != nil {
			t.Fatal(err)
		}
	}
	expectRefusal(3, stream.ErrBadRequest, false)
	expectRefusal(4, stream.ErrUnsupported, false)
	expectRefusal(5, stream.ErrHeaderTooLarge, false)
	expectRefusal(6, stream.ErrUnsupported, true)
	if m, err := sc.ReadRequest(); m != nil || err == nil {
		t.Fatalf("after a bad header: %+v, %v", m, err)
	}

	// What the client reads: the heartbeat answer, then the four ERRORs.
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	rd := mesh.NewReader(client, 0)
	f, err := rd.ReadFrame()
	if err != nil || f.Kind != mesh.KindHeartbeat || !f.IsResponse() || f.ID != 1 {
		t.Fatalf("heartbeat answer: %+v, %v", f, err)
	}
	for _, want := range []struct {
		id   uint64
		code mesh.Code
	}{{3, mesh.CodeBadFrame}, {4, mesh.CodeUnsupported}, {5, mesh.CodeFrameTooLarge}, {6, mesh.CodeUnsupported}} {
		f, err := rd.ReadFrame()
		var e mesh.Error
		if err != nil || f.Kind != mesh.KindError || f.ID != want.id || e.Decode(f.Payload) != nil || e.Code != want.code {
			t.Fatalf("want ERROR %v for %d, got %+v %v (%v)", want.code, want.id, f, err, e)
		}
	}
}

type rawPayload []byte

func (r rawPayload) AppendTo(b []byte) []byte { return append(b, r...) }

// The client side rewrites the id on the way out and reports the upstream's
// id on the way in; the server side puts the caller's id back.
func TestIDRewriting(t *testing.T) {
	up, upServer := pair(t)
	cc := Codec{}.NewClientConn(up, stream.Limits{})
	req := stream.NewMessage()
	if err := NewRequest(req, "svc", "M", nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	req.ID = 1 // the caller's id
	if err := cc.WriteRequest(777, req); err != nil {
		t.Fatal(err)
	}
	_ = upServer.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := mesh.NewReader(upServer, 0).ReadFrame()
	if err != nil || f.ID != 777 || f.Kind != mesh.KindRequest {
		t.Fatalf("upstream got %+v, %v", f, err)
	}
	// The upstream asks a heartbeat (answered by the codec), then answers.
	go func() {
		_, _ = upServer.Write(frame(t, mesh.KindHeartbeat, 0, 5, nil))
		_, _ = upServer.Write(frame(t, mesh.KindError, mesh.FlagResponse, 777, &mesh.Error{Code: mesh.CodeUnavailable, Message: "down"}))
	}()
	resp, err := cc.ReadResponse()
	if err != nil || resp.ID != 777 || resp.Status != 503 || !resp.Refused {
		t.Fatalf("answer %+v, %v", resp, err)
	}
	if f, err := mesh.NewReader(upServer, 0).ReadFrame(); err != nil || f.Kind != mesh.KindHeartbeat || !f.IsResponse() || f.ID != 5 {
		t.Fatalf("heartbeat answer to the upstream: %+v, %v", f, err)
	}

	down, downServer := pair(t)
	sc := Codec{}.NewServerConn(downServer, bufio.NewReader(downServer), stream.Limits{})
	if err := sc.WriteResponse(req, resp); err != nil {
		t.Fatal(err)
	}
	_ = down.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err = mesh.NewReader(down, 0).ReadFrame()
	if err != nil || f.ID != 1 || f.Kind != mesh.KindError {
		t.Fatalf("caller got %+v, %v", f, err)
	}
	if _, err := Answer(resp); err == nil {
		t.Fatal("Answer of an ERROR returned no error")
	}
	_ = cc.Close()
	if err := cc.WriteRequest(778, req); err == nil {
		t.Fatal("write after Close succeeded")
	}
	up.Close()
	if _, err := cc.ReadResponse(); err == nil || err == io.ErrUnexpectedEOF {
		if err == nil {
			t.Fatal("read after close succeeded")
		}
	}
}

func TestCodeMapping(t *testing.T) {
	for c := stream.ErrBadRequest; c <= stream.ErrInternal; c++ {
		mc := CodeOf(c)
		if mc == 0 || StatusOf(mc) != c.Status() && !(c == stream.ErrHeaderTooLarge && StatusOf(mc) == 413) {
			t.Errorf("%v → %v → status %d, want %d", c, mc, StatusOf(mc), c.Status())
		}
	}
	if StatusOf(9999) != 500 {
		t.Error("an app's own code is not 500")
	}
}
