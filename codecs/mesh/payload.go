package mesh

import (
	"encoding/binary"
	"fmt"
)

// Field encodings (docs/protocol.md §3):
//
//	str, bytes  uvarint length, then that many bytes
//	u8/u16/u32/u64  big-endian fixed width
//	list        uvarint count, then the elements
//
// maxListLen bounds a decoded list so a tiny payload cannot claim a huge
// element count; the frame size limit bounds everything else.
const maxListLen = 1 << 16

// The smallest wire size of one list element. A decoder refuses a count
// that the bytes left cannot hold at this size, before it allocates room
// for the list: otherwise a 64 KiB payload could make it allocate up to
// 136 bytes (a Message) for each of its bytes.
const (
	minSubSize     = 1 + 1 + 1                         // group, topic (empty strs), mode
	minHeaderSize  = 1 + 1                             // key, value (empty strs)
	minMessageSize = 8 + 1 + 1 + 1 + 1 + 1 + 1 + 4 + 8 // delivery_id … timestamp, every str, list and bytes empty
)

// HeaderField is one message header. Order is kept on the wire.
type HeaderField struct {
	Key   string
	Value string
}

// MessageFlags say what a message's empty key and empty body stand for
// (docs/protocol.md §3, "message flags"): an optional trailing field of
// PUBLISH and of the message record, on the wire only when not zero, so a
// message without them is byte for byte what peers that predate them send
// and accept. Zero keeps version 1's meaning: an empty key is no key, an
// empty body is an empty body.
type MessageFlags uint8

const (
	// FlagNullBody: the body is null (a Kafka tombstone), not empty. The
	// body must be empty.
	FlagNullBody MessageFlags = 1 << 0
	// FlagEmptyKey: the message has a key, and it is empty (Kafka tells
	// an empty key from none). The key must be empty.
	FlagEmptyKey MessageFlags = 1 << 1

	knownMessageFlags = FlagNullBody | FlagEmptyKey
)

// NewMessageFlags returns the flags of a message whose body is null and
// whose key is empty but present, as given.
func NewMessageFlags(nullBody, emptyKey bool) MessageFlags {
	var f MessageFlags
	if nullBody {
		f |= FlagNullBody
	}
	if emptyKey {
		f |= FlagEmptyKey
	}
	return f
}

// NullBody reports FlagNullBody.
func (f MessageFlags) NullBody() bool { return f&FlagNullBody != 0 }

// EmptyKey reports FlagEmptyKey.
func (f MessageFlags) EmptyKey() bool { return f&FlagEmptyKey != 0 }

// check reports a flag that does not fit the message, or an unknown one.
func (f MessageFlags) check(d *decoder, key string, body []byte) {
	switch {
	case d.err != nil:
	case f&^knownMessageFlags != 0:
		d.fail("flags", fmt.Sprintf("unknown flag bits %#02x", uint8(f&^knownMessageFlags)))
	case f&FlagNullBody != 0 && len(body) > 0:
		d.fail("flags", "null_body with a non-empty body")
	case f&FlagEmptyKey != 0 && key != "":
		d.fail("flags", "empty_key with a non-empty key")
	}
}

// Features are what an app says, in HELLO, it understands beyond version
// 1's payloads (docs/protocol.md §5.1).
type Features uint32

const (
	// FeatureMessageFlags: the app reads the message flags of DELIVER and
	// PULL_RESULT; the sidecar sends them to it.
	FeatureMessageFlags Features = 1 << 0
)

// Mode says how a connection serves a declared subscription.
type Mode uint8

const (
	// ModePush: the sidecar pushes deliveries with DELIVER requests.
	ModePush Mode = 1
	// ModePull: the app asks with PULL requests; nothing is pushed.
	ModePull Mode = 2
)

// Hello opens a connection: the app says who it is and how many deliveries
// it accepts in flight (0 means the sidecar's limit), and proves it is that
// app with its secret when the app has one.
type Hello struct {
	App         string
	Client      string // free-form instance name, for logs
	MaxInflight uint32
	// Secret is the app's secret (docs/protocol.md §5.1, §9), an optional
	// trailing field: it is on the wire only when not empty, so a HELLO
	// without one is byte for byte what peers that predate the field send
	// and accept. Never log it.
	Secret string
	// Features are what the app understands beyond version 1's payloads,
	// an optional trailing field after Secret (which is then written,
	// empty if the app has none). A sidecar that predates it refuses such
	// a HELLO (BAD_FRAME): the app says HELLO again without it.
	Features Features
}

func (m *Hello) AppendTo(b []byte) []byte {
	b = appendStr(b, m.App)
	b = appendStr(b, m.Client)
	b = binary.BigEndian.AppendUint32(b, m.MaxInflight)
	if m.Secret != "" || m.Features != 0 {
		b = appendStr(b, m.Secret)
	}
	if m.Features != 0 {
		b = binary.BigEndian.AppendUint32(b, uint32(m.Features))
	}
	return b
}

func (m *Hello) Decode(p []byte) error {
	d := decoder{b: p, kind: KindHello}
	m.App = d.str("app")
	m.Client = d.str("client")
	m.MaxInflight = d.u32("max_inflight")
	m.Secret, m.Features = "", 0
	if d.err == nil && len(d.b) > 0 {
		// Optional trailing field: present only if bytes are left. An
		// explicitly empty one (a lone 0x00) means no secret, as absence does.
		m.Secret = d.str("secret")
	}
	if d.err == nil && len(d.b) > 0 {
		m.Features = Features(d.u32("features"))
	}
	return d.done()
}

// Subscription names one (group, topic) a connection serves.
type Subscription struct {
	Group string
	Topic string
	Mode  Mode
}

// Declare replaces the set of subscriptions a connection serves. An empty
// list means the connection only publishes.
type Declare struct {
	Subs []Subscription
}

func (m *Declare) AppendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(m.Subs)))
	for _, s := range m.Subs {
		b = appendStr(b, s.Group)
		b = appendStr(b, s.Topic)
		b = append(b, byte(s.Mode))
	}
	return b
}

func (m *Declare) Decode(p []byte) error {
	d := decoder{b: p, kind: KindDeclare}
	n := d.count("subs", minSubSize)
	m.Subs = make([]Subscription, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		s := Subscription{Group: d.str("group"), Topic: d.str("topic"), Mode: Mode(d.u8("mode"))}
		if d.err == nil && s.Mode != ModePush && s.Mode != ModePull {
			d.fail("mode", fmt.Sprintf("unknown mode %d", s.Mode))
		}
		m.Subs = append(m.Subs, s)
	}
	return d.done()
}

// Publish asks the sidecar to publish one message and answer only once the
// broker acknowledged it.
type Publish struct {
	Topic   string
	Key     string
	Headers []HeaderField
	Body    []byte // aliases the frame buffer after Decode
	// Flags: a null body, an empty key (optional trailing field, on the
	// wire only when not zero).
	Flags MessageFlags
}

func (m *Publish) AppendTo(b []byte) []byte {
	b = appendStr(b, m.Topic)
	b = appendStr(b, m.Key)
	b = appendHeaders(b, m.Headers)
	b = appendBytes(b, m.Body)
	if m.Flags != 0 {
		b = append(b, byte(m.Flags))
	}
	return b
}

func (m *Publish) Decode(p []byte) error {
	d := decoder{b: p, kind: KindPublish}
	m.Topic = d.str("topic")
	m.Key = d.str("key")
	m.Headers = d.headers()
	m.Body = d.bytes("body")
	m.Flags = 0
	if d.err == nil && len(d.b) > 0 {
		m.Flags = MessageFlags(d.u8("flags"))
		m.Flags.check(&d, m.Key, m.Body)
	}
	return d.done()
}

// PublishAck answers PUBLISH with where the broker stored the message. Which
// fields are set depends on the broker (docs/protocol.md).
type PublishAck struct {
	Stream    string // NATS stream, Kafka topic, RocketMQ topic
	Partition int32  // Kafka partition, RocketMQ queue id; -1 when none
	Offset    int64  // NATS stream sequence, Kafka or RocketMQ offset
	MessageID string // broker message id when the broker has one
}

func (m *PublishAck) AppendTo(b []byte) []byte {
	b = appendStr(b, m.Stream)
	b = binary.BigEndian.AppendUint32(b, uint32(m.Partition))
	b = binary.BigEndian.AppendUint64(b, uint64(m.Offset))
	return appendStr(b, m.MessageID)
}

func (m *PublishAck) Decode(p []byte) error {
	d := decoder{b: p, kind: KindPublishAck}
	m.Stream = d.str("stream")
	m.Partition = int32(d.u32("partition"))
	m.Offset = int64(d.u64("offset"))
	m.MessageID = d.str("message_id")
	return d.done()
}

// Message is one delivery: the payload of DELIVER (whose frame id is the
// DeliveryID) and an element of PULL_RESULT. It is answered by an ACK or
// NACK frame with FlagResponse set and the DeliveryID as frame id.
type Message struct {
	DeliveryID  uint64
	Group       string
	Topic       string
	Key         string
	Headers     []HeaderField
	Body        []byte // aliases the frame buffer after Decode
	MessageID   string // the broker's id of the message (stable across redeliveries)
	Redelivered uint32 // how many times the broker delivered it before
	Timestamp   int64  // broker timestamp, Unix nanoseconds; 0 when unknown
	// Flags: a null body, an empty key. In DELIVER an optional trailing
	// field, on the wire only when not zero; in PULL_RESULT they travel in
	// its own trailing field. Send them only to a peer that said it reads
	// them (FeatureMessageFlags): appendTo with flags false leaves them out.
	Flags MessageFlags
}

func (m *Message) AppendTo(b []byte) []byte {
	b = m.appendRecord(b)
	if m.Flags != 0 {
		b = append(b, byte(m.Flags))
	}
	return b
}

// appendRecord appends the message record without flags.
func (m *Message) appendRecord(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.DeliveryID)
	b = appendStr(b, m.Group)
	b = appendStr(b, m.Topic)
	b = appendStr(b, m.Key)
	b = appendHeaders(b, m.Headers)
	b = appendBytes(b, m.Body)
	b = appendStr(b, m.MessageID)
	b = binary.BigEndian.AppendUint32(b, m.Redelivered)
	return binary.BigEndian.AppendUint64(b, uint64(m.Timestamp))
}

func (m *Message) Decode(p []byte) error {
	d := decoder{b: p, kind: KindDeliver}
	m.decode(&d)
	m.Flags = 0
	if d.err == nil && len(d.b) > 0 {
		m.Flags = MessageFlags(d.u8("flags"))
		m.Flags.check(&d, m.Key, m.Body)
	}
	return d.done()
}

func (m *Message) decode(d *decoder) {
	m.DeliveryID = d.u64("delivery_id")
	m.Group = d.str("group")
	m.Topic = d.str("topic")
	m.Key = d.str("key")
	m.Headers = d.headers()
	m.Body = d.bytes("body")
	m.MessageID = d.str("message_id")
	m.Redelivered = d.u32("redelivered")
	m.Timestamp = int64(d.u64("timestamp"))
}

// Nack asks for redelivery after Delay milliseconds (0: as soon as the
// broker can). ACK has an empty payload.
type Nack struct {
	DelayMillis uint32
}

func (m *Nack) AppendTo(b []byte) []byte { return binary.BigEndian.AppendUint32(b, m.DelayMillis) }

func (m *Nack) Decode(p []byte) error {
	d := decoder{b: p, kind: KindNack}
	m.DelayMillis = d.u32("delay_ms")
	return d.done()
}

// Pull asks for up to Max messages of a declared (group, topic), waiting up
// to WaitMillis for the first one.
type Pull struct {
	Group      string
	Topic      string
	Max        uint32
	WaitMillis uint32
}

func (m *Pull) AppendTo(b []byte) []byte {
	b = appendStr(b, m.Group)
	b = appendStr(b, m.Topic)
	b = binary.BigEndian.AppendUint32(b, m.Max)
	return binary.BigEndian.AppendUint32(b, m.WaitMillis)
}

func (m *Pull) Decode(p []byte) error {
	d := decoder{b: p, kind: KindPull}
	m.Group = d.str("group")
	m.Topic = d.str("topic")
	m.Max = d.u32("max")
	m.WaitMillis = d.u32("wait_ms")
	return d.done()
}

// PullResult answers PULL; it may hold fewer messages than asked, or none
// when the wait ran out.
type PullResult struct {
	Messages []Message
}

// PullResult's messages carry their flags in one optional trailing field,
// flags: bytes, one byte per message in order, on the wire only when some
// message has flags.
func (m *PullResult) AppendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(m.Messages)))
	flagged := false
	for i := range m.Messages {
		b = m.Messages[i].appendRecord(b)
		flagged = flagged || m.Messages[i].Flags != 0
	}
	if flagged {
		b = binary.AppendUvarint(b, uint64(len(m.Messages)))
		for i := range m.Messages {
			b = append(b, byte(m.Messages[i].Flags))
		}
	}
	return b
}

func (m *PullResult) Decode(p []byte) error {
	d := decoder{b: p, kind: KindPullResult}
	n := d.count("messages", minMessageSize)
	m.Messages = make([]Message, n)
	for i := 0; i < n && d.err == nil; i++ {
		m.Messages[i].decode(&d)
	}
	if d.err == nil && len(d.b) > 0 {
		flags := d.bytes("flags")
		if d.err == nil && len(flags) != n {
			d.fail("flags", fmt.Sprintf("%d flag bytes for %d messages", len(flags), n))
		}
		for i := 0; i < len(flags) && d.err == nil; i++ {
			m.Messages[i].Flags = MessageFlags(flags[i])
			m.Messages[i].Flags.check(&d, m.Messages[i].Key, m.Messages[i].Body)
		}
	}
	return d.done()
}

// Error is the typed error answer to any request, and the one coded error
// type of the mesh: what an ERROR frame decodes to on every side (the SDK,
// forwarding, the RPC codec) and what a side returns to choose the code
// of its answer. errors.Is matches it by code (see Is); the sentinels in
// errors.go are one value per code.
type Error struct {
	Code    Code
	Message string
}

func (m *Error) AppendTo(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(m.Code))
	return appendStr(b, m.Message)
}

func (m *Error) Decode(p []byte) error {
	d := decoder{b: p, kind: KindError}
	m.Code = Code(d.u16("code"))
	m.Message = d.str("message")
	return d.done()
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendHeaders(b []byte, hs []HeaderField) []byte {
	b = binary.AppendUvarint(b, uint64(len(hs)))
	for _, h := range hs {
		b = appendStr(b, h.Key)
		b = appendStr(b, h.Value)
	}
	return b
}

// decoder reads fields in order and remembers the first error, so payload
// decoders read straight through and check once at the end.
type decoder struct {
	b    []byte
	kind Kind
	err  error
}

func (d *decoder) fail(field, reason string) {
	if d.err == nil {
		d.err = &ProtocolError{Err: ErrMalformed, Kind: d.kind, Field: field, Reason: reason}
	}
}

func (d *decoder) take(field string, n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail(field, fmt.Sprintf("needs %d bytes, %d left", n, len(d.b)))
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(field, "bad length varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(field string) []byte {
	n := d.uvarint(field)
	if n > uint64(len(d.b)) {
		d.fail(field, fmt.Sprintf("length %d exceeds the %d bytes left", n, len(d.b)))
		return nil
	}
	p := d.take(field, int(n))
	if len(p) == 0 {
		return nil
	}
	return p
}

func (d *decoder) str(field string) string { return string(d.bytes(field)) }

// count reads a list count. Every element takes at least minSize bytes, so
// a count the bytes left cannot hold is a lie; it is refused before the
// caller allocates room for the list.
func (d *decoder) count(field string, minSize int) int {
	n := d.uvarint(field)
	if n > maxListLen || n > uint64(len(d.b)/minSize) {
		d.fail(field, fmt.Sprintf("list of %d elements is too long", n))
		return 0
	}
	return int(n)
}

func (d *decoder) headers() []HeaderField {
	n := d.count("headers", minHeaderSize)
	if n == 0 {
		return nil
	}
	hs := make([]HeaderField, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		hs = append(hs, HeaderField{Key: d.str("header.key"), Value: d.str("header.value")})
	}
	return hs
}

func (d *decoder) u8(field string) uint8 {
	p := d.take(field, 1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *decoder) u16(field string) uint16 {
	p := d.take(field, 2)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

func (d *decoder) u32(field string) uint32 {
	p := d.take(field, 4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (d *decoder) u64(field string) uint64 {
	p := d.take(field, 8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (d *decoder) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("", fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	return d.err
}

// Request is one RPC call, the payload of REQUEST: which service and
// method it calls, its headers (the trace context travels here) and its
// body. The sidecar routes it by Service (docs/rpc.md).
type Request struct {
	Service string
	Method  string
	Headers []HeaderField
	Body    []byte // aliases the frame buffer after Decode
}

func (m *Request) AppendTo(b []byte) []byte {
	b = appendStr(b, m.Service)
	b = appendStr(b, m.Method)
	b = appendHeaders(b, m.Headers)
	return appendBytes(b, m.Body)
}

func (m *Request) Decode(p []byte) error {
	d := decoder{b: p, kind: KindRequest}
	m.Service = d.str("service")
	m.Method = d.str("method")
	m.Headers = d.headers()
	m.Body = d.bytes("body")
	return d.done()
}

// Response is the successful answer to a REQUEST. A failed call is
// answered by ERROR instead.
type Response struct {
	Headers []HeaderField
	Body    []byte // aliases the frame buffer after Decode
}

func (m *Response) AppendTo(b []byte) []byte {
	b = appendHeaders(b, m.Headers)
	return appendBytes(b, m.Body)
}

func (m *Response) Decode(p []byte) error {
	d := decoder{b: p, kind: KindResponse}
	m.Headers = d.headers()
	m.Body = d.bytes("body")
	return d.done()
}

// RequestView decodes a REQUEST payload without allocating: every field
// aliases the payload. Parse accepts exactly the payloads Request.Decode
// accepts, with the same errors, so a proxy can check and route a request
// and then forward its bytes untouched.
type RequestView struct {
	Service []byte
	Method  []byte
	Body    []byte
	headers []byte // the encoded header list after its count
	nhdr    int
}

// Parse checks p and points the view's fields into it.
func (v *RequestView) Parse(p []byte) error {
	d := decoder{b: p, kind: KindRequest}
	v.Service = d.bytes("service")
	v.Method = d.bytes("method")
	v.nhdr = d.count("headers", minHeaderSize)
	start := d.b
	for i := 0; i < v.nhdr && d.err == nil; i++ {
		d.bytes("header.key")
		d.bytes("header.value")
	}
	if d.err == nil {
		v.headers = start[:len(start)-len(d.b)]
	}
	v.Body = d.bytes("body")
	return d.done()
}

// Header returns the value of the first header named key (compared as
// bytes), and whether there is one.
func (v *RequestView) Header(key string) (string, bool) {
	d := decoder{b: v.headers, kind: KindRequest}
	for i := 0; i < v.nhdr && d.err == nil; i++ {
		k := d.bytes("header.key")
		val := d.bytes("header.value")
		if string(k) == key {
			return string(val), true
		}
	}
	return "", false
}

// PeekErrorCode returns the code of an ERROR payload without decoding its
// message; ok is false when the payload is too short to hold one.
func PeekErrorCode(p []byte) (c Code, ok bool) {
	if len(p) < 2 {
		return 0, false
	}
	return Code(binary.BigEndian.Uint16(p)), true
}
