package broker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// This file is the one place that says which message header names mean
// something to someone: to the sidecar itself, to NATS JetStream, to
// RocketMQ. The sidecar applies CheckHeaders to every publish before any
// broker sees it, so a header means the same on every broker: either it is
// carried unchanged, or it is refused with the same error everywhere.
// Adapters keep their own narrower checks (NATSReserved, RocketMQReserved)
// as a second line for callers that use them without the sidecar.

// ErrInvalidHeader is wrapped by every error of CheckHeaders (a
// *HeaderError), and by an adapter refusing a header its broker would read
// as an instruction or cannot carry. Nothing was stored; the same message
// will be refused again.
var ErrInvalidHeader = errors.New("broker: invalid header")

// HeaderError is a header that CheckHeaders or an adapter refuses: which
// one, and why. It wraps ErrInvalidHeader.
type HeaderError struct {
	Name   string // the header's name as sent
	Reason string
}

func (e *HeaderError) Error() string { return fmt.Sprintf("header %q: %s", e.Name, e.Reason) }

func (e *HeaderError) Unwrap() error { return ErrInvalidHeader }

// Header names in the sidecar's own namespace (prefix Msgmesh-) that apps
// may set: hints the sidecar reads to learn how a body is encoded (package
// schema). Every other Msgmesh- name is the sidecar's.
const (
	// HeaderContentType overrides Content-Type for schema validation.
	HeaderContentType = "Msgmesh-Content-Type"
	// HeaderSchemaID names the schema id a body is written with.
	HeaderSchemaID = "Msgmesh-Schema-Id"
	// HeaderSchemaVersion names the subject version a body is written
	// with: a number or "latest".
	HeaderSchemaVersion = "Msgmesh-Schema-Version"
)

// Reserved name prefixes, compared case-insensitively by CheckHeaders.
const (
	// PrefixMsgmesh starts the names the sidecar and its adapters set
	// themselves (the NATS adapter's key header, future dead-letter
	// headers), apart from the app hints above.
	PrefixMsgmesh = "Msgmesh-"
	// prefixNATS starts the headers NATS JetStream acts on:
	// Nats-Msg-Id deduplicates, Nats-Expected-* refuse, Nats-Rollup
	// purges, Nats-TTL expires, and more with each server release.
	prefixNATS = "Nats-"
	// natsStatus is the header nats.go reads, on a message with an empty
	// body, as a server status: such a message is stored and acked but
	// never handed to a consumer.
	natsStatus = "Status"
	// prefixRocketMQ starts RocketMQ's internal properties
	// (__STARTDELIVERTIME, __transactionId__, ...).
	prefixRocketMQ = "__"
)

// rocketMQProperties are the property names RocketMQ (MessageConst) and
// its clients set or read themselves: a message property of one of these
// names is an instruction (TAGS filters, DELAY delays, KEYS indexes ...)
// or is overwritten. All are upper case, so CheckHeaders compares them
// case-insensitively by upper-casing ASCII.
var rocketMQProperties = map[string]bool{
	"KEYS": true, "TAGS": true, "WAIT": true, "DELAY": true, "RETRY_TOPIC": true,
	"REAL_TOPIC": true, "REAL_QID": true, "TRAN_MSG": true, "PGROUP": true,
	"MIN_OFFSET": true, "MAX_OFFSET": true, "BUYER_ID": true, "ORIGIN_MESSAGE_ID": true,
	"TRANSFER_FLAG": true, "CORRECTION_FLAG": true, "MQ2_FLAG": true, "RECONSUME_TIME": true,
	"MSG_REGION": true, "TRACE_ON": true, "UNIQ_KEY": true, "MAX_RECONSUME_TIMES": true,
	"CONSUME_START_TIME": true, "TRAN_PREPARED_QUEUE_OFFSET": true, "TRANSACTION_CHECK_TIMES": true,
	"CHECK_IMMUNITY_TIME_IN_SECONDS": true, "SHARDING_KEY": true, "CORRELATION_ID": true,
	"REPLY_TO_CLIENT": true, "TTL": true, "ARRIVE_TIME": true, "MSG_TYPE": true, "CLUSTER": true,
	"INSTANCE_ID": true, "PUSH_REPLY_TIME": true, "TIMER_DELIVER_MS": true, "TIMER_DELAY_SEC": true,
	"TIMER_DELAY_MS": true, "TIMER_OUT_MS": true, "TIMER_ENQUEUE_MS": true, "TIMER_DEQUEUE_MS": true,
	"TIMER_ROLL_TIMES": true, "TIMER_DEL_UNIQKEY": true, "INNER_NUM": true, "INNER_BASE": true,
	"DLQ_ORIGIN_TOPIC": true, "DLQ_ORIGIN_MESSAGE_ID": true,
}

// RocketMQReserved reports whether name is RocketMQ's own, compared as
// RocketMQ compares property names (exactly): a system property or a name
// starting with "__". The RocketMQ adapter refuses such headers and does
// not report such properties as headers on consumption.
func RocketMQReserved(name string) bool {
	return rocketMQProperties[name] || strings.HasPrefix(name, prefixRocketMQ)
}

// NATSReserved reports whether name has a meaning for NATS, compared as
// nats-server and nats.go compare header names (exactly): the Nats- prefix
// (JetStream's headers) and Status. The NATS adapter refuses such headers.
func NATSReserved(name string) bool {
	return strings.HasPrefix(name, prefixNATS) || name == natsStatus
}

// HeaderBytes is the size of m's key and headers as the sidecar bounds it
// (its MaxHeaderBytes): the key's length, plus for each header its name,
// its value and 4 bytes, the ": " and CRLF of its HTTP form. Adapters
// state their clusters' limits in these terms (SizeLimiter).
func HeaderBytes(m *Message) int {
	n := len(m.Key)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value) + 4
	}
	return n
}

// CheckHeaders applies the sidecar's header rule to hs, the same for every
// broker (docs/protocol.md §5.3 states it for apps):
//
//   - a name is 1 or more printable ASCII characters (0x21–0x7E) other
//     than ':', the names every broker can carry (NATS allows no more);
//   - names compare case-insensitively, so HTTP's canonical form and
//     brokers that fold case agree;
//   - reserved are names starting with Msgmesh- (the sidecar's, except
//     HeaderContentType, HeaderSchemaID, HeaderSchemaVersion and
//     HeaderTag, whose value CheckTag checks, and HeaderColour, whose
//     value CheckColour checks), Nats-
//     (JetStream's), "__" (RocketMQ's), RocketMQ's system properties, and
//     Status (nats.go's status line);
//   - a name appears once: RocketMQ keeps one value per name, and HTTP
//     consumers would merge the values;
//   - a value holds no control bytes other than horizontal tab (no NUL,
//     CR, LF, and none of RocketMQ's separators 0x01, 0x02).
//
// traceparent and tracestate are ordinary names and pass. The error is a
// *HeaderError naming the first header refused.
func CheckHeaders(hs []Header) error {
	for _, h := range hs {
		if why := nameProblem(h.Key); why != "" {
			return &HeaderError{Name: h.Key, Reason: why}
		}
		if j := badValueByte(h.Value); j >= 0 {
			return &HeaderError{Name: h.Key, Reason: fmt.Sprintf("the value holds control byte %#02x at %d; values may hold no control bytes but tab", h.Value[j], j)}
		}
		if strings.EqualFold(h.Key, HeaderTag) {
			if why := CheckTag(h.Value); why != "" {
				return &HeaderError{Name: h.Key, Reason: why}
			}
		}
		if strings.EqualFold(h.Key, HeaderColour) {
			if why := CheckColour(h.Value); why != "" {
				return &HeaderError{Name: h.Key, Reason: why}
			}
		}
	}
	if i, j := duplicate(hs); i >= 0 {
		return &HeaderError{Name: hs[j].Key, Reason: fmt.Sprintf("the name was already used by header %q (names compare case-insensitively); send one header with one value", hs[i].Key)}
	}
	return nil
}

// nameProblem says why an app may not use name, or "".
func nameProblem(name string) string {
	if name == "" {
		return "the name is empty"
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return "a name is printable ASCII without white space or ':'"
		}
	}
	switch {
	case hasPrefixFold(name, PrefixMsgmesh):
		if strings.EqualFold(name, HeaderContentType) || strings.EqualFold(name, HeaderSchemaID) || strings.EqualFold(name, HeaderSchemaVersion) || strings.EqualFold(name, HeaderTag) || strings.EqualFold(name, HeaderColour) {
			return ""
		}
		return "names starting with Msgmesh- are reserved for the sidecar"
	case hasPrefixFold(name, prefixNATS):
		return "names starting with Nats- are reserved: NATS JetStream acts on them (Nats-Msg-Id deduplicates, Nats-Expected-* refuse, Nats-Rollup purges, ...)"
	case strings.EqualFold(name, natsStatus):
		return "the name is reserved: the NATS client reads Status as a server status"
	case strings.HasPrefix(name, prefixRocketMQ):
		return `names starting with "__" are reserved: RocketMQ's internal properties`
	case rocketMQPropertyFold(name):
		return "the name is reserved: a RocketMQ system property"
	}
	return ""
}

// badValueByte returns the index of the first control byte of v other
// than tab, or -1.
func badValueByte(v string) int {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return i
		}
	}
	return -1
}

// duplicate returns the indexes of two headers with the same name
// (case-insensitively), or -1, -1.
func duplicate(hs []Header) (int, int) {
	if len(hs) <= 16 {
		for i := 1; i < len(hs); i++ {
			for j := 0; j < i; j++ {
				if strings.EqualFold(hs[i].Key, hs[j].Key) {
					return j, i
				}
			}
		}
		return -1, -1
	}
	// Many headers: sort their indexes by name, case-insensitively (the
	// names are ASCII, checked before), and compare neighbours: one
	// allocation, however many names.
	idx := make([]int, len(hs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return compareFoldASCII(hs[a].Key, hs[b].Key) })
	for k := 1; k < len(idx); k++ {
		if strings.EqualFold(hs[idx[k-1]].Key, hs[idx[k]].Key) {
			return idx[k-1], idx[k]
		}
	}
	return -1, -1
}

// compareFoldASCII compares two ASCII strings as if lower-cased.
func compareFoldASCII(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return int(ca) - int(cb)
		}
	}
	return len(a) - len(b)
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// rocketMQPropertyFold reports whether name is a RocketMQ system
// property in any case. The names are upper-case letters, digits and '_',
// at most 32 bytes, so the folded copy lives on the stack, the lookup
// allocates nothing, and a name with any other byte (the '-' of most HTTP
// style names) is ruled out without one.
func rocketMQPropertyFold(name string) bool {
	if len(name) > 32 {
		return false
	}
	var buf [32]byte
	b := buf[:len(name)]
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z':
			b[i] = c - ('a' - 'A')
		case 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_':
			b[i] = c
		default:
			return false
		}
	}
	return rocketMQProperties[string(b)]
}
