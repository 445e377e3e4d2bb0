// Package rpctest holds small real servers and a client for exercising the
// RPC proxy in tests, demos and the benchmark: a mesh RPC server (echo by
// default) and an HTTP/1.1 echo server on real sockets, and a mesh RPC
// client. Nothing here is a mock: they speak the wire protocols over TCP.
package rpctest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/core"
)

// MeshHandler answers one call: a response, or an error sent as an ERROR
// frame. ctx ends when the server closes.
type MeshHandler func(ctx context.Context, req *mesh.Request) (*mesh.Response, *mesh.Error)

// Echo answers every call with its own headers and body.
func Echo(_ context.Context, req *mesh.Request) (*mesh.Response, *mesh.Error) {
	return &mesh.Response{Headers: req.Headers, Body: req.Body}, nil
}

// MeshServer is a mesh RPC server: it answers REQUEST frames with its
// handler (each on its own goroutine) and HEARTBEAT frames at once.
type MeshServer struct {
	ln       net.Listener
	handler  MeshHandler
	ctx      context.Context
	cancel   context.CancelFunc
	routines core.Routines
	accepted atomic.Int64
	calls    atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// Heartbeats, when false, makes the server ignore HEARTBEAT requests
	// (an app that is up but stuck).
	heartbeats atomic.Bool
}

// StartMesh serves h on addr ("" is 127.0.0.1:0).
func StartMesh(addr string, h MeshHandler) (*MeshServer, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if h == nil {
		h = Echo
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &MeshServer{ln: ln, handler: h, conns: make(map[net.Conn]struct{})}
	s.heartbeats.Store(true)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.routines.Go(s.accept)
	return s, nil
}

// Addr returns the listening address.
func (s *MeshServer) Addr() string { return s.ln.Addr().String() }

// Accepted returns how many connections the server accepted.
func (s *MeshServer) Accepted() int64 { return s.accepted.Load() }

// Calls returns how many REQUESTs the server received.
func (s *MeshServer) Calls() int64 { return s.calls.Load() }

// AnswerHeartbeats switches heartbeat answers on or off.
func (s *MeshServer) AnswerHeartbeats(on bool) { s.heartbeats.Store(on) }

// StopAccepting closes the listener: new connections are refused, open
// ones are served on.
func (s *MeshServer) StopAccepting() { _ = s.ln.Close() }

// Close stops the server, closes every connection (calls in progress are
// never answered) and waits for its goroutines.
func (s *MeshServer) Close() {
	s.cancel()
	s.routines.Stop()
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.routines.Wait()
}

func (s *MeshServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		if !s.routines.Go(func() { s.serve(c) }) {
			_ = c.Close()
			return
		}
	}
}

func (s *MeshServer) serve(c net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = c.Close()
	}()
	rd := mesh.NewReader(c, 0)
	w := core.NewWriter(c, 0)
	var calls sync.WaitGroup
	defer calls.Wait()
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			return
		}
		switch {
		case f.IsResponse():
		case f.Kind == mesh.KindHeartbeat:
			if s.heartbeats.Load() {
				_ = send(w, mesh.KindHeartbeat, f.ID, nil)
			}
		case f.Kind == mesh.KindRequest:
			s.calls.Add(1)
			var req mesh.Request
			if err := req.Decode(f.Payload); err != nil {
				_ = send(w, mesh.KindError, f.ID, &mesh.Error{Code: mesh.CodeBadFrame, Message: err.Error()})
				continue
			}
			calls.Add(1)
			go func() { // owned by this connection: waited for above
				defer calls.Done()
				resp, e := s.handler(s.ctx, &req)
				if s.ctx.Err() != nil {
					return
				}
				if e != nil {
					_ = send(w, mesh.KindError, f.ID, e)
					return
				}
				_ = send(w, mesh.KindResponse, f.ID, resp)
			}()
		default:
			_ = send(w, mesh.KindError, f.ID, &mesh.Error{Code: mesh.CodeUnsupported, Message: f.Kind.String()})
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func send(w *core.Writer, kind mesh.Kind, id uint64, p mesh.Encoder) error {
	bp := bufPool.Get().(*[]byte)
	b, err := mesh.AppendFrame((*bp)[:0], 0, kind, mesh.FlagResponse, id, p)
	if err == nil {
		err = w.Write(b)
	}
	*bp = b[:0]
	bufPool.Put(bp)
	return err
}

// MeshClient is a mesh RPC client on one connection: any number of calls
// at once, matched by id.
type MeshClient struct {
	conn    net.Conn
	w       *core.Writer
	ids     core.IDs
	pending *core.Pending[mesh.Frame]
	done    chan struct{}
}

// ErrClosed is returned by calls on a client whose connection is gone.
var ErrClosed = errors.New("rpctest: connection closed")

// DialMesh connects to a mesh RPC server or a sidecar listener.
func DialMesh(ctx context.Context, addr string) (*MeshClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &MeshClient{conn: conn, w: core.NewWriter(conn, 0), pending: core.NewPending[mesh.Frame](), done: make(chan struct{})}
	go c.readLoop() // owned by the client: ends when the connection closes
	return c, nil
}

func (c *MeshClient) readLoop() {
	defer close(c.done)
	rd := mesh.NewReader(c.conn, 0)
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			c.pending.FailAll(fmt.Errorf("%w: %w", ErrClosed, err))
			return
		}
		if f.IsResponse() {
			c.pending.Resolve(f.ID, core.Result[mesh.Frame]{Val: f})
		}
	}
}

// Call calls service.method. An ERROR answer is returned as a *mesh.Error.
func (c *MeshClient) Call(ctx context.Context, service, method string, headers []mesh.HeaderField, body []byte) (*mesh.Response, error) {
	id := c.ids.Next()
	ch := c.pending.Add(id)
	if err := send0(c.w, mesh.KindRequest, id, &mesh.Request{Service: service, Method: method, Headers: headers, Body: body}); err != nil {
		c.pending.Remove(id)
		return nil, err
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		switch r.Val.Kind {
		case mesh.KindResponse:
			var resp mesh.Response
			if err := resp.Decode(r.Val.Payload); err != nil {
				return nil, err
			}
			return &resp, nil
		case mesh.KindError:
			var e mesh.Error
			if err := e.Decode(r.Val.Payload); err != nil {
				return nil, err
			}
			return nil, &e
		}
		return nil, fmt.Errorf("rpctest: unexpected answer %s", r.Val.Kind)
	case <-ctx.Done():
		c.pending.Remove(id)
		return nil, ctx.Err()
	}
}

func send0(w *core.Writer, kind mesh.Kind, id uint64, p mesh.Encoder) error {
	bp := bufPool.Get().(*[]byte)
	b, err := mesh.AppendFrame((*bp)[:0], 0, kind, 0, id, p)
	if err == nil {
		err = w.Write(b)
	}
	*bp = b[:0]
	bufPool.Put(bp)
	return err
}

// Close closes the connection and waits for the read loop.
func (c *MeshClient) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// HTTPServer is a net/http server on a real socket.
type HTTPServer struct {
	ln  net.Listener
	srv *http.Server
	wg  sync.WaitGroup
}

// EchoHTTP answers every request with its body, and says what it saw in
// X-Echo-Method, X-Echo-Host and X-Echo-Path.
var EchoHTTP http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h := w.Header()
	h.Set("X-Echo-Method", r.Method)
	h.Set("X-Echo-Host", r.Host)
	h.Set("X-Echo-Path", r.URL.Path)
	if ct := r.Header.Get("Content-Type"); ct != "" {
		h.Set("Content-Type", ct)
	}
	_, _ = w.Write(body)
})

// StartHTTP serves h on addr ("" is 127.0.0.1:0; nil h is EchoHTTP).
func StartHTTP(addr string, h http.Handler) (*HTTPServer, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if h == nil {
		h = EchoHTTP
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &HTTPServer{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	s.wg.Add(1)
	go func() { // owned by the server: waited for in Close
		defer s.wg.Done()
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// Addr returns the listening address.
func (s *HTTPServer) Addr() string { return s.ln.Addr().String() }

// Close closes the listener and every connection at once.
func (s *HTTPServer) Close() {
	_ = s.srv.Close()
	s.wg.Wait()
}
