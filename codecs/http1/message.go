package http1

import (
	"errors"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
	"strings"
)

// Field is one header field.
type Field struct{ Name, Value string }

// NewRequest fills m with an HTTP/1.1 request, exactly as the codec's
// server side would have read it, ready to send through a stream.Cluster of
// this codec (a client without a sidecar in front of it, as the benchmark
// uses). target is the request target ("/path?query").
func NewRequest(m *stream.Message, method, host, target string, header []Field, body []byte) error {
	if method == "" || host == "" || target == "" {
		return errors.New("http1: NewRequest needs a method, a host and a target")
	}
	b := m.Raw[:0]
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	for _, f := range header {
		b = append(b, f.Name...)
		b = append(b, ": "...)
		b = append(b, f.Value...)
		b = append(b, "\r\n"...)
	}
	hasBody := len(body) > 0 || method == "POST" || method == "PUT" || method == "PATCH"
	if hasBody {
		b = appendContentLength(b, len(body))
	}
	b = append(b, "\r\n"...)
	m.Split = len(b)
	m.Raw = append(b, body...)
	m.Size, m.Flags, m.Close = len(m.Raw), 0, false
	if hasBody {
		m.Flags |= flagHasBody
	}
	if method == "HEAD" {
		m.Flags |= flagHead
	}
	path := target
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	m.Service, m.Path = strings.ToLower(host), path
	if i := strings.LastIndexByte(m.Service, ':'); i >= 0 && !strings.HasSuffix(m.Service, "]") {
		m.Service = m.Service[:i]
	}
	return nil
}

// Body returns the body of a message read by this codec (de-chunked).
func Body(m *stream.Message) []byte { return m.Raw[m.Split:] }
