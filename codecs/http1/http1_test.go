package http1

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/internal/allocs"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

func parse(t testing.TB, raw string, lim stream.Limits) (*stream.Message, error) {
	t.Helper()
	p := parser{br: bufio.NewReaderSize(strings.NewReader(raw), 4096), lim: lim.WithDefaults()}
	m := stream.NewMessage()
	err := p.readRequest(m, map[string]string{}, nil)
	return m, err
}

func mustParse(t *testing.T, raw string) *stream.Message {
	t.Helper()
	m, err := parse(t, raw, stream.Limits{})
	if err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return m
}

func TestReadRequest(t *testing.T) {
	m := mustParse(t, "\r\n\r\nGET /api/items?x=1 HTTP/1.1\r\nHost: Shop.Example.COM:8080\r\nX-A:  b \r\n\r\n")
	if m.Service != "shop.example.com" || m.Path != "/api/items" || len(Body(m)) != 0 || m.Close || m.Flags&flagHasBody != 0 {
		t.Fatalf("service %q path %q body %q close %v flags %b", m.Service, m.Path, Body(m), m.Close, m.Flags)
	}
	if v, ok := (Codec{}).Header(m, "x-a"); !ok || v != "b" {
		t.Fatalf("Header(x-a) = %q, %v", v, ok)
	}
	if _, ok := (Codec{}).Header(m, "x-missing"); ok {
		t.Fatal("found a missing header")
	}

	m = mustParse(t, "POST /p HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer-A: x\r\n\r\n")
	if string(Body(m)) != "hello world" || m.Flags&flagHasBody == 0 {
		t.Fatalf("chunked body %q flags %b", Body(m), m.Flags)
	}

	m = mustParse(t, "HEAD http://Other.Host:99/q/r?s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if m.Service != "other.host" || m.Path != "/q/r" || m.Flags&(flagHead|flagHTTP10|flagKeepAlive) != flagHead|flagHTTP10|flagKeepAlive || m.Close {
		t.Fatalf("absolute form: service %q path %q flags %b close %v", m.Service, m.Path, m.Flags, m.Close)
	}
	m = mustParse(t, "GET / HTTP/1.0\r\n\r\n")
	if !m.Close || m.Flags&flagNoHost == 0 {
		t.Fatalf("HTTP/1.0 without keep-alive: close %v flags %b", m.Close, m.Flags)
	}
	m = mustParse(t, "GET / HTTP/1.1\r\nHost: [::1]:80\r\nConnection: Keep-Alive, close\r\n\r\n")
	if m.Service != "[::1]" || !m.Close {
		t.Fatalf("service %q close %v", m.Service, m.Close)
	}
}

func TestReadRequestPipelined(t *testing.T) {
	raw := "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /4 HTTP/1.1\r\n"
	s := Codec{}.NewServerConn(nopConn{}, bufio.NewReader(strings.NewReader(raw)), stream.Limits{})
	for i, want := range []string{"/1", "/2", "/3"} {
		m, err := s.ReadRequest()
		if err != nil || m.ID != uint64(i+1) || m.Path != want {
			t.Fatalf("request %d: %+v %v", i, m, err)
		}
	}
	// The third asked to close: nothing more is read.
	if m, err := s.ReadRequest(); m != nil || err != io.EOF {
		t.Fatalf("after Connection: close: %v %v", m, err)
	}
}

func TestReadRequestErrors(t *testing.T) {
	small := stream.Limits{MaxHeaderBytes: 200, MaxBodyBytes: 10}
	tests := []struct {
		name   string
		raw    string
		lim    stream.Limits
		status int
	}{
		{"no version", "GET /\r\n\r\n", stream.Limits{}, 400},
		{"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", stream.Limits{}, 400},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", stream.Limits{}, 400},
		{"control in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", stream.Limits{}, 400},
		{"version 2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", stream.Limits{}, 505},
		{"garbage version", "GET / HTTX/1.1\r\nHost: a\r\n\r\n", stream.Limits{}, 400},
		{"no host", "GET / HTTP/1.1\r\n\r\n", stream.Limits{}, 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", stream.Limits{}, 400},
		{"folding", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", stream.Limits{}, 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nXY\r\n\r\n", stream.Limits{}, 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", stream.Limits{}, 400},
		{"CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", stream.Limits{}, 400},
		{"bad length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", stream.Limits{}, 400},
		{"length overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", stream.Limits{}, 400},
		{"conflicting lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", stream.Limits{}, 400},
		{"length and chunked", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", stream.Limits{}, 400},
		{"gzip coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", stream.Limits{}, 501},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", stream.Limits{}, 400},
		{"chunk without CRLF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n", stream.Limits{}, 400},
		{"connect", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", stream.Limits{}, 501},
		{"expectation", "POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", stream.Limits{}, 417},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", stream.Limits{}, 400},
		{"headers too large", "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("v", 300) + "\r\n\r\n", small, 431},
		{"many empty lines", strings.Repeat("\r\n", 200) + "GET / HTTP/1.1\r\n\r\n", small, 431},
		{"body too large", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", small, 413},
		{"chunked too large", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n3\r\n123\r\n0\r\n\r\n", small, 413},
		{"trailers too large", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " + strings.Repeat("v", 300) + "\r\n\r\n", small, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.raw, tc.lim)
			var e *stream.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want a *stream.Error", err, err)
			}
			if e.HTTPStatus() != tc.status {
				t.Fatalf("status %d (%v), want %d", e.HTTPStatus(), e, tc.status)
			}
		})
	}
	for _, raw := range []string{"GET / HTTP/1.1\r\nHost: a\r\n", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab"} {
		if _, err := parse(t, raw, stream.Limits{}); err != io.ErrUnexpectedEOF {
			t.Errorf("cut request %q: %v, want io.ErrUnexpectedEOF", raw, err)
		}
	}
	if _, err := parse(t, "\r\n", stream.Limits{}); err != io.EOF {
		t.Errorf("stream of one empty line: %v, want io.EOF", err)
	}
}

// Oversize heads and bodies are refused before the codec allocates for them.
func TestLimitsRefuseBeforeAllocating(t *testing.T) {
	lim := stream.Limits{MaxHeaderBytes: 8 << 10, MaxBodyBytes: 64 << 10}
	huge := "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000000\r\n\r\n"
	chunk := "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n"
	longHead := "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("v", 10<<20)
	for name, raw := range map[string]string{"content-length": huge, "chunk": chunk, "head": longHead} {
		var err error
		n := allocs.BytesPerRun(5, func() {
			p := parser{br: bufio.NewReaderSize(strings.NewReader(raw), 4096), lim: lim}
			m := &stream.Message{}
			err = p.readRequest(m, map[string]string{}, nil)
		})
		var e *stream.Error
		if !errors.As(err, &e) || (e.Code != stream.ErrTooLarge && e.Code != stream.ErrHeaderTooLarge && e.Code != stream.ErrBadRequest) {
			t.Fatalf("%s: %v", name, err)
		}
		if n > 64<<10 {
			t.Errorf("%s: refusing it allocated %d bytes per run", name, n)
		}
	}
}

func TestAppendRequest(t *testing.T) {
	m := mustParse(t, "POST /p?q HTTP/1.0\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nX-Keep: 2\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nUpgrade: h2c\r\nTE: trailers\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	got := string(appendRequest(nil, m, "10.0.0.1:80"))
	want := "POST /p?q HTTP/1.1\r\nX-Keep: 2\r\nHost: 10.0.0.1:80\r\nContent-Length: 3\r\n\r\nabc"
	if got != want {
		t.Fatalf("upstream request\n%q\nwant\n%q", got, want)
	}
	m = mustParse(t, "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
	if got := string(appendRequest(nil, m, "x")); got != "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n" {
		t.Fatalf("GET with an empty body: %q", got)
	}
}

func readResp(t *testing.T, raw string, head bool) (*stream.Message, error) {
	t.Helper()
	c := &clientConn{p: parser{br: bufio.NewReader(strings.NewReader(raw)), lim: stream.Limits{}.WithDefaults()}, w: core.NewWriter(nopConn{}, 0)}
	c.q = []outReq{{id: 7, head: head}}
	return c.ReadResponse()
}

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		head    bool
		status  int
		body    string
		close   bool
		refused bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 200, "ok", false, false},
		{"chunked", "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n2\r\nok\r\n0\r\n\r\n", false, 201, "ok", false, false},
		{"until close", "HTTP/1.0 200 OK\r\n\r\nall of it", false, 200, "all of it", true, false},
		{"head", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", true, 200, "", false, false},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", false, 204, "", false, false},
		{"interim", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx", false, 200, "x", true, false},
		{"no reason", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", false, 404, "", false, false},
		{"refused", "HTTP/1.1 503 Service Unavailable\r\nX-Mesh-Error: UNAVAILABLE\r\nContent-Length: 0\r\n\r\n", false, 503, "", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := readResp(t, tc.raw, tc.head)
			if err != nil {
				t.Fatal(err)
			}
			if m.ID != 7 || m.Status != tc.status || string(Body(m)) != tc.body || m.Close != tc.close || m.Refused != tc.refused {
				t.Fatalf("id %d status %d body %q close %v refused %v", m.ID, m.Status, Body(m), m.Close, m.Refused)
			}
		})
	}
	for _, raw := range []string{"HTTP/1.1 20 OK\r\n\r\n", "HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 101 Switching\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"} {
		if _, err := readResp(t, raw, false); err == nil {
			t.Errorf("%q: accepted", raw)
		}
	}
}

func TestAppendResponse(t *testing.T) {
	req := mustParse(t, "HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	resp, err := readResp(t, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\n", true)
	if err != nil {
		t.Fatal(err)
	}
	got := string(appendResponse(nil, req, resp))
	if want := "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-A: 1\r\nConnection: keep-alive\r\n\r\n"; got != want {
		t.Fatalf("HEAD answer\n%q\nwant\n%q", got, want)
	}
	req = mustParse(t, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	resp, _ = readResp(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false)
	got = string(appendResponse(nil, req, resp))
	if want := "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"; got != want {
		t.Fatalf("de-chunked answer\n%q\nwant\n%q", got, want)
	}
	got = string(appendError(nil, req, stream.Errorf(stream.ErrNoRoute, `no route for "x"`)))
	if !strings.HasPrefix(got, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nX-Mesh-Error: NO_ROUTE\r\n") ||
		!strings.HasSuffix(got, "Connection: close\r\n\r\n{\"error\":\"NO_ROUTE\",\"message\":\"no route for \\\"x\\\"\"}\n") {
		t.Fatalf("error answer %q", got)
	}
}

// TestServerConnAnswersInOrder writes answers out of order; the client
// reads them in request order.
func TestServerConnAnswersInOrder(t *testing.T) {
	client, server := tcpPair(t)
	s := Codec{}.NewServerConn(server, bufio.NewReader(server), stream.Limits{})
	go func() {
		_, _ = client.Write([]byte("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n"))
	}()
	var reqs []*stream.Message
	for range 3 {
		m, err := s.ReadRequest()
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, m)
	}
	answer := func(req *stream.Message, body string) *stream.Message {
		resp, err := readResp(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"+body, false)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, i := range []int{2, 0, 1} {
		if err := s.WriteResponse(reqs[i], answer(reqs[i], []string{"r1", "r2", "r3"}[i])); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WriteError(&stream.Message{ID: 4}, stream.Errorf(stream.ErrTimeout, "x")); err != nil {
		t.Fatal(err) // an answer for a request never read stays held
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(client)
	for _, want := range []string{"r1", "r2", "r3"} {
		p := parser{br: br, lim: stream.Limits{}.WithDefaults()}
		m := stream.NewMessage()
		status, f, err := p.readResponseHead(m)
		if err != nil || status != 200 {
			t.Fatal(status, err)
		}
		if m.Raw, err = p.readBody(m.Raw, &f, false); err != nil || string(Body(m)) != want {
			t.Fatalf("answer %q, %v; want %q", Body(m), err, want)
		}
	}
}

func TestServerConnExpectContinue(t *testing.T) {
	client, server := tcpPair(t)
	s := Codec{}.NewServerConn(server, bufio.NewReader(server), stream.Limits{})
	if _, err := client.Write([]byte("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	got := make(chan *stream.Message, 1)
	go func() {
		m, _ := s.ReadRequest()
		got <- m
	}()
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(client).ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("interim answer %q, %v", line, err)
	}
	_, _ = client.Write([]byte("body"))
	if m := <-got; m == nil || string(Body(m)) != "body" {
		t.Fatalf("request %+v", m)
	}
}

func TestNewRequestMatchesParser(t *testing.T) {
	m := stream.NewMessage()
	if err := NewRequest(m, "POST", "Echo:80", "/e?x", []Field{{"X-A", "1"}}, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	parsed := mustParse(t, string(m.Raw))
	if parsed.Service != m.Service || parsed.Path != m.Path || parsed.Flags != m.Flags || parsed.Split != m.Split || string(Body(parsed)) != "abc" {
		t.Fatalf("NewRequest %+v, parsed %+v", m, parsed)
	}
	if NewRequest(m, "", "h", "/", nil, nil) == nil {
		t.Fatal("NewRequest accepted no method")
	}
}

func TestMatch(t *testing.T) {
	for b, want := range map[byte]bool{'G': true, 'P': true, 0: false, 'g': false, '\r': false} {
		if (Codec{}).Match([]byte{b}) != want {
			t.Errorf("Match(%q) != %v", b, want)
		}
	}
}

type nopConn struct{ net.Conn }

func (nopConn) Write(b []byte) (int, error)       { return len(b), nil }
func (nopConn) SetWriteDeadline(time.Time) error  { return nil }
func (nopConn) RemoteAddr() net.Addr              { return &net.TCPAddr{} }
func (nopConn) Read(b []byte) (int, error)        { return 0, io.EOF }
func (nopConn) Close() error                      { return nil }
func (nopConn) SetReadDeadline(t time.Time) error { return nil }
func (nopConn) SetDeadline(t time.Time) error     { return nil }
func (nopConn) LocalAddr() net.Addr               { return &net.TCPAddr{} }

func tcpPair(t *testing.T) (client, server net.Conn) {
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
