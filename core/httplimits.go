package core

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// HTTPLimits bound what one client of an HTTP server can hold: how long it
// may take to send a request's headers and body, how long a response and
// an idle keep-alive connection may last, how large the headers may be,
// and how many connections are served at once. The sidecar's HTTP API and
// the control plane use them; each fills zero fields with its own
// defaults (Or), since a control plane holds long polls open and a
// sidecar does not.
type HTTPLimits struct {
	// ReadHeaderTimeout bounds reading a request's line and headers, from
	// the moment the connection is ready for it: a client that trickles
	// its headers is cut off after it.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, body included: a client
	// that sends its body one byte at a time is cut off after it.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds a request from the end of its headers to the end
	// of its answer (the handler's work included): it must exceed the
	// longest handler (a publish waiting for the broker, a long poll).
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes a keep-alive connection that waits this long for
	// its next request.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds a request's line and headers (over: 431).
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxConns bounds the connections served at once; more wait in the
	// listen queue until one closes (the timeouts above bound how long
	// that takes).
	MaxConns int `yaml:"max_conns"`
}

// Or returns l with its zero fields taken from d.
func (l HTTPLimits) Or(d HTTPLimits) HTTPLimits {
	or := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	or(&l.ReadHeaderTimeout, d.ReadHeaderTimeout)
	or(&l.ReadTimeout, d.ReadTimeout)
	or(&l.WriteTimeout, d.WriteTimeout)
	or(&l.IdleTimeout, d.IdleTimeout)
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.MaxConns == 0 {
		l.MaxConns = d.MaxConns
	}
	return l
}

// Validate refuses negative values.
func (l HTTPLimits) Validate() error {
	switch {
	case l.ReadHeaderTimeout < 0, l.ReadTimeout < 0, l.WriteTimeout < 0, l.IdleTimeout < 0:
		return fmt.Errorf("http limits: negative timeout")
	case l.MaxHeaderBytes < 0, l.MaxConns < 0:
		return fmt.Errorf("http limits: negative max_header_bytes or max_conns")
	}
	return nil
}

// Server returns an http.Server for h with the limits' timeouts and
// header bound; serve it on Listener(ln).
func (l HTTPLimits) Server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

// Listener returns ln bounded to MaxConns connections at once (ln itself
// when MaxConns is zero). Closing it closes ln.
func (l HTTPLimits) Listener(ln net.Listener) net.Listener {
	if l.MaxConns <= 0 {
		return ln
	}
	return netutil.LimitListener(ln, l.MaxConns)
}

// Flags registers one flag per field on fs, named --http-read-timeout and
// so on, that set l; their help shows l's current values as defaults.
func (l *HTTPLimits) Flags(fs *flag.FlagSet) {
	fs.DurationVar(&l.ReadHeaderTimeout, FlagHTTPReadHeaderTimeout, l.ReadHeaderTimeout, "HTTP: time a client has to send a request's headers")
	fs.DurationVar(&l.ReadTimeout, FlagHTTPReadTimeout, l.ReadTimeout, "HTTP: time a client has to send a whole request, body included")
	fs.DurationVar(&l.WriteTimeout, FlagHTTPWriteTimeout, l.WriteTimeout, "HTTP: time from a request's headers to the end of its answer")
	fs.DurationVar(&l.IdleTimeout, FlagHTTPIdleTimeout, l.IdleTimeout, "HTTP: an idle keep-alive connection is closed after this")
	fs.IntVar(&l.MaxHeaderBytes, FlagHTTPMaxHeaderBytes, l.MaxHeaderBytes, "HTTP: largest request line and headers, in bytes")
	fs.IntVar(&l.MaxConns, FlagHTTPMaxConns, l.MaxConns, "HTTP: connections served at once; more wait until one closes")
}

// DefaultMaxHeaderBytes bounds a request's line and headers where no limit
// is set: the HTTP servers' default (HTTPLimits.MaxHeaderBytes) and the RPC
// codecs' (stream.Limits).
const DefaultMaxHeaderBytes = 64 << 10

// The names Flags registers, for callers that merge flags with a config
// file.
const (
	FlagHTTPReadHeaderTimeout = "http-read-header-timeout"
	FlagHTTPReadTimeout       = "http-read-timeout"
	FlagHTTPWriteTimeout      = "http-write-timeout"
	FlagHTTPIdleTimeout       = "http-idle-timeout"
	FlagHTTPMaxHeaderBytes    = "http-max-header-bytes"
	FlagHTTPMaxConns          = "http-max-conns"
)
