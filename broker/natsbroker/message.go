package natsbroker

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/msgmesh/msgmesh/broker"
)

// toNATS turns msg into a NATS message. The key travels in KeyHeader (or
// KeyB64Header); app headers keep their values but not their order across
// different keys (NATS headers are a map; values of one key keep theirs).
// Values lose surrounding white space, as in HTTP.
//
// A message that needs no header (no key, no headers) gives nil and no
// error: Publish sends its topic and body as they are, without making a
// nats.Msg for them.
//
// NATS has no null body: a NullBody message is refused (broker.ErrNullBody).
// An empty key (EmptyKey) is KeyHeader with an empty value; no key is no
// KeyHeader.
func toNATS(msg *broker.Message) (*nats.Msg, error) {
	if msg.NullBody {
		return nil, broker.ErrNullBody
	}
	if msg.Key == "" && !msg.EmptyKey && len(msg.Headers) == 0 {
		return nil, nil
	}
	nm := &nats.Msg{Subject: msg.Topic, Data: msg.Body}
	h := make(nats.Header, len(msg.Headers)+1)
	for _, hd := range msg.Headers {
		// The sidecar refuses all of these first (broker.CheckHeaders);
		// this is the second line for direct callers.
		why := ""
		switch {
		case strings.EqualFold(hd.Key, KeyHeader) || strings.EqualFold(hd.Key, KeyB64Header):
			why = "reserved for the message key"
		case broker.NATSReserved(hd.Key):
			why = "reserved: NATS acts on it (Nats-* JetStream, Status the client)"
		case !validHeaderKey(hd.Key):
			why = "only printable ASCII without ':' or space is allowed in a name"
		case strings.ContainsAny(hd.Value, "\r\n"):
			why = "the value contains CR or LF"
		}
		if why != "" {
			return nil, &broker.HeaderError{Name: hd.Key, Reason: why}
		}
		h.Add(hd.Key, hd.Value)
	}
	switch {
	case msg.Key == "" && msg.EmptyKey:
		h.Set(KeyHeader, "")
	case msg.Key == "":
	case headerSafe(msg.Key):
		h.Set(KeyHeader, msg.Key)
	default:
		h.Set(KeyB64Header, base64.StdEncoding.EncodeToString([]byte(msg.Key)))
	}
	nm.Header = h
	return nm, nil
}

// validHeaderKey matches what the NATS client accepts: printable ASCII
// except ':' and space.
func validHeaderKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// headerSafe reports whether s survives a NATS header value unchanged:
// valid UTF-8, no control bytes, no surrounding white space.
func headerSafe(s string) bool {
	if !utf8.ValidString(s) || s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// fromNATS rebuilds the broker message: Key from KeyHeader or KeyB64Header,
// the other headers sorted by key (values of one key in their order).
func fromNATS(subject string, h nats.Header, data []byte) broker.Message {
	msg := broker.Message{Topic: subject, Body: data}
	if len(h) == 0 {
		return msg
	}
	var keys []string // made at the first header kept: a message may carry only the key and batch headers
	n := 0
	for k, vs := range h {
		switch k {
		case KeyHeader:
			if len(vs) > 0 {
				msg.Key = vs[0]
				msg.EmptyKey = vs[0] == ""
			}
			continue
		case KeyB64Header:
			if len(vs) > 0 {
				if b, err := base64.StdEncoding.DecodeString(vs[0]); err == nil {
					msg.Key = string(b)
					continue
				}
			}
		default:
			if strings.HasPrefix(k, batchHeaderPrefix) {
				continue // the adapter's, for an atomic batch (batch.go)
			}
		}
		if keys == nil {
			keys = make([]string, 0, len(h))
		}
		keys = append(keys, k)
		n += len(vs)
	}
	if n == 0 {
		return msg
	}
	slices.Sort(keys)
	msg.Headers = make([]broker.Header, 0, n)
	for _, k := range keys {
		for _, v := range h[k] {
			msg.Headers = append(msg.Headers, broker.Header{Key: k, Value: v})
		}
	}
	return msg
}

// delivery is one message handed out by Next.
type delivery struct {
	b           *Broker
	m           *nats.Msg
	msg         broker.Message
	id          string
	redelivered int
	ts          time.Time
}

func (c *consumer) newDelivery(m *nats.Msg) *delivery {
	d := &delivery{b: c.b, m: m, msg: fromNATS(m.Subject, m.Header, m.Data)}
	md, err := m.Metadata()
	if err != nil {
		// Not a JetStream message: cannot happen on a pull consumer.
		c.log.Warn("delivery without JetStream metadata", "subject", m.Subject, "error", err)
		return d
	}
	d.id = messageID(md.Stream, md.Sequence.Stream)
	if md.NumDelivered > 0 {
		d.redelivered = int(md.NumDelivered - 1)
	}
	d.ts = md.Timestamp
	return d
}

// Message returns the message. The sidecar may keep the pointer.
func (d *delivery) Message() *broker.Message { return &d.msg }

// MessageID is "<stream>:<stream sequence>".
func (d *delivery) MessageID() string { return d.id }

// Redelivered is the server's delivery count minus one.
func (d *delivery) Redelivered() int { return d.redelivered }

// Timestamp is when the stream stored the message.
func (d *delivery) Timestamp() time.Time { return d.ts }

// Ack sends the acknowledgement without waiting for the server to confirm
// it (fire-and-forget, no round trip). An ack lost on the way (connection
// drop) means the server redelivers the message after AckWait: a
// duplicate, never a loss.
func (d *delivery) Ack(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("natsbroker: ack %s: %w", d.id, err)
	}
	if err := d.m.Ack(); err != nil {
		return d.ackError("ack", err)
	}
	return nil
}

// Nack asks the server to redeliver the message after delay (NAK with
// delay), or as soon as it can when delay is zero. Like Ack it does not
// wait for a round trip; a lost nack means redelivery after AckWait.
func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("natsbroker: nack %s: %w", d.id, err)
	}
	var err error
	if delay > 0 {
		err = d.m.NakWithDelay(delay)
	} else {
		err = d.m.Nak()
	}
	if err != nil {
		return d.ackError("nack", err)
	}
	return nil
}

func (d *delivery) ackError(op string, err error) error {
	switch {
	case errors.Is(err, nats.ErrMsgAlreadyAckd):
		return fmt.Errorf("natsbroker: %s %s: %w", op, d.id, err)
	case d.b.isClosed():
		return fmt.Errorf("natsbroker: %s %s: %w: %w", op, d.id, broker.ErrClosed, err)
	}
	return fmt.Errorf("natsbroker: %s %s: %w", op, d.id, withSentinel(err))
}

// Endpoint describes the cluster for telemetry: the server the connection
// is on now, else the first configured URL (broker.Describer).
func (b *Broker) Endpoint() broker.Endpoint {
	u := b.nc.ConnectedUrl()
	if u == "" {
		u, _, _ = strings.Cut(b.cfg.URL, ",")
	}
	return broker.NewEndpoint("nats", u)
}
