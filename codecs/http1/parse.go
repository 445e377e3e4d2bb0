package http1

import (
	"bufio"
	"bytes"
	"errors"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
	"io"
	"slices"
)

// Message layout. A message read by this codec keeps, in stream.Message.Raw,
// its head (start line, header lines, the empty line) followed by its body,
// de-chunked; Split is where the body starts. Flags hold what the parser
// learnt from the head that writing the message on needs.
const (
	flagHead       uint32 = 1 << iota // request: HEAD (its answer has no body)
	flagHTTP10                        // request: HTTP/1.0
	flagKeepAlive                     // request: HTTP/1.0 with "Connection: keep-alive"
	flagConnTokens                    // Connection lists header names to drop
	flagHasBody                       // request: sent Content-Length or Transfer-Encoding
	flagNoHost                        // request: has no Host header
	flagNoBody                        // answer: has no body by its status or its request's method
)

// maxChunkLine bounds a chunk-size line (size and extensions).
const maxChunkLine = 4 << 10

// Errors are *stream.Error values (the server answers them with their HTTP
// status and closes the connection), or, for a stream that ends or breaks,
// io.EOF, io.ErrUnexpectedEOF or the connection's error.

func badRequest(format string, args ...any) *stream.Error {
	return stream.Errorf(stream.ErrBadRequest, format, args...)
}

// parser reads messages from one connection. Not safe for concurrent use.
type parser struct {
	br  *bufio.Reader
	lim stream.Limits
}

// readHead appends one message head to dst: the start line, the header
// lines and the empty line ending them. Empty lines before the start line
// are skipped (RFC 9112 §2.2). It refuses a head over MaxHeaderBytes before
// appending the line that would pass it. It returns io.EOF when the stream
// ends before any byte of a head.
func (p *parser) readHead(dst []byte) ([]byte, error) {
	start := len(dst)
	consumed := 0 // bytes of this head read so far, skipped lines included
	lineStart := start
	for {
		frag, err := p.br.ReadSlice('\n')
		consumed += len(frag)
		if consumed > p.lim.MaxHeaderBytes {
			return dst, stream.Errorf(stream.ErrHeaderTooLarge, "request line and headers exceed %d bytes", p.lim.MaxHeaderBytes)
		}
		dst = append(dst, frag...)
		if err == bufio.ErrBufferFull {
			continue // the line goes on
		}
		if err != nil {
			if err == io.EOF {
				if len(dst) == start {
					return dst, io.EOF // closed between messages
				}
				return dst, io.ErrUnexpectedEOF
			}
			return dst, err
		}
		if isEmptyLine(dst[lineStart:]) {
			if lineStart == start {
				dst = dst[:start] // an empty line before the start line
				continue
			}
			return dst, nil
		}
		lineStart = len(dst)
	}
}

func isEmptyLine(l []byte) bool {
	return len(l) == 1 && l[0] == '\n' || len(l) == 2 && l[0] == '\r' && l[1] == '\n'
}

// lines iterates over the lines of a head, without their line ends,
// skipping the final empty line.
type lines struct {
	b []byte
}

func (l *lines) next() ([]byte, bool) {
	i := bytes.IndexByte(l.b, '\n')
	if i < 0 {
		return nil, false
	}
	line := l.b[:i]
	l.b = l.b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) == 0 {
		return nil, false
	}
	return line, true
}

// header splits a header line into name and value, checking both.
func header(line []byte) (name, value []byte, err *stream.Error) {
	if line[0] == ' ' || line[0] == '\t' {
		return nil, nil, badRequest("obsolete header line folding")
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, badRequest("header line without a name and a colon: %q", clip(line))
	}
	name = line[:colon]
	for _, c := range name {
		if !isTchar(c) {
			return nil, nil, badRequest("invalid character %q in header name %q", c, clip(name))
		}
	}
	value = trimOWS(line[colon+1:])
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, nil, badRequest("invalid character %#x in the value of header %q", c, clip(name))
		}
	}
	return name, value, nil
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// clip shortens what an error message quotes from the peer.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func isTchar(c byte) bool {
	return c < 0x80 && tchar[c]
}

var tchar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// framing is what a head says about the body that follows and the
// connection.
type framing struct {
	contentLength int64 // -1 when absent
	chunked       bool
	close         bool // "Connection: close"
	keepAlive     bool // "Connection: keep-alive"
	connTokens    bool // Connection names other headers
	refused       bool // X-Mesh-Error: UNAVAILABLE (answers only)
}

// framingHeader interprets a header that governs framing or the
// connection; other headers are ignored.
func (f *framing) header(name, value []byte) *stream.Error {
	switch {
	case equalFold(name, "content-length"):
		n, err := parseContentLength(value)
		if err != nil {
			return err
		}
		if f.contentLength >= 0 && f.contentLength != n {
			return badRequest("conflicting Content-Length headers")
		}
		f.contentLength = n
	case equalFold(name, "transfer-encoding"):
		if f.chunked {
			return &stream.Error{Code: stream.ErrUnsupported, Msg: "more than one Transfer-Encoding"}
		}
		if !equalFold(value, "chunked") {
			return &stream.Error{Code: stream.ErrUnsupported, Msg: "transfer coding " + string(clip(value)) + " is not supported (only chunked)"}
		}
		f.chunked = true
	case equalFold(name, "connection"):
		for tok := range bytes.SplitSeq(value, []byte(",")) {
			tok = trimOWS(tok)
			switch {
			case equalFold(tok, "close"):
				f.close = true
			case equalFold(tok, "keep-alive"):
				f.keepAlive = true
			case len(tok) > 0:
				f.connTokens = true
			}
		}
	}
	return nil
}

func parseContentLength(v []byte) (int64, *stream.Error) {
	if len(v) == 0 || len(v) > 18 {
		return 0, badRequest("invalid Content-Length %q", clip(v))
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, badRequest("invalid Content-Length %q", clip(v))
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// readBody appends the body that f announces to dst: Content-Length
// bytes, or the chunks of a chunked body (de-chunked; trailers are read
// and dropped), refusing one over MaxBodyBytes before growing dst for it.
// untilEOF reads to the end of the stream when neither is given (answers
// only).
func (p *parser) readBody(dst []byte, f *framing, untilEOF bool) ([]byte, error) {
	max := int64(p.lim.MaxBodyBytes)
	switch {
	case f.chunked:
		return p.readChunked(dst, max)
	case f.contentLength > max:
		return dst, stream.Errorf(stream.ErrTooLarge, "body of %d bytes exceeds the limit of %d bytes", f.contentLength, max)
	case f.contentLength > 0:
		return p.readN(dst, int(f.contentLength))
	case f.contentLength < 0 && untilEOF:
		start := len(dst)
		for {
			if int64(len(dst)-start) > max {
				return dst, stream.Errorf(stream.ErrTooLarge, "body exceeds the limit of %d bytes", max)
			}
			dst = slices.Grow(dst, 4096)
			n, err := p.br.Read(dst[len(dst):cap(dst)])
			dst = dst[:len(dst)+n]
			if err == io.EOF {
				return dst, nil
			}
			if err != nil {
				return dst, err
			}
		}
	}
	return dst, nil
}

func (p *parser) readN(dst []byte, n int) ([]byte, error) {
	dst = slices.Grow(dst, n)
	start := len(dst)
	dst = dst[:start+n]
	if _, err := io.ReadFull(p.br, dst[start:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return dst[:start], err
	}
	return dst, nil
}

func (p *parser) readChunked(dst []byte, max int64) ([]byte, error) {
	start := len(dst)
	for {
		line, err := p.readLine(maxChunkLine)
		if err != nil {
			return dst, err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // chunk extensions are ignored
		}
		line = trimOWS(line)
		if len(line) == 0 || len(line) > 15 {
			return dst, badRequest("invalid chunk size %q", clip(line))
		}
		var size int64
		for _, c := range line {
			d := unhex(c)
			if d < 0 {
				return dst, badRequest("invalid chunk size %q", clip(line))
			}
			size = size<<4 | int64(d)
		}
		if size == 0 {
			break
		}
		if int64(len(dst)-start)+size > max {
			return dst, stream.Errorf(stream.ErrTooLarge, "chunked body exceeds the limit of %d bytes", max)
		}
		if dst, err = p.readN(dst, int(size)); err != nil {
			return dst, err
		}
		crlf, err := p.readLine(2)
		if err != nil {
			return dst, err
		}
		if len(crlf) != 0 {
			return dst, badRequest("chunk data not followed by CRLF")
		}
	}
	// Trailer section: header lines up to an empty line, bounded like a
	// head, dropped.
	total := 0
	for {
		line, err := p.readLine(p.lim.MaxHeaderBytes)
		if err != nil {
			return dst, err
		}
		if total += len(line) + 2; total > p.lim.MaxHeaderBytes {
			return dst, stream.Errorf(stream.ErrHeaderTooLarge, "trailers exceed %d bytes", p.lim.MaxHeaderBytes)
		}
		if len(line) == 0 {
			return dst, nil
		}
	}
}

// readLine reads one line of at most max bytes (line end excluded) and
// returns it without its line end. The slice aliases the reader's buffer.
func (p *parser) readLine(max int) ([]byte, error) {
	line, err := p.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > max+2 {
		return nil, badRequest("line longer than %d bytes", max)
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// equalFold compares b with an ASCII lower-case s, ignoring b's case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// hopByHop reports whether a header belongs to one connection and is not
// forwarded (RFC 9110 §7.6.1), or is rewritten by the codec
// (Content-Length, Expect).
func hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return equalFold(name, "te")
	case 6:
		return equalFold(name, "expect")
	case 7:
		return equalFold(name, "trailer") || equalFold(name, "upgrade")
	case 10:
		return equalFold(name, "connection") || equalFold(name, "keep-alive")
	case 14:
		return equalFold(name, "content-length")
	case 16:
		return equalFold(name, "proxy-connection")
	case 17:
		return equalFold(name, "transfer-encoding")
	}
	return false
}

// namedInConnection reports whether name is listed in a Connection header
// of head: such headers are hop-by-hop too.
func namedInConnection(head, name []byte) bool {
	ls := lines{b: head}
	ls.next() // start line
	for {
		line, ok := ls.next()
		if !ok {
			return false
		}
		n, v, err := header(line)
		if err != nil || !equalFold(n, "connection") {
			continue
		}
		for tok := range bytes.SplitSeq(v, []byte(",")) {
			if bytes.EqualFold(trimOWS(tok), name) {
				return true
			}
		}
	}
}

var errUnsolicited = errors.New("http1: answer from upstream with no request outstanding")
