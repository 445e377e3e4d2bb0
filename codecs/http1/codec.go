// Package http1 is the HTTP/1.1 stream.Codec of the RPC proxy, so that curl,
// wrk and any HTTP client work through the sidecar unchanged.
//
// What it does:
//
//   - Server side: reads requests (pipelined requests are fine), gives
//     them sequential ids, routes them by Host (lower case, port dropped)
//     and path (query dropped), and writes the answers in request order,
//     holding an answer that is ready before an earlier one. It answers
//     "Expect: 100-continue" itself. A request the codec refuses gets a
//     JSON error and the connection is closed: 400 malformed, 413 body
//     over the limit, 431 headers over the limit, 501 an unsupported
//     transfer coding or CONNECT, 505 an HTTP version other than 1.0 and
//     1.1, 417 an expectation other than 100-continue. Oversize heads and
//     bodies are refused before the codec allocates for them.
//   - Client side: one request at a time per connection (not
//     Multiplexed: the stream layer keeps a pool of keep-alive
//     connections), answers matched to requests in order.
//   - Forwarding: bodies are read whole (de-chunked) and sent on with a
//     Content-Length; hop-by-hop headers (Connection and the headers it
//     names, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
//     Upgrade) and Expect are dropped; every other header is passed as
//     is, in order. Requests go upstream as HTTP/1.1 with keep-alive; an
//     HTTP/1.0 request without Host gets the upstream's address as Host.
//   - Errors the proxy makes (stream.Error) are answered with their status
//     and a JSON body {"error": CODE, "message": text}, plus a header
//     X-Mesh-Error: CODE, by which an egress sidecar tells an ingress
//     sidecar's refusal (503 UNAVAILABLE: not forwarded, safe to send to
//     another host) from the app's own 503.
//
// Not supported: protocol upgrades (WebSocket), CONNECT, trailers (read and
// dropped), streaming bodies (a body is read whole before it is
// forwarded, so a body is bounded by MaxBodyBytes).
package http1

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"

	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

// Name is the codec's name in configuration.
const Name = "http1"

// Codec is the HTTP/1.1 codec. The zero value is ready.
type Codec struct{}

var _ stream.Codec = Codec{}

func (Codec) Name() string { return Name }

// Match: an HTTP/1.1 request starts with its method, upper-case ASCII.
func (Codec) Match(prefix []byte) bool {
	return len(prefix) > 0 && 'A' <= prefix[0] && prefix[0] <= 'Z'
}

func (Codec) Multiplexed() bool { return false }

func (Codec) NewServerConn(conn net.Conn, r *bufio.Reader, lim stream.Limits) stream.ServerConn {
	return &serverConn{
		p:       parser{br: r, lim: lim.WithDefaults()},
		w:       core.NewWriter(conn, 0),
		intern:  make(map[string]string),
		nextOut: 1,
	}
}

func (Codec) NewClientConn(conn net.Conn, lim stream.Limits) stream.ClientConn {
	return &clientConn{
		p:    parser{br: bufio.NewReaderSize(conn, 16<<10), lim: lim.WithDefaults()},
		w:    core.NewWriter(conn, 0),
		host: conn.RemoteAddr().String(),
	}
}

// Heartbeat makes "GET path" (path "" is "/").
func (Codec) Heartbeat(m *stream.Message, path string) {
	if path == "" {
		path = "/"
	}
	m.Raw = append(m.Raw[:0], "GET "...)
	m.Raw = append(m.Raw, path...)
	m.Raw = append(m.Raw, " HTTP/1.1\r\nHost: localhost\r\nUser-Agent: msgmesh-heartbeat\r\n\r\n"...)
	m.Split, m.Size, m.Path, m.Flags = len(m.Raw), len(m.Raw), path, 0
}

// Header returns the first header named key, compared case-insensitively.
func (Codec) Header(m *stream.Message, key string) (string, bool) {
	ls := lines{b: m.Raw[:m.Split]}
	ls.next()
	for {
		line, ok := ls.next()
		if !ok {
			return "", false
		}
		name, value, err := header(line)
		if err == nil && bytes.EqualFold(name, []byte(key)) {
			return string(value), true
		}
	}
}

// readRequest reads one request into m. continue100 is called before the
// body is read when the request expects 100-continue.
func (p *parser) readRequest(m *stream.Message, intern map[string]string, continue100 func()) error {
	raw, err := p.readHead(m.Raw[:0])
	m.Raw = raw
	if err != nil {
		return err
	}
	m.Split = len(raw)
	ls := lines{b: raw}
	reqLine, _ := ls.next()
	method, target, http10, cerr := parseRequestLine(reqLine)
	if cerr != nil {
		return cerr
	}
	f := framing{contentLength: -1}
	var host []byte
	hostSeen, expect := false, false
	for {
		line, ok := ls.next()
		if !ok {
			break
		}
		name, value, cerr := header(line)
		if cerr != nil {
			return cerr
		}
		if cerr := f.header(name, value); cerr != nil {
			return cerr
		}
		switch {
		case equalFold(name, "host"):
			if hostSeen {
				return badRequest("more than one Host header")
			}
			host, hostSeen = value, true
		case equalFold(name, "expect"):
			if !equalFold(value, "100-continue") {
				return &stream.Error{Code: stream.ErrUnsupported, Status: 417, Msg: "unsupported expectation " + strconv.Quote(string(clip(value)))}
			}
			expect = true
		}
	}
	if f.chunked && f.contentLength >= 0 {
		return badRequest("both Content-Length and Transfer-Encoding")
	}
	if !http10 && !hostSeen {
		return badRequest("HTTP/1.1 request without a Host header")
	}
	if string(method) == "CONNECT" {
		return stream.Errorf(stream.ErrUnsupported, "CONNECT is not supported")
	}
	hostHeader := hostSeen
	path := target
	if target[0] != '/' && string(target) != "*" {
		// absolute-form: scheme "://" authority [path]
		i := bytes.Index(target, []byte("://"))
		if i <= 0 {
			return badRequest("invalid request target %q", clip(target))
		}
		rest := target[i+3:]
		if j := bytes.IndexByte(rest, '/'); j >= 0 {
			host, path = rest[:j], rest[j:]
		} else {
			host, path = rest, []byte("/")
		}
	}
	if q := bytes.IndexByte(path, '?'); q >= 0 {
		path = path[:q]
	}
	m.Service = hostKey(intern, host)
	m.Path = stream.Intern(intern, path)
	m.Flags = 0
	if string(method) == "HEAD" {
		m.Flags |= flagHead
	}
	if http10 {
		m.Flags |= flagHTTP10
		if f.keepAlive {
			m.Flags |= flagKeepAlive
		}
	}
	if f.connTokens {
		m.Flags |= flagConnTokens
	}
	if f.chunked || f.contentLength >= 0 {
		m.Flags |= flagHasBody
	}
	if !hostHeader {
		m.Flags |= flagNoHost // the upstream form gets one
	}
	m.Close = f.close || http10 && !f.keepAlive
	if expect && continue100 != nil && (f.chunked || f.contentLength > 0) && f.contentLength <= int64(p.lim.MaxBodyBytes) {
		continue100()
	}
	if m.Raw, err = p.readBody(m.Raw, &f, false); err != nil {
		return err
	}
	m.Size = len(m.Raw)
	return nil
}

func parseRequestLine(line []byte) (method, target []byte, http10 bool, err *stream.Error) {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return nil, nil, false, badRequest("malformed request line %q", clip(line))
	}
	method = line[:sp1]
	for _, c := range method {
		if !isTchar(c) {
			return nil, nil, false, badRequest("invalid method %q", clip(method))
		}
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return nil, nil, false, badRequest("malformed request line %q", clip(line))
	}
	target = rest[:sp2]
	for _, c := range target {
		if c <= ' ' || c == 0x7f {
			return nil, nil, false, badRequest("invalid character %#x in the request target", c)
		}
	}
	switch version := rest[sp2+1:]; {
	case string(version) == "HTTP/1.1":
	case string(version) == "HTTP/1.0":
		http10 = true
	case len(version) == 8 && bytes.HasPrefix(version, []byte("HTTP/")) && isDigit(version[5]) && version[6] == '.' && isDigit(version[7]):
		return nil, nil, false, &stream.Error{Code: stream.ErrUnsupported, Status: 505, Msg: "HTTP version " + string(version) + " is not supported (1.0 and 1.1 are)"}
	default:
		return nil, nil, false, badRequest("malformed HTTP version %q", clip(version))
	}
	return method, target, http10, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// hostKey is the routing form of a Host value: lower case, without port.
func hostKey(intern map[string]string, h []byte) string {
	if len(h) > 0 && h[0] == '[' {
		if i := bytes.IndexByte(h, ']'); i > 0 {
			h = h[:i+1]
		}
	} else if i := bytes.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	upper := false
	for _, c := range h {
		if 'A' <= c && c <= 'Z' {
			upper = true
			break
		}
	}
	if !upper {
		return stream.Intern(intern, h)
	}
	var buf [128]byte
	low := buf[:0]
	if len(h) > len(buf) {
		low = make([]byte, 0, len(h))
	}
	for _, c := range h {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		low = append(low, c)
	}
	return stream.Intern(intern, low)
}

// readResponse reads one answer into m; head says its request was HEAD.
// It skips interim (1xx) answers. untilEOF bodies set m.Close.
func (p *parser) readResponseHead(m *stream.Message) (status int, f framing, err error) {
	for {
		raw, err := p.readHead(m.Raw[:0])
		m.Raw = raw
		if err != nil {
			return 0, f, err
		}
		ls := lines{b: raw}
		statusLine, _ := ls.next()
		status, http10, cerr := parseStatusLine(statusLine)
		if cerr != nil {
			return 0, f, cerr
		}
		if status == 101 {
			return 0, f, errors.New("http1: upstream switched protocols, which the proxy does not support")
		}
		if status < 200 {
			continue // interim answer
		}
		f = framing{contentLength: -1}
		for {
			line, ok := ls.next()
			if !ok {
				break
			}
			name, value, cerr := header(line)
			if cerr != nil {
				return 0, f, cerr
			}
			if equalFold(name, "content-length") && f.chunked {
				continue // Transfer-Encoding wins (RFC 9112 §6.3)
			}
			if cerr := f.header(name, value); cerr != nil {
				return 0, f, cerr
			}
			if equalFold(name, "transfer-encoding") {
				f.contentLength = -1
			}
			if equalFold(name, "x-mesh-error") && equalFold(value, "unavailable") {
				f.refused = true
			}
		}
		if http10 && !f.keepAlive {
			f.close = true
		}
		m.Split = len(raw)
		return status, f, nil
	}
}

func parseStatusLine(line []byte) (status int, http10 bool, err *stream.Error) {
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' ||
		len(line) > 12 && line[12] != ' ' {
		return 0, false, badRequest("malformed status line %q", clip(line))
	}
	switch line[7] {
	case '0':
		http10 = true
	case '1':
	default:
		return 0, false, badRequest("malformed status line %q", clip(line))
	}
	for _, c := range line[9:12] {
		if !isDigit(c) {
			return 0, false, badRequest("malformed status code in %q", clip(line))
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 {
		return 0, false, badRequest("malformed status code in %q", clip(line))
	}
	return status, http10, nil
}

// bufs holds encode buffers for the serialized messages.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func putBuf(bp *[]byte) {
	if cap(*bp) > 256<<10 {
		return
	}
	*bp = (*bp)[:0]
	bufs.Put(bp)
}

type serverConn struct {
	p      parser            // read loop only
	intern map[string]string // read loop only
	nextID uint64            // read loop only
	done   bool              // read loop only: no more requests on this connection

	w       *core.Writer
	mu      sync.Mutex         // guards nextOut and held, and orders writes
	nextOut uint64             // the id whose answer is written next
	held    map[uint64]*[]byte // answers ready before an earlier one
}

func (s *serverConn) ReadRequest() (*stream.Message, error) {
	if s.done {
		return nil, io.EOF
	}
	m := stream.NewMessage()
	s.nextID++
	id := s.nextID
	err := s.p.readRequest(m, s.intern, func() { s.writeContinue(id) })
	m.ID = id
	if err != nil {
		s.done = true
		var ce *stream.Error
		if errors.As(err, &ce) {
			m.Close = true
			return m, ce
		}
		m.Release()
		return nil, err
	}
	if m.Close {
		s.done = true
	}
	return m, nil
}

// writeContinue sends "100 Continue" for request id, unless earlier
// answers are still due (then the client sends its body after its own
// timeout, as RFC 9110 §10.1.1 lets it).
func (s *serverConn) writeContinue(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nextOut == id {
		_ = s.w.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
	}
}

func (s *serverConn) WriteResponse(req, resp *stream.Message) error {
	bp := bufs.Get().(*[]byte)
	*bp = appendResponse((*bp)[:0], req, resp)
	return s.emit(req.ID, bp)
}

func (s *serverConn) WriteError(req *stream.Message, e *stream.Error) error {
	bp := bufs.Get().(*[]byte)
	*bp = appendError((*bp)[:0], req, e)
	return s.emit(req.ID, bp)
}

// emit writes the answer to request id in order: now if every earlier
// answer was written, else when the last of them is.
func (s *serverConn) emit(id uint64, bp *[]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id != s.nextOut {
		if s.held == nil {
			s.held = make(map[uint64]*[]byte)
		}
		s.held[id] = bp
		return nil
	}
	err := s.w.Write(*bp)
	putBuf(bp)
	s.nextOut++
	for {
		bp, ok := s.held[s.nextOut]
		if !ok {
			return err
		}
		delete(s.held, s.nextOut)
		if err == nil {
			err = s.w.Write(*bp)
		}
		putBuf(bp)
		s.nextOut++
	}
}

func (s *serverConn) Close() error { return s.w.Close() }

type clientConn struct {
	p    parser // read loop only
	w    *core.Writer
	host string // Host for requests that came without one

	mu sync.Mutex
	q  []outReq // requests written and not answered, oldest first
}

type outReq struct {
	id   uint64
	head bool
}

func (c *clientConn) WriteRequest(id uint64, req *stream.Message) error {
	bp := bufs.Get().(*[]byte)
	*bp = appendRequest((*bp)[:0], req, c.host)
	c.mu.Lock()
	c.q = append(c.q, outReq{id: id, head: req.Flags&flagHead != 0})
	c.mu.Unlock()
	err := c.w.Write(*bp)
	putBuf(bp)
	return err
}

func (c *clientConn) ReadResponse() (*stream.Message, error) {
	m := stream.NewMessage()
	status, f, err := c.p.readResponseHead(m)
	if err != nil {
		m.Release()
		return nil, err
	}
	c.mu.Lock()
	if len(c.q) == 0 {
		c.mu.Unlock()
		m.Release()
		return nil, errUnsolicited
	}
	req := c.q[0]
	c.q = append(c.q[:0], c.q[1:]...)
	c.mu.Unlock()
	noBody := req.head || status == 204 || status == 304
	if noBody {
		m.Flags |= flagNoBody
	} else {
		untilEOF := !f.chunked && f.contentLength < 0
		if m.Raw, err = c.p.readBody(m.Raw, &f, true); err != nil {
			m.Release()
			return nil, err
		}
		if untilEOF {
			f.close = true
		}
	}
	if f.connTokens {
		m.Flags |= flagConnTokens
	}
	m.ID, m.Status, m.Size, m.Close = req.id, status, len(m.Raw), f.close
	m.Refused = status == 503 && f.refused
	return m, nil
}

func (c *clientConn) Close() error { return c.w.Close() }

// appendRequest writes req as it goes upstream.
func appendRequest(dst []byte, req *stream.Message, hostFallback string) []byte {
	head, body := req.Raw[:req.Split], req.Raw[req.Split:]
	ls := lines{b: head}
	reqLine, _ := ls.next()
	sp := bytes.LastIndexByte(reqLine, ' ')
	dst = append(dst, reqLine[:sp+1]...)
	dst = append(dst, "HTTP/1.1\r\n"...)
	dst = appendHeaders(dst, &ls, head, req.Flags, false)
	if req.Flags&flagNoHost != 0 {
		dst = append(dst, "Host: "...)
		dst = append(dst, hostFallback...)
		dst = append(dst, "\r\n"...)
	}
	if len(body) > 0 || req.Flags&flagHasBody != 0 {
		dst = appendContentLength(dst, len(body))
	}
	dst = append(dst, "\r\n"...)
	return append(dst, body...)
}

// appendResponse writes resp as the answer to req on the caller's
// connection.
func appendResponse(dst []byte, req, resp *stream.Message) []byte {
	head, body := resp.Raw[:resp.Split], resp.Raw[resp.Split:]
	ls := lines{b: head}
	statusLine, _ := ls.next()
	dst = append(dst, "HTTP/1.1"...)
	dst = append(dst, statusLine[8:]...)
	dst = append(dst, "\r\n"...)
	noBody := resp.Flags&flagNoBody != 0
	dst = appendHeaders(dst, &ls, head, resp.Flags, noBody)
	if !noBody {
		dst = appendContentLength(dst, len(body))
	}
	dst = appendConnection(dst, req)
	dst = append(dst, "\r\n"...)
	if noBody {
		return dst
	}
	return append(dst, body...)
}

// appendHeaders copies the header lines left in ls, dropping hop-by-hop
// ones; keepLength keeps Content-Length (answers without a body).
func appendHeaders(dst []byte, ls *lines, head []byte, flags uint32, keepLength bool) []byte {
	for {
		line, ok := ls.next()
		if !ok {
			return dst
		}
		name := line
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			name = line[:i]
		}
		if hopByHop(name) && !(keepLength && equalFold(name, "content-length")) {
			continue
		}
		if flags&flagConnTokens != 0 && namedInConnection(head, name) {
			continue
		}
		dst = append(dst, line...)
		dst = append(dst, "\r\n"...)
	}
}

func appendContentLength(dst []byte, n int) []byte {
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, "\r\n"...)
}

// appendConnection says whether the caller's connection stays open.
func appendConnection(dst []byte, req *stream.Message) []byte {
	switch {
	case req.Close:
		return append(dst, "Connection: close\r\n"...)
	case req.Flags&flagHTTP10 != 0:
		return append(dst, "Connection: keep-alive\r\n"...)
	}
	return dst
}

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// appendError writes the answer for an error the proxy made.
func appendError(dst []byte, req *stream.Message, e *stream.Error) []byte {
	status := e.HTTPStatus()
	body, _ := json.Marshal(errorBody{Error: e.Code.String(), Message: e.Msg})
	body = append(body, '\n')
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, http.StatusText(status)...)
	dst = append(dst, "\r\nContent-Type: application/json\r\nX-Mesh-Error: "...)
	dst = append(dst, e.Code.String()...)
	dst = append(dst, "\r\n"...)
	dst = appendContentLength(dst, len(body))
	dst = appendConnection(dst, req)
	dst = append(dst, "\r\n"...)
	if req.Flags&flagHead != 0 {
		return dst
	}
	return append(dst, body...)
}
