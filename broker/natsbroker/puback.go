package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The publish request, as jetstream.PublishMsg makes it with no options,
// without its per-publish costs: that call decoded every PubAck with
// encoding/json into a struct it allocated (a third of the adapter's CPU
// per publish under `meshctl bench`, about ten allocations), needed a
// nats.Msg even for a message without headers, and waited through
// nats.go's shared response map and its response goroutine (replyInbox).
// The retries and the errors are the same as jetstream.PublishMsg's
// (nats.go v1.55.0, jetstream/publish.go, publishMsg), and the ack is
// read as it read it (parsePubAck).

// Defaults of jetstream.PublishMsg with no options, which this adapter
// used before and whose behaviour publishAck keeps. Without a deadline in
// ctx a publish is bounded by the JetStream context's DefaultTimeout, as
// there (Broker.pubTimeout).
const (
	pubRetryWait     = jetstream.DefaultPubRetryWait     // between attempts on no responders
	pubRetryAttempts = jetstream.DefaultPubRetryAttempts // retries after the first attempt
)

// pubAck is what Publish reads of a JetStream publish ack. An atomic
// batch's ack (batch.go) names the batch and counts its messages; its
// Sequence is the last one's.
type pubAck struct {
	Stream   string
	Sequence uint64
	Batch    string
	Count    uint64
}

// publishAck sends a publish of subj (nm: the message with its headers,
// or nil for one without headers) and waits for the stream's ack under
// ctx. known is the stream name the caller expects: when the ack names
// it, the result's Stream is known itself and the ack costs no allocation
// for it.
func (b *Broker) publishAck(ctx context.Context, subj string, data []byte, nm *nats.Msg, known string) (pubAck, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.pubTimeout)
		defer cancel()
	}
	r, err := b.replies.get(b.nc, false)
	if err != nil {
		return pubAck{}, err
	}
	resp, err := b.request(ctx, r, subj, data, nm)
	for n := 0; errors.Is(err, nats.ErrNoResponders) && n < pubRetryAttempts; n++ {
		// As nats.go does: a short blip of leadership change answers
		// no responders; try again after a pause.
		t := time.NewTimer(pubRetryWait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		resp, err = b.request(ctx, r, subj, data, nm)
	}
	return b.answered(r, resp, err, known)
}

// answered ends a publish request made on r (nil: nats.go's shared
// response subscription) with its answer resp or error err: r goes back
// to the pool, or is dropped when an answer may still come, and the
// answer is read as an ack of stream known (parsePubAck).
func (b *Broker) answered(r *replyInbox, resp *nats.Msg, err error, known string) (pubAck, error) {
	if r != nil {
		if err == nil || r.clean {
			b.replies.put(r)
		} else {
			b.replies.drop(r)
		}
	}
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return pubAck{}, jetstream.ErrNoStreamResponse
		}
		return pubAck{}, err
	}
	return parsePubAck(resp.Data, known)
}

// request sends one publish request and waits for its answer on r, or,
// with r nil (every reply inbox in use), through nats.go's shared
// response subscription, as jetstream.PublishMsg did.
func (b *Broker) request(ctx context.Context, r *replyInbox, subj string, data []byte, nm *nats.Msg) (*nats.Msg, error) {
	if r != nil {
		return r.request(ctx, subj, data, nm)
	}
	if nm == nil {
		nm = &nats.Msg{Subject: subj, Data: data}
	}
	return b.nc.RequestMsgWithContext(ctx, nm)
}

// replyInbox is a reply subscription of its own that publishes wait on
// for their ack, one publish at a time: nats.go's request (used by
// jetstream.PublishMsg) made a channel and an inbox name per request,
// entered them in the connection's response map under its lock, and
// handed each response from the read loop to the response
// subscription's goroutine and from there to the caller. Here the read
// loop puts the ack straight into the waiting publish's channel.
//
// A reply inbox is reused only when its publish got its answer (clean):
// one that gave up waiting (ctx ended) may still get that answer later,
// so it is unsubscribed and dropped. Besides, each publish has a reply
// subject of its own under the inbox (inbox.<n>), and an answer to any
// other subject is discarded: no publish can read another's ack, even one
// the server sent twice.
type replyInbox struct {
	nc    *nats.Conn
	inbox string // subscribed as inbox.*
	n     uint64 // the number of the last request
	ch    chan *nats.Msg
	sub   *nats.Subscription
	// gone is closed when the subscription ends: the connection closed
	// (nats.go does not close ch, so a waiting publish learns it here,
	// as nats.go's request learnt it from its closed channel).
	gone     chan struct{}
	goneOnce sync.Once
	// clean: no answer is outstanding.
	clean bool
}

// request publishes and waits for the one answer. The answer of a
// publish nobody listens to, the server's 503 status, is
// nats.ErrNoResponders, as nats.go's request reports it.
func (r *replyInbox) request(ctx context.Context, subj string, data []byte, nm *nats.Msg) (*nats.Msg, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	reply, err := r.send(subj, nil, data, nm)
	if err != nil {
		return nil, err
	}
	return r.wait(ctx, reply)
}

// send publishes nm, or subj with the header block hdr (nil: none) and
// data, with a reply subject of its own under r's inbox, which it returns
// for wait. An error means nothing was written.
func (r *replyInbox) send(subj string, hdr, data []byte, nm *nats.Msg) (string, error) {
	r.n++
	reply := r.inbox + "." + strconv.FormatUint(r.n, 10)
	r.clean = false
	var err error
	switch {
	case nm != nil:
		nm.Reply = reply
		err = r.nc.PublishMsg(nm)
	case hdr != nil:
		err = r.nc.PublishWithHeader(subj, reply, hdr, data)
	default:
		err = r.nc.PublishRequest(subj, reply, data)
	}
	if err != nil {
		// Refused before it was written: no answer will come.
		r.clean = true
		return "", err
	}
	return reply, nil
}

// wait waits for the answer to reply, which send returned.
func (r *replyInbox) wait(ctx context.Context, reply string) (*nats.Msg, error) {
	for {
		select {
		case m := <-r.ch:
			if m.Subject != reply {
				continue // a late or repeated answer to an earlier request
			}
			r.clean = true
			if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
				return nil, nats.ErrNoResponders
			}
			return m, nil
		case <-r.gone:
			return nil, nats.ErrConnectionClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// maxReplies bounds the reply inboxes of a Broker: about the publishes a
// sidecar has in flight at once (its lanes). A publish beyond that many
// waits through nats.go's shared response subscription instead; making
// and dropping an inbox per publish there cost more than that hand-off
// (a subscription and an unsubscription each, about 7 µs a message under
// a CloudEvents batch's 2,000 publishes in flight).
const maxReplies = 256

// replyPool holds the reply inboxes of a Broker: at most maxReplies are
// subscribed (live), in use or idle.
type replyPool struct {
	mu     sync.Mutex
	idle   []*replyInbox
	live   int
	closed bool
}

// get returns an idle reply inbox, or subscribes a new one on nc, or nil
// when maxReplies are in use. With over, it subscribes one beyond
// maxReplies rather than return nil (an atomic batch's commit, which
// nats.go's shared request cannot send); put drops it.
func (p *replyPool) get(nc *nats.Conn, over bool) (*replyInbox, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		r := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return r, nil
	}
	if p.live >= maxReplies && !over {
		p.mu.Unlock()
		return nil, nil
	}
	p.live++
	p.mu.Unlock()
	r := &replyInbox{nc: nc, inbox: nc.NewInbox(), ch: make(chan *nats.Msg, 4), gone: make(chan struct{}), clean: true}
	sub, err := nc.ChanSubscribe(r.inbox+".*", r.ch)
	if err != nil {
		p.mu.Lock()
		p.live--
		p.mu.Unlock()
		return nil, err
	}
	ended := func(string) { r.goneOnce.Do(func() { close(r.gone) }) }
	sub.SetClosedHandler(ended)
	if !sub.IsValid() { // closed before the handler was set
		ended("")
	}
	r.sub = sub
	return r, nil
}

// put keeps a clean reply inbox for the next publish, within maxReplies.
func (p *replyPool) put(r *replyInbox) {
	p.mu.Lock()
	if !p.closed && p.live <= maxReplies {
		p.idle = append(p.idle, r)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.drop(r)
}

// drop unsubscribes r, which is not idle, and frees its place. An answer
// still on its way is discarded with it.
func (p *replyPool) drop(r *replyInbox) {
	_ = r.sub.Unsubscribe()
	p.mu.Lock()
	p.live--
	p.mu.Unlock()
}

// close unsubscribes the idle inboxes; those in use are dropped when
// their publishes end.
func (p *replyPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, r := range idle {
		p.drop(r)
	}
}

// parsePubAck reads a publish ack as jetstream.PublishMsg does: a JSON
// error answer is a *jetstream.APIError (wrapped as "nats: %w"), anything
// that is not an ack naming a stream is jetstream.ErrInvalidJSAck. The
// server's ordinary ack ({"stream":"S","seq":N} and optionally
// "duplicate", "domain", "val", "type" with plain values) is read by
// hand; every other input goes to encoding/json exactly as nats.go
// decodes it, so unusual but valid JSON (escapes, other key case, null)
// and malformed input are decided by encoding/json.
func parsePubAck(data []byte, known string) (pubAck, error) {
	if a, ok := fastPubAck(data, known); ok {
		if a.Stream == "" {
			return pubAck{}, jetstream.ErrInvalidJSAck
		}
		return a, nil
	}
	return slowPubAck(data)
}

// pubAckJSON mirrors nats.go's jetstream pubAckResponse (apiResponse and
// an embedded *PubAck), so that encoding/json decides as it did there.
// BatchID and BatchSize are the server's fields of an atomic batch's ack,
// which nats.go's PubAck (v1.55.0) does not have.
type pubAckJSON struct {
	Type      string              `json:"type"`
	Error     *jetstream.APIError `json:"error,omitempty"`
	BatchID   string              `json:"batch"`
	BatchSize uint64              `json:"count"`
	*jetstream.PubAck
}

func slowPubAck(data []byte) (pubAck, error) {
	var r pubAckJSON
	if err := json.Unmarshal(data, &r); err != nil {
		return pubAck{}, jetstream.ErrInvalidJSAck
	}
	if r.Error != nil {
		return pubAck{}, fmt.Errorf("nats: %w", r.Error)
	}
	if r.PubAck == nil || r.PubAck.Stream == "" {
		return pubAck{}, jetstream.ErrInvalidJSAck
	}
	return pubAck{Stream: r.PubAck.Stream, Sequence: r.PubAck.Sequence, Batch: r.BatchID, Count: r.BatchSize}, nil
}

// fastPubAck reads a JSON object whose keys are among stream, seq,
// duplicate, domain, val, type, batch and count, spelled so, with string
// values without escapes or non-ASCII bytes, a plain unsigned seq and
// count and a boolean duplicate. ok is false for anything else; then nothing is decided and
// slowPubAck must read data. A stream equal to known is known itself.
func fastPubAck(data []byte, known string) (a pubAck, ok bool) {
	p := ackParser{b: data}
	if !p.byte('{') {
		return a, false
	}
	if p.byte('}') {
		return a, p.end()
	}
	for {
		key, ok := p.str()
		if !ok || !p.byte(':') {
			return a, false
		}
		switch string(key) {
		case "stream":
			s, ok := p.str()
			if !ok {
				return a, false
			}
			if string(s) == known {
				a.Stream = known
			} else {
				a.Stream = string(s)
			}
		case "seq":
			n, ok := p.uint()
			if !ok {
				return a, false
			}
			a.Sequence = n
		case "count":
			n, ok := p.uint()
			if !ok {
				return a, false
			}
			a.Count = n
		case "batch":
			s, ok := p.str()
			if !ok {
				return a, false
			}
			a.Batch = string(s)
		case "duplicate":
			if !p.word("true") && !p.word("false") {
				return a, false
			}
		case "domain", "val", "type":
			if _, ok := p.str(); !ok {
				return a, false
			}
		default:
			return a, false
		}
		if p.byte(',') {
			continue
		}
		if p.byte('}') {
			return a, p.end()
		}
		return a, false
	}
}

// ackParser reads the tokens fastPubAck accepts; every method skips JSON
// white space before its token.
type ackParser struct {
	b []byte
	i int
}

func (p *ackParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// byte consumes c if it is the next token.
func (p *ackParser) byte(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only white space is left.
func (p *ackParser) end() bool {
	p.space()
	return p.i == len(p.b)
}

// word consumes the literal w if it is the next token.
func (p *ackParser) word(w string) bool {
	p.space()
	if len(p.b)-p.i >= len(w) && string(p.b[p.i:p.i+len(w)]) == w {
		p.i += len(w)
		return true
	}
	return false
}

// str reads a string of printable ASCII without '"' or '\\' inside.
func (p *ackParser) str() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// uint reads a JSON integer without sign, fraction or exponent that fits
// in a uint64.
func (p *ackParser) uint() (uint64, bool) {
	p.space()
	start := p.i
	var n uint64
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		d := uint64(p.b[p.i] - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
		p.i++
	}
	switch {
	case p.i == start:
		return 0, false
	case p.b[start] == '0' && p.i-start > 1: // a leading zero: not JSON
		return 0, false
	case p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E'):
		return 0, false
	}
	return n, true
}
