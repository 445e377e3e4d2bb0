package msgmesh

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/observe/msgtrace"
)

// HTTP pull (docs/http-api.md, "Consuming over HTTP"): apps without an SDK
// poll for deliveries and answer them by delivery id.
//
//	POST /v1/pull/{group}/{topic}?max=N&wait=D   long poll: up to N deliveries
//	POST /v1/ack/{delivery_id}                   ack one
//	POST /v1/nack/{delivery_id}?delay=D          nack one; redelivered no sooner than D
//	POST /v1/ack, POST /v1/nack                  the same for a JSON list of ids
//
// It is the mesh protocol's PULL, served by the same machinery: each app
// that pulls over HTTP gets one detached session (detached.go), its "HTTP
// session", which holds the app's HTTP-pulled deliveries in flight
// keyed by delivery id, bounds them by Config.MaxInflight, times them out
// after Config.DeliveryTimeout (its sweeper) and settles them as a mesh
// connection's, dead-letter policy included. A pull is a pullWaiter
// (pull.go) on the group's route, filled by the upstream consumer like a
// mesh PULL, whose answer goes to the HTTP handler instead of a frame.
//
// Delivery ids are "<epoch>-<n>": n is the session's counter, epoch is
// random per HTTP session, so an id from an earlier process (a restart, a
// hot upgrade) is unknown rather than naming another message.

// httpPullWaitCap bounds a pull's wait: half the HTTP write timeout, so the
// answer is written well before the server would cut it, and at most the
// mesh PULL's bound.
func (sc *Sidecar) httpPullWaitCap() time.Duration {
	return min(sc.cfg.HTTP.WriteTimeout/2, maxPullWait)
}

// startHTTPPull starts a pull of up to max deliveries of k for the app id
// acts as; its answer comes on the returned channel. ctx carries the trace
// context the pull span continues.
func (sc *Sidecar) startHTTPPull(ctx context.Context, id identity, k routeKey, max int, wait time.Duration) (*pullWaiter, <-chan mesh.PullResult, error) {
	dt := &sc.detached
	dt.mu.Lock()
	defer dt.mu.Unlock()
	if dt.stopping || sc.draining.Load() {
		return nil, nil, fmt.Errorf("%w: the sidecar is stopping or handing over to a new process; pull again shortly", ErrShuttingDown)
	}
	s := dt.byApp[id.app]
	if s == nil {
		var err error
		if s, err = sc.newDetachedSession(id, "http", 0, nil); err != nil {
			return nil, nil, err
		}
		if dt.byApp == nil {
			dt.byApp = make(map[string]*session)
		}
		dt.byApp[id.app] = s
	}
	// The identity this request proved: after the app was registered again
	// with a new secret, the route gives the session deliveries again only
	// once a request proves the new one.
	s.who.Store(&id)
	if s.subs[k] != mesh.ModePull {
		s.join(k, mesh.ModePull) // kept until the sidecar stops: routes are bounded by registrations
	}
	ch := make(chan mesh.PullResult, 1)
	w := s.startPull(ctx, s.routes[k], max, wait, func(res mesh.PullResult) error {
		ch <- res
		return nil
	})
	return w, ch, nil
}

// requestTrace is the W3C trace context of an HTTP request's traceparent
// and tracestate headers, for the pull span to continue; Background when
// it has none.
func requestTrace(r *http.Request) context.Context {
	return traceContext(r.Header.Get)
}

// traceContext is the W3C trace context that get (a request's header or
// metadata lookup) gives for traceparent and tracestate; Background when
// there is none.
func traceContext(get func(string) string) context.Context {
	hs := make([]broker.Header, 0, 2)
	for _, name := range []string{msgtrace.TraceParent, "tracestate"} {
		if v := get(name); v != "" {
			hs = append(hs, broker.Header{Key: name, Value: v})
		}
	}
	return msgtrace.Extract(context.Background(), hs)
}

// httpSession returns the app's HTTP session; nil if it never pulled.
func (sc *Sidecar) httpSession(app string) *session {
	dt := &sc.detached
	dt.mu.Lock()
	defer dt.mu.Unlock()
	return dt.byApp[app]
}

// deliveryID is the external form of delivery n of a detached session s.
func (s *session) deliveryID(n uint64) string {
	return s.epoch + "-" + strconv.FormatUint(n, 10)
}

// parseDeliveryID returns the session counter of a detached session's
// delivery id, and false when the id was not issued by this session
// (another process, or another session: ids never collide across epochs).
func (s *session) parseDeliveryID(id string) (uint64, bool) {
	epoch, n, ok := strings.Cut(id, "-")
	if !ok || epoch != s.epoch {
		return 0, false
	}
	v, err := strconv.ParseUint(n, 10, 64)
	return v, err == nil
}

// httpPullIdentity is who an HTTP pull, ack or nack acts as: the app of
// its Msgmesh-App header, which it must name (a consumer group belongs to
// apps, not to the host), authenticated as for a publish.
func (sc *Sidecar) httpPullIdentity(r *http.Request) (identity, error) {
	id, named, err := sc.httpIdentity(r)
	if err != nil {
		return identity{}, err
	}
	if !named {
		return identity{}, fmt.Errorf("%w: name the app that consumes in the %s header", ErrInvalid, httpAppHeader)
	}
	return id, nil
}

// ErrUnknownDelivery: an ack or nack names a delivery id that is not in
// flight for the app: never issued to it, already answered, timed out back
// to the broker, or issued by an earlier sidecar process.
var ErrUnknownDelivery = errors.New("msgmesh: unknown delivery")

// httpMessage is one pulled delivery in JSON; POST /v1/pull answers
// {"messages": [...]} (writePulled). Bodies are base64 (JSON
// strings cannot hold arbitrary bytes); a key or header value that is not
// valid UTF-8 comes in its _base64 field instead.
type httpMessage struct {
	DeliveryID string `json:"delivery_id"`
	Group      string `json:"group"`
	Topic      string `json:"topic"`
	MessageID  string `json:"message_id,omitempty"`
	// Key: null for none, "" for an empty key (as the message flags say
	// on the mesh protocol).
	Key       *string `json:"key"`
	KeyBase64 string  `json:"key_base64,omitempty"`
	// Body: base64; null for a null body (a Kafka tombstone), "" for an
	// empty one.
	Body        []byte       `json:"body"`
	Headers     []httpHeader `json:"headers,omitempty"`
	Tag         string       `json:"tag,omitempty"`
	Colour      string       `json:"colour,omitempty"` // docs/routing.md
	Redelivered uint32       `json:"redelivered"`
	Timestamp   string       `json:"timestamp,omitempty"` // RFC 3339, UTC; absent when the broker gave none
}

type httpHeader struct {
	Key         string `json:"key"`
	Value       string `json:"value,omitempty"`
	ValueBase64 string `json:"value_base64,omitempty"`
}

// toHTTP converts a delivery's wire form (toWire, with message flags) to
// JSON.
func (s *session) toHTTP(m mesh.Message) httpMessage {
	h := httpMessage{DeliveryID: s.deliveryID(m.DeliveryID), Group: m.Group, Topic: m.Topic,
		MessageID: m.MessageID, Redelivered: m.Redelivered, Body: m.Body}
	switch {
	case m.Flags.NullBody():
		h.Body = nil
	case h.Body == nil:
		h.Body = []byte{}
	}
	switch {
	case m.Key == "" && !m.Flags.EmptyKey():
	case utf8.ValidString(m.Key):
		h.Key = &m.Key
	default:
		h.KeyBase64 = b64(m.Key)
	}
	for _, f := range m.Headers {
		hh := httpHeader{Key: f.Key}
		if utf8.ValidString(f.Value) {
			hh.Value = f.Value
		} else {
			hh.ValueBase64 = b64(f.Value)
		}
		h.Headers = append(h.Headers, hh)
		if strings.EqualFold(f.Key, broker.HeaderTag) {
			h.Tag = f.Value
		}
		if strings.EqualFold(f.Key, broker.HeaderColour) {
			h.Colour = f.Value
		}
	}
	if m.Timestamp != 0 {
		h.Timestamp = time.Unix(0, m.Timestamp).UTC().Format(time.RFC3339Nano)
	}
	return h
}

func b64(s string) string {
	b, _ := json.Marshal([]byte(s)) // a quoted base64 string
	return string(b[1 : len(b)-1])
}

// pullParams reads ?max= (1 or more; default 1) and ?wait= (a Go duration
// or milliseconds; default 0: answer at once), the wait capped at limit.
func pullParams(r *http.Request, limit time.Duration) (int, time.Duration, error) {
	q := r.URL.Query()
	max := 1
	if v := q.Get("max"); v != "" || q.Has("max") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return 0, 0, fmt.Errorf("%w: max=%q: the most deliveries to return, a whole number of at least 1", ErrInvalid, v)
		}
		max = n
	}
	var wait time.Duration
	if v := q.Get("wait"); v != "" || q.Has("wait") {
		d, err := parseDuration(v)
		if err != nil {
			return 0, 0, fmt.Errorf("%w: wait=%q: %w", ErrInvalid, v, err)
		}
		wait = min(d, limit)
	}
	return max, wait, nil
}

// parseDuration reads a Go duration ("1.5s", "200ms") or a whole number of
// milliseconds; negative ones are refused.
func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		ms, merr := strconv.ParseUint(v, 10, 32)
		if merr != nil {
			return 0, errors.New("a duration such as 500ms or 5s, or a whole number of milliseconds")
		}
		d = time.Duration(ms) * time.Millisecond
	}
	if d < 0 {
		return 0, errors.New("negative")
	}
	return d, nil
}

func (sc *Sidecar) handlePull(w http.ResponseWriter, r *http.Request) {
	id, err := sc.httpPullIdentity(r)
	if err != nil {
		writeError(w, err)
		return
	}
	k := routeKey{group: r.PathValue("group"), topic: r.PathValue("topic")}
	max, wait, err := pullParams(r, sc.httpPullWaitCap())
	if err != nil {
		writeError(w, err)
		return
	}
	if err := sc.mayConsume(sc.snap.Load(), &id, k); err != nil {
		writeError(w, err)
		return
	}
	pw, ch, err := sc.startHTTPPull(requestTrace(r), id, k, max, wait)
	if err != nil {
		writeError(w, err)
		return
	}
	var res mesh.PullResult
	select {
	case res = <-ch:
	case <-r.Context().Done():
		// The client went away: what the pull holds was never seen.
		pw.finish()
		res = <-ch
		pw.s.handBack(res.Messages)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if err := pw.s.writePulled(w, res.Messages); err != nil {
		// The answer did not reach the client (as far as we can tell):
		// hand its deliveries back now rather than after the timeout.
		pw.s.handBack(res.Messages)
	}
}

// writePulled writes a pullResponse of ms one message at a time, so that
// an answer of many large bodies is never held whole in memory a second
// time as JSON.
func (s *session) writePulled(w io.Writer, ms []mesh.Message) error {
	bw := bufio.NewWriterSize(w, 32<<10)
	_, _ = bw.WriteString(`{"messages":[`)
	for i, m := range ms {
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		b, err := json.Marshal(s.toHTTP(m))
		if err != nil {
			return fmt.Errorf("msgmesh: http pull: %w", err)
		}
		_, _ = bw.Write(b)
	}
	_, _ = bw.WriteString("]}\n")
	return bw.Flush() // a bufio.Writer keeps its first error
}

// handBack returns pulled deliveries the app never got to the broker,
// without counting a failed attempt.
func (s *session) handBack(ms []mesh.Message) {
	for _, m := range ms {
		s.settle(m.DeliveryID, answerNone, 0)
	}
}

func (sc *Sidecar) handleAck(w http.ResponseWriter, r *http.Request) {
	sc.answerHTTP(w, r, answerAck, 0)
}

func (sc *Sidecar) handleNack(w http.ResponseWriter, r *http.Request) {
	var delay time.Duration
	if q := r.URL.Query(); q.Has("delay") {
		var err error
		if delay, err = parseDuration(q.Get("delay")); err != nil {
			writeError(w, fmt.Errorf("%w: delay=%q: %w", ErrInvalid, q.Get("delay"), err))
			return
		}
	}
	sc.answerHTTP(w, r, answerNack, delay)
}

// answerHTTP settles the delivery named in the path with a; 204 when it
// was in flight for the app.
func (sc *Sidecar) answerHTTP(w http.ResponseWriter, r *http.Request, a answer, delay time.Duration) {
	id, err := sc.httpPullIdentity(r)
	if err != nil {
		writeError(w, err)
		return
	}
	did := r.PathValue("delivery_id")
	if !sc.httpSession(id.app).settleByID(did, a, delay) {
		writeError(w, fmt.Errorf("%w: %q is not in flight for app %q: never pulled by it, already answered, timed out back to the broker (--delivery-timeout), or pulled from an earlier sidecar process", ErrUnknownDelivery, did, id.app))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// settleByID settles the delivery of external id did with a; false when it
// is not in flight on s (s may be nil: the app never pulled over HTTP).
func (s *session) settleByID(did string, a answer, delay time.Duration) bool {
	if s == nil {
		return false
	}
	n, ok := s.parseDeliveryID(did)
	return ok && s.settle(n, a, delay)
}

// answerBatch is the body of POST /v1/ack and POST /v1/nack: several
// deliveries answered at once.
type answerBatch struct {
	DeliveryIDs []string `json:"delivery_ids"`
	// Delay (nack only) is as ?delay= of a single nack.
	Delay string `json:"delay,omitempty"`
}

// answeredBatch answers POST /v1/ack and POST /v1/nack: how many
// deliveries were answered, and the ids that were not in flight.
type answeredBatch struct {
	Answered int      `json:"answered"`
	Unknown  []string `json:"unknown"`
}

// maxAnswerBody bounds the body of a batch ack or nack: room for
// MaxInflight ids and then some.
const maxAnswerBody = 1 << 20

func (sc *Sidecar) handleAckBatch(w http.ResponseWriter, r *http.Request) {
	sc.answerBatchHTTP(w, r, answerAck)
}

func (sc *Sidecar) handleNackBatch(w http.ResponseWriter, r *http.Request) {
	sc.answerBatchHTTP(w, r, answerNack)
}

// answerBatchHTTP settles every delivery a batch names with a. Ids not in
// flight are listed in the answer, not an error: the others were answered.
func (sc *Sidecar) answerBatchHTTP(w http.ResponseWriter, r *http.Request, a answer) {
	id, err := sc.httpPullIdentity(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req answerBatch
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAnswerBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, fmt.Errorf("%w: the body is {\"delivery_ids\": [...]} (and \"delay\" for a nack): %w", ErrInvalid, err))
		return
	}
	if n := len(req.DeliveryIDs); n == 0 || n > sc.cfg.MaxInflight {
		writeError(w, fmt.Errorf("%w: delivery_ids: %d ids; send 1 to %d (the in-flight bound, --max-inflight)", ErrInvalid, n, sc.cfg.MaxInflight))
		return
	}
	var delay time.Duration
	if req.Delay != "" {
		if a != answerNack {
			writeError(w, fmt.Errorf("%w: delay is for nacks", ErrInvalid))
			return
		}
		if delay, err = parseDuration(req.Delay); err != nil {
			writeError(w, fmt.Errorf("%w: delay %q: %w", ErrInvalid, req.Delay, err))
			return
		}
	}
	s := sc.httpSession(id.app)
	res := answeredBatch{Unknown: []string{}}
	for _, did := range req.DeliveryIDs {
		if s.settleByID(did, a, delay) {
			res.Answered++
		} else {
			res.Unknown = append(res.Unknown, did)
		}
	}
	writeJSON(w, http.StatusOK, res)
}
