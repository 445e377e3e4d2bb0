package stream

import (
	"bufio"
	"net"
	"sync"

	"github.com/msgmesh/msgmesh/core"
)

// Codec is one wire protocol of request/response streams: the
// codec layer of docs/design.md §4. The stream layer (Cluster, the connection
// pools) and the proxy layer above it (routing, filters, the RPC proxy)
// only ever call these methods, so they never switch on the protocol.
//
// A codec sees two kinds of connection:
//
//   - a server connection, accepted from a downstream caller: the proxy
//     reads requests from it and writes their answers (ServerConn);
//   - a client connection, dialled to an upstream: the proxy writes
//     requests to it and reads the answers (ClientConn).
//
// Every request read from a connection has an id unique among the
// requests outstanding on that connection. A protocol with ids on the wire
// (the mesh RPC frames) uses the wire id; a protocol without (HTTP/1.1,
// which answers in request order) has its codec hand out sequential ids.
// The stream layer forwards a request under a new id unique on the upstream
// connection (ClientConn.WriteRequest), matches the answer by that id
// (Message.ID of what ReadResponse returns), and hands the answer back to
// the server connection with the original request (ServerConn.WriteResponse),
// whose codec restores the original id or, for an in-order protocol, writes
// the answers in request order. That is request-id rewriting without the
// stream layer knowing where (or whether) an id sits in the bytes.
//
// Messages are forwarded as the codec read them: the proxy does not
// re-encode a request for the upstream or an answer for the caller unless
// the codec chooses to (the HTTP/1.1 codec rewrites hop-by-hop headers).
// Forwarding is therefore within one protocol: a request read by a codec's
// ServerConn goes out through the same codec's ClientConn.
//
// To add a third protocol, write a package under codecs/ with a value that
// implements Codec (Name, Match, Multiplexed, NewServerConn, NewClientConn,
// Heartbeat, Header) and the two connection types below, and list it in the
// proxy's codecs. Nothing above this interface changes. Implementations
// assert it at compile time: var _ Codec = (*MyCodec)(nil).
type Codec interface {
	// Name is the codec's short name ("mesh", "http1"): used in
	// configuration (the local app's address per protocol), logs and
	// metrics.
	Name() string

	// Match reports whether a connection whose first bytes are prefix
	// speaks this protocol. prefix holds at least one byte (a listener
	// that serves several codecs peeks one byte and asks each codec in
	// turn); a codec must decide from prefix[0] alone.
	Match(prefix []byte) bool

	// Multiplexed reports whether one client connection carries many
	// requests at once whose answers come back in any order, matched by id.
	// If false, the stream layer keeps a pool of connections and sends one
	// request at a time on each (no pipelining).
	Multiplexed() bool

	// NewServerConn wraps an accepted connection. r reads from conn and may
	// hold bytes already read (the listener's sniffed prefix); the codec
	// must read through r only. The codec writes to conn but does not close
	// it: the caller closes conn after ServerConn.Close.
	NewServerConn(conn net.Conn, r *bufio.Reader, lim Limits) ServerConn

	// NewClientConn wraps a dialled connection to an upstream, with the
	// same ownership rules as NewServerConn.
	NewClientConn(conn net.Conn, lim Limits) ClientConn

	// Heartbeat fills m as a request that checks that an upstream is alive
	// and serving: a HEARTBEAT frame, or an HTTP GET of path. path is the
	// configured health path; codecs without paths ignore it. The upstream
	// is healthy when the request is answered with Status below 500.
	Heartbeat(m *Message, path string)

	// Header returns the value of the first header of m named key, for
	// filters (trace context, access logs). Codecs compare names the way
	// their protocol does (HTTP case-insensitively).
	Header(m *Message, key string) (string, bool)
}

// ServerConn is the codec of one accepted connection. ReadRequest is
// called by one goroutine (the connection's read loop); WriteResponse and
// WriteError are safe for concurrent use, and may be called in any order.
type ServerConn interface {
	// ReadRequest reads the next request. It returns:
	//   - (m, nil): a request to serve; m.ID is unique among the
	//     connection's outstanding requests;
	//   - (m, err) with err a *Error: a request the codec refuses (a
	//     malformed payload, an oversized body, an unsupported kind). The
	//     caller answers it with WriteError(m, err). If m.Close is set the
	//     connection cannot go on: the next ReadRequest returns an error;
	//   - (nil, err): the stream ended (io.EOF between requests) or broke;
	//     there is nothing to answer. A request that asked for the
	//     connection to close after it (HTTP "Connection: close") has
	//     m.Close set, and the next call returns io.EOF without reading.
	// Frames that need no proxying (HEARTBEAT) are answered by the codec
	// itself and not returned.
	ReadRequest() (*Message, error)

	// WriteResponse answers req with resp, a message read by the same
	// codec's ClientConn. The codec puts req's id back (or, in order
	// protocols, holds the answer until the earlier ones are written). It
	// may change resp's bytes; it does not keep req or resp after it
	// returns.
	WriteResponse(req, resp *Message) error

	// WriteError answers req with an error made by the proxy: an ERROR
	// frame with the matching code, or an HTTP status with a JSON body.
	WriteError(req *Message, err *Error) error

	// Close flushes what is buffered and makes later writes fail. It does
	// not close the net.Conn.
	Close() error
}

// ClientConn is the codec of one dialled upstream connection. ReadResponse
// is called by one goroutine (the connection's read loop). WriteRequest is
// safe for concurrent use when the codec is Multiplexed; otherwise the
// stream layer calls it for one request at a time, after the previous
// answer was read.
type ClientConn interface {
	// WriteRequest sends req under id, an id unique among the requests
	// outstanding on this connection. The codec puts id in place of the
	// request's own id (it may change req's bytes to do so; req.ID keeps
	// the original id). The same req may be written again, under another
	// id on another connection, if this write failed.
	WriteRequest(id uint64, req *Message) error

	// ReadResponse reads the next answer. m.ID is the id the request was
	// written under; m.Status says how it went; m.Close says the upstream
	// closes the connection after it. Errors end the connection.
	ReadResponse() (*Message, error)

	// Close flushes and makes later writes fail; it does not close the
	// net.Conn.
	Close() error
}

// RequestQueuer and ResponseQueuer are implemented by the connections of
// a multiplexed codec whose writes can be queued without waiting, neither
// for the write syscall nor for room in the connection's buffer (meshrpc,
// core.Writer.TryQueue). With them the proxy serves a call without a
// goroutine of its own (Cluster.Start): the caller's read loop queues the
// request upstream, the upstream connection's read loop queues the
// answer, and frames queued in a row share a write syscall. A false
// queued means the writer is full: nothing was written, and the proxy
// writes the frame with WriteRequest or WriteResponse on a goroutine
// that may wait, so that one slow peer does not hold up a read loop
// serving many.
type RequestQueuer interface {
	QueueRequest(id uint64, req *Message) (queued bool, err error)
}

// ResponseQueuer: see RequestQueuer.
type ResponseQueuer interface {
	QueueResponse(req, resp *Message) (queued bool, err error)
}

// Limits bound what a codec accepts from a peer. A codec checks them
// before it allocates for the bytes they bound. Zero fields take the
// defaults below.
type Limits struct {
	// MaxHeaderBytes bounds the metadata of one message: an HTTP request
	// line and headers (over: 431), a mesh frame's header and routing
	// fields. Zero: 64 KiB.
	MaxHeaderBytes int
	// MaxBodyBytes bounds one message body (over: HTTP 413, mesh
	// FRAME_TOO_LARGE; a mesh frame may be MaxHeaderBytes+MaxBodyBytes
	// long). Zero: 4 MiB.
	MaxBodyBytes int
}

// DefaultMaxBodyBytes is Limits.MaxBodyBytes when zero; the default of
// MaxHeaderBytes is core.DefaultMaxHeaderBytes, the HTTP servers' too.
const DefaultMaxBodyBytes = 4 << 20

// WithDefaults returns l with zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = core.DefaultMaxHeaderBytes
	}
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	return l
}

// Message is one request or answer as the layers above the codec see it.
// The exported fields above Raw are what the stream and proxy layers read;
// Raw, Split and Flags belong to the codec that filled the message and
// nothing else interprets them. Messages come from a pool (NewMessage) and
// go back with Release once nothing refers to them.
type Message struct {
	// ID is the message's stream id on the connection it was read from
	// (requests), or the id its request was written under (answers).
	ID uint64
	// Service is what a request is routed by: the mesh REQUEST's service,
	// the HTTP Host without its port (lower case).
	Service string
	// Path is the second routing key: the mesh REQUEST's method, the HTTP
	// request path without its query.
	Path string
	// Status is an answer's outcome in HTTP terms, whatever the protocol:
	// 200 for a mesh RESPONSE or HEARTBEAT, the HTTP status code, the
	// status matching the code of a mesh ERROR.
	Status int
	// Size is the message's size on the wire, in bytes.
	Size int
	// Close says that nothing follows this message on its connection: the
	// caller asked to close after this request, or the upstream closes
	// after this answer.
	Close bool
	// Refused marks an answer by which the peer refused the request
	// without processing it (an ingress sidecar whose app is down answers
	// UNAVAILABLE): the stream layer may send the request to another host.
	Refused bool

	// Raw holds the message's bytes, laid out as the codec wants.
	Raw []byte
	// Split is a codec-defined offset into Raw (HTTP: where the body
	// starts).
	Split int
	// Flags are codec-defined bits (HTTP: HEAD request, HTTP/1.0, ...).
	Flags uint32
}

// maxPooledRaw keeps a few huge bodies from pinning memory in the pool.
const maxPooledRaw = 64 << 10

var messagePool = sync.Pool{New: func() any { return &Message{Raw: make([]byte, 0, 2048)} }}

// NewMessage returns an empty message from the pool; its Raw may have
// capacity to reuse.
func NewMessage() *Message { return messagePool.Get().(*Message) }

// Release returns m to the pool. m must not be used afterwards. Release of
// nil does nothing.
func (m *Message) Release() {
	if m == nil {
		return
	}
	raw := m.Raw[:0]
	if cap(raw) > maxPooledRaw {
		raw = nil
	}
	*m = Message{Raw: raw}
	messagePool.Put(m)
}

// Intern returns b as a string, reusing the string of an earlier call with
// the same bytes when it is in tab, so routing keys (service and method
// names, hosts) are not allocated per request. tab belongs to one
// connection's read loop; it stops growing at 256 entries.
func Intern(tab map[string]string, b []byte) string {
	if s, ok := tab[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(tab) < 256 && len(b) <= 256 {
		tab[s] = s
	}
	return s
}
