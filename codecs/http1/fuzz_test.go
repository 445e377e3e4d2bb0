package http1

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The seed corpus of FuzzReadRequest is the files under
// testdata/fuzz/FuzzReadRequest, written from fuzzSeeds by
// TestFuzzSeedCorpus, which fails when they are missing or stale:
//
//	go test ./codecs/http1 -run TestFuzzSeedCorpus -update-corpus
//
// Files not starting with "seed-" are crashers the fuzzer found; keep them.
var updateCorpus = flag.Bool("update-corpus", false, "rewrite the generated seed files under testdata/fuzz")

// fuzzLimits are small, so inputs reach the limits cheaply.
var fuzzLimits = stream.Limits{MaxHeaderBytes: 1024, MaxBodyBytes: 4096}

func fuzzSeeds() map[string]string {
	return map[string]string{
		"seed-get":            "GET /api/items?x=1 HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
		"seed-post":           "POST /echo HTTP/1.1\r\nHost: echo\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"seed-chunked":        "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
		"seed-pipelined":      "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
		"seed-http10":         "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"seed-absolute":       "GET http://Host.Example:8080/p?q HTTP/1.1\r\nHost: ignored\r\n\r\n",
		"seed-bare-lf":        "GET / HTTP/1.1\nHost: a\n\n",
		"seed-leading-crlf":   "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"seed-expect":         "PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
		"seed-conn-tokens":    "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n",
		"seed-too-large-body": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4097\r\n\r\n",
		"seed-too-large-head": "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("v", 1100) + "\r\n\r\n",
		"seed-huge-chunk":     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n",
		"seed-cl-and-te":      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"seed-folding":        "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		"seed-version":        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
		"seed-cut":            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
		"seed-nul":            "GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
		"seed-duplicate-cl":   "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
		"seed-head":           "HEAD /h HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
	}
}

func TestFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzReadRequest")
	if *updateCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range fuzzSeeds() {
		path := filepath.Join(dir, name)
		want := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
		if *updateCorpus {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("seed file missing (run with -update-corpus): %v", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run go test -run TestFuzzSeedCorpus -update-corpus", path)
		}
	}
}

// FuzzReadRequest reads a stream of requests as the server side does. It
// must never panic; every error is a typed refusal or the end of the
// stream; what it accepts is within the limits and survives the trip
// upstream: written by appendRequest and read again, it routes and carries
// the same body.
func FuzzReadRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		p := parser{br: bufio.NewReaderSize(bytes.NewReader(data), 512), lim: fuzzLimits}
		for range 16 {
			m := stream.NewMessage()
			err := p.readRequest(m, map[string]string{}, nil)
			if err != nil {
				var e *stream.Error
				switch {
				case err == io.EOF, err == io.ErrUnexpectedEOF:
				case errors.As(err, &e):
					switch e.Code {
					case stream.ErrBadRequest, stream.ErrTooLarge, stream.ErrHeaderTooLarge, stream.ErrUnsupported:
					default:
						t.Fatalf("unexpected code %v: %v", e.Code, err)
					}
					if s := e.HTTPStatus(); s < 400 || s > 505 {
						t.Fatalf("status %d for %v", s, err)
					}
				default:
					t.Fatalf("undocumented error %v (%T)", err, err)
				}
				return
			}
			if m.Split > fuzzLimits.MaxHeaderBytes || len(Body(m)) > fuzzLimits.MaxBodyBytes {
				t.Fatalf("accepted a head of %d bytes and a body of %d", m.Split, len(Body(m)))
			}
			up := appendRequest(nil, m, "upstream:80")
			q := parser{br: bufio.NewReader(bytes.NewReader(up)), lim: stream.Limits{MaxHeaderBytes: len(up) + 1, MaxBodyBytes: len(up) + 1}}
			m2 := stream.NewMessage()
			if err := q.readRequest(m2, map[string]string{}, nil); err != nil {
				t.Fatalf("the upstream form %q of %q does not parse: %v", up, m.Raw, err)
			}
			if m.Flags&flagNoHost == 0 && (m2.Service != m.Service) || m2.Path != m.Path || !bytes.Equal(Body(m2), Body(m)) {
				t.Fatalf("upstream form changed the request: %q %q %q -> %q %q %q", m.Service, m.Path, Body(m), m2.Service, m2.Path, Body(m2))
			}
			if m.Close {
				return
			}
		}
	})
}
