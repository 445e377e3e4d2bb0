// Package meshrpc is the stream.Codec of the mesh protocol's RPC frames
// (docs/protocol.md §5.13, §5.14, §8): REQUEST answered by RESPONSE or
// ERROR, on connections of their own.
//
// It is the multiplexed codec of the RPC proxy. A request is read into a
// pooled buffer whole (header and payload) and forwarded as those bytes;
// only the 8-byte frame id changes on the way (mesh.SetFrameID), to a
// fresh id of the upstream connection, and back to the caller's id on the
// answer. The payload is checked (mesh.RequestView) but never copied or
// re-encoded. The wire codec itself is package mesh; this package only
// adapts it to the stream layer (rpcproxy/stream).
//
// Its frames are written by the mesh connection engine's Writer
// (meshconn.Writer: pooled encodes, group commit). The rest of the engine
// (meshconn.Conn: its read loop, ids and answer matching) is not used: the
// stream layer owns those here, pulling whole frames into pooled buffers
// (ReadRequest, ReadResponse) and rewriting ids on shared upstream
// connections, so that RPC frames are forwarded as bytes, never decoded.
package meshrpc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/codecs/mesh/meshconn"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

// Name is the codec's name in configuration.
const Name = "mesh"

// Codec is the mesh RPC codec. The zero value is ready.
type Codec struct{}

var (
	_ stream.Codec          = Codec{}
	_ stream.ResponseQueuer = (*serverConn)(nil)
	_ stream.RequestQueuer  = (*clientConn)(nil)
)

func (Codec) Name() string { return Name }

// Match: a mesh frame starts with the high byte of its length, which is 0
// for any frame below 16 MiB (the limit is 4 MiB by default).
func (Codec) Match(prefix []byte) bool { return len(prefix) > 0 && prefix[0] == 0 }

func (Codec) Multiplexed() bool { return true }

func (Codec) NewServerConn(conn net.Conn, r *bufio.Reader, lim stream.Limits) stream.ServerConn {
	lim = lim.WithDefaults()
	return &serverConn{
		rd:     mesh.NewReader(r, maxFrame(lim)),
		w:      meshconn.NewWriter(conn, 0, 0),
		lim:    lim,
		intern: make(map[string]string),
	}
}

func (Codec) NewClientConn(conn net.Conn, lim stream.Limits) stream.ClientConn {
	lim = lim.WithDefaults()
	return &clientConn{rd: mesh.NewReader(conn, maxFrame(lim)), w: meshconn.NewWriter(conn, 0, 0)}
}

// Heartbeat makes a HEARTBEAT request; the path is not used.
func (Codec) Heartbeat(m *stream.Message, _ string) {
	m.Raw, _ = mesh.AppendFrame(m.Raw[:0], 0, mesh.KindHeartbeat, 0, 0, nil)
	m.Size = len(m.Raw)
}

// Header looks key up in a REQUEST's headers (compared as bytes).
func (Codec) Header(m *stream.Message, key string) (string, bool) {
	f, _, err := mesh.DecodeFrame(m.Raw, len(m.Raw))
	if err != nil || f.Kind != mesh.KindRequest {
		return "", false
	}
	var v mesh.RequestView
	if v.Parse(f.Payload) != nil {
		return "", false
	}
	return v.Header(key)
}

// maxFrame is the frame limit: the routing fields and headers plus a body.
func maxFrame(lim stream.Limits) int { return lim.MaxHeaderBytes + lim.MaxBodyBytes }

var errBroken = errors.New("meshrpc: stream broken by a bad frame header")

type serverConn struct {
	rd     *mesh.Reader
	w      *meshconn.Writer
	lim    stream.Limits
	intern map[string]string // read loop only
	broken bool              // read loop only
}

func (s *serverConn) ReadRequest() (*stream.Message, error) {
	if s.broken {
		return nil, errBroken
	}
	for {
		m := stream.NewMessage()
		f, buf, err := s.rd.ReadFrameInto(m.Raw)
		m.Raw = buf
		if err != nil {
			if ce := headerError(err); ce != nil {
				// Framing is lost: answer for the id the header named,
				// then the connection ends (§2.3).
				s.broken = true
				m.ID, m.Close = f.ID, true
				return m, ce
			}
			m.Release()
			return nil, err
		}
		m.ID, m.Size = f.ID, len(buf)
		if f.IsResponse() {
			// This side sends no requests, so no answer is expected; drop
			// it (§4: an answer matching no request is dropped).
			m.Release()
			continue
		}
		switch f.Kind {
		case mesh.KindRequest:
			var v mesh.RequestView
			if err := v.Parse(f.Payload); err != nil {
				return m, &stream.Error{Code: stream.ErrBadRequest, Msg: err.Error(), Err: err}
			}
			if meta := len(f.Payload) - len(v.Body); meta > s.lim.MaxHeaderBytes {
				return m, stream.Errorf(stream.ErrHeaderTooLarge, "service, method and headers take %d bytes, the limit is %d", meta, s.lim.MaxHeaderBytes)
			}
			m.Service = stream.Intern(s.intern, v.Service)
			m.Path = stream.Intern(s.intern, v.Method)
			return m, nil
		case mesh.KindHeartbeat:
			if len(f.Payload) != 0 {
				return m, stream.Errorf(stream.ErrBadRequest, "HEARTBEAT has an empty payload")
			}
			err := s.w.Answer(mesh.KindHeartbeat, f.ID, nil)
			m.Release()
			if err != nil {
				return nil, err
			}
		default:
			return m, stream.Errorf(stream.ErrUnsupported, "RPC connections carry REQUEST and HEARTBEAT requests, not %s", f.Kind)
		}
	}
}

// headerError maps a frame header error to the proxy error answering it,
// or nil for stream errors (EOF, a broken connection).
func headerError(err error) *stream.Error {
	c, ok := mesh.ReadErrorCode(err)
	if !ok {
		return nil
	}
	code := stream.ErrBadRequest
	switch c {
	case mesh.CodeFrameTooLarge:
		code = stream.ErrTooLarge
	case mesh.CodeUnsupported:
		code = stream.ErrUnsupported
	}
	return &stream.Error{Code: code, Msg: err.Error(), Err: err}
}

func (s *serverConn) WriteResponse(req, resp *stream.Message) error {
	if len(resp.Raw) < mesh.HeaderSize {
		return s.WriteError(req, stream.Errorf(stream.ErrInternal, "answer of %d bytes is not a mesh frame", len(resp.Raw)))
	}
	mesh.SetFrameID(resp.Raw, req.ID)
	return s.w.WriteFrame(resp.Raw)
}

// QueueResponse is WriteResponse without waiting (stream.Queuer).
func (s *serverConn) QueueResponse(req, resp *stream.Message) (bool, error) {
	if len(resp.Raw) < mesh.HeaderSize {
		return false, nil // WriteResponse answers it with an error
	}
	mesh.SetFrameID(resp.Raw, req.ID)
	return s.w.QueueFrame(resp.Raw)
}

func (s *serverConn) WriteError(req *stream.Message, e *stream.Error) error {
	return s.w.Error(req.ID, CodeOf(e.Code), e.Msg)
}

func (s *serverConn) Close() error { return s.w.Close() }

type clientConn struct {
	rd *mesh.Reader // read loop only
	w  *meshconn.Writer
}

func (c *clientConn) WriteRequest(id uint64, req *stream.Message) error {
	if len(req.Raw) < mesh.HeaderSize {
		return fmt.Errorf("meshrpc: request of %d bytes is not a mesh frame", len(req.Raw))
	}
	mesh.SetFrameID(req.Raw, id)
	return c.w.WriteFrame(req.Raw)
}

// QueueRequest is WriteRequest without waiting (stream.Queuer).
func (c *clientConn) QueueRequest(id uint64, req *stream.Message) (bool, error) {
	if len(req.Raw) < mesh.HeaderSize {
		return false, fmt.Errorf("meshrpc: request of %d bytes is not a mesh frame", len(req.Raw))
	}
	mesh.SetFrameID(req.Raw, id)
	return c.w.QueueFrame(req.Raw)
}

func (c *clientConn) ReadResponse() (*stream.Message, error) {
	for {
		m := stream.NewMessage()
		f, buf, err := c.rd.ReadFrameInto(m.Raw)
		m.Raw = buf
		if err != nil {
			m.Release()
			if err == io.EOF {
				return nil, io.EOF
			}
			return nil, err
		}
		if !f.IsResponse() {
			// The upstream asks something of us: answer heartbeats,
			// refuse the rest (§8).
			m.Release()
			var err error
			if f.Kind == mesh.KindHeartbeat {
				err = c.w.Answer(mesh.KindHeartbeat, f.ID, nil)
			} else {
				err = c.w.Error(f.ID, mesh.CodeUnsupported, fmt.Sprintf("a sidecar does not serve %s requests on an RPC connection", f.Kind))
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		m.ID, m.Size = f.ID, len(buf)
		switch f.Kind {
		case mesh.KindResponse, mesh.KindHeartbeat, mesh.KindOK:
			m.Status = 200
		case mesh.KindError:
			code, _ := mesh.PeekErrorCode(f.Payload)
			m.Status = StatusOf(code)
			m.Refused = code == mesh.CodeUnavailable
		default:
			m.Status = 502 // an answer kind RPC does not use; forwarded as is
		}
		return m, nil
	}
}

func (c *clientConn) Close() error { return c.w.Close() }

// CodeOf maps a proxy error code onto the ERROR code of the wire.
func CodeOf(c stream.ErrorCode) mesh.Code {
	switch c {
	case stream.ErrBadRequest:
		return mesh.CodeBadFrame
	case stream.ErrTooLarge, stream.ErrHeaderTooLarge:
		return mesh.CodeFrameTooLarge
	case stream.ErrUnsupported:
		return mesh.CodeUnsupported
	case stream.ErrNoRoute:
		return mesh.CodeNoRoute
	case stream.ErrNoHealthyHost:
		return mesh.CodeNoHealthyHost
	case stream.ErrUpstreamReset:
		return mesh.CodeUpstreamReset
	case stream.ErrTimeout:
		return mesh.CodeTimeout
	case stream.ErrUnavailable:
		return mesh.CodeUnavailable
	case stream.ErrRateLimited:
		return mesh.CodeRateLimited
	case stream.ErrShuttingDown:
		return mesh.CodeShuttingDown
	}
	return mesh.CodeInternal
}

// StatusOf is the HTTP status matching an ERROR code, for Message.Status
// and metrics. Codes an app server invents (outside the table) are 500.
func StatusOf(c mesh.Code) int {
	switch c {
	case mesh.CodeBadFrame, mesh.CodeInvalid, mesh.CodeSchemaInvalid, mesh.CodeNotDeclared, mesh.CodeUnknownRequest:
		return 400
	case mesh.CodeNotRegistered, mesh.CodeNoRoute:
		return 404
	case mesh.CodeFrameTooLarge, mesh.CodeMessageTooBig:
		return 413
	case mesh.CodeRateLimited:
		return 429
	case mesh.CodeUnsupported:
		return 501
	case mesh.CodeBrokerError, mesh.CodeUpstreamReset:
		return 502
	case mesh.CodeUnavailable, mesh.CodeShuttingDown, mesh.CodeNoHealthyHost:
		return 503
	case mesh.CodeTimeout:
		return 504
	}
	return 500
}
