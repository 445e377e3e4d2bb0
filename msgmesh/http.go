package msgmesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// HTTP API (docs/http-api.md):
//
//	POST   /v1/registrations         register or replace an app's metadata
//	GET    /v1/registrations         list registrations
//	GET    /v1/registrations/{app}   one registration
//	DELETE /v1/registrations/{app}   remove it (its upstream consumers stop)
//	GET    /v1/upstreams             upstream consumers, their state and their cluster's
//	GET    /v1/stats                 delivery counters (from broker, forwarded, from siblings)
//	GET    /v1/streams               each registered topic's stream and its settings (streams.go)
//	GET    /metrics                  Prometheus metrics, when telemetry is on
//	POST   /v1/publish/{topic}       publish the request body (for apps without an SDK)
//	POST   /v1/pull/{group}/{topic}  long poll for deliveries; /v1/ack/{id}, /v1/nack/{id} answer them,
//	                                 /v1/ack and /v1/nack a list of them (httppull.go)
//	GET    /healthz                  liveness: 200 while serving; 503 while stopping or when Config.Health fails
//	GET    /readyz                   readiness: 200 when every cluster and upstream consumer is ready, else 503 naming what is not (readiness.go)
//	GET    /debug/pprof/...          Go runtime profiles (net/http/pprof), only with Config.Pprof
//
// httpGuard (httpguard.go) stands in front of all of it but the two probes,
// and the POST requests have their content types checked (jsonBody,
// opaqueBody).
func (sc *Sidecar) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/registrations", jsonBody(sc.handleRegister))
	mux.HandleFunc("GET /v1/registrations", sc.handleList)
	mux.HandleFunc("GET /v1/registrations/{app}", sc.handleGet)
	mux.HandleFunc("DELETE /v1/registrations/{app}", sc.handleDelete)
	mux.HandleFunc("GET /v1/upstreams", sc.handleUpstreams)
	mux.HandleFunc("GET /v1/stats", sc.handleStats)
	mux.HandleFunc("GET /v1/streams", sc.handleStreams)
	if t := sc.cfg.Telemetry; t != nil {
		mux.Handle("GET /metrics", t.MetricsHandler())
	}
	mux.Handle("POST /v1/publish/{topic}", opaqueBody(sc.handlePublish))
	mux.Handle("POST /v1/pull/{group}/{topic}", opaqueBody(sc.handlePull))
	mux.Handle("POST /v1/ack/{delivery_id}", opaqueBody(sc.handleAck))
	mux.Handle("POST /v1/nack/{delivery_id}", opaqueBody(sc.handleNack))
	mux.Handle("POST /v1/ack", jsonBody(sc.handleAckBatch))
	mux.Handle("POST /v1/nack", jsonBody(sc.handleNackBatch))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if sc.draining.Load() {
			writeError(w, ErrShuttingDown)
			return
		}
		if h := sc.cfg.Health; h != nil {
			if err := h(); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "UNHEALTHY", Message: err.Error()})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", sc.handleReady)
	if sc.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return sc.guard.wrap(mux)
}

// errorBody is every error answer of the HTTP API.
type errorBody struct {
	Error   string `json:"error"`   // the wire code name, e.g. NOT_REGISTERED
	Message string `json:"message"` // what is wrong, for a person
}

// jsonContentType is the Content-Type of every JSON answer, one slice
// for all of them (net/http only reads it): Header.Set would allocate one
// per answer.
var jsonContentType = []string{"application/json"}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	status, body := httpError(err)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="msgmesh"`)
	}
	writeJSON(w, status, body)
}

// httpError is the status and the body an error is answered with.
func httpError(err error) (int, errorBody) {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound, errorBody{Error: "NOT_FOUND", Message: err.Error()}
	case errors.Is(err, ErrLimit):
		return http.StatusConflict, errorBody{Error: "LIMIT_EXCEEDED", Message: err.Error()}
	}
	code := codeOf(err)
	return httpStatus(code), errorBody{Error: code.String(), Message: err.Error()}
}

// registered answers POST /v1/registrations: the stored registration, and
// the app's secret when the sidecar issued one (shown only this once).
type registered struct {
	registry.Registration
	Secret string `json:"secret,omitempty"`
}

func (sc *Sidecar) handleRegister(w http.ResponseWriter, r *http.Request) {
	secret, err := bearer(r)
	if err != nil {
		writeError(w, err)
		return
	}
	reg, err := registry.DecodeJSON(r.Body)
	if err != nil {
		writeError(w, err)
		return
	}
	stored, issued, err := sc.Register(r.Context(), reg, secret)
	if err != nil && issued == "" {
		writeError(w, err)
		return
	}
	// With a secret issued the registration is stored: answer with it
	// even if starting its consumers failed, or the secret would be lost.
	writeJSON(w, http.StatusCreated, registered{Registration: stored, Secret: issued})
}

// Register stores reg durably and starts the upstream consumers it needs.
// secret is the app's secret as the caller presented it ("" for none):
// replacing the registration of an app that has a secret needs it, and a
// secret presented for an app without one becomes its secret. When secrets
// are required and the app has none, Register issues one and returns it:
// only its hash is kept, so this is the only time it is seen
// (docs/http-api.md).
func (sc *Sidecar) Register(ctx context.Context, reg registry.Registration, secret string) (registry.Registration, string, error) {
	if sc.draining.Load() {
		return reg, "", ErrShuttingDown
	}
	if err := reg.Validate(); err != nil {
		return reg, "", err
	}
	if err := sc.push.checkRegistration(reg); err != nil {
		return reg, "", err
	}
	reg.Produce, reg.Consume = slices.Clone(reg.Produce), slices.Clone(reg.Consume)
	reg.Normalize()
	// regMu makes Register one at a time. The topic check may ask a
	// cluster, so it runs before the store's write transaction, on the
	// registrations as they are now (no other Register can change them
	// meanwhile); the checks that only look at the stored registrations
	// run inside it, so they still hold when reg is written.
	sc.regMu.Lock()
	defer sc.regMu.Unlock()
	current, err := sc.store.List()
	if err != nil {
		return reg, "", fmt.Errorf("msgmesh: register %q: %w", reg.App, err)
	}
	if err := sc.checkTopics(ctx, reg, others(current, reg.App)); err != nil {
		return reg, "", err
	}
	if err := sc.checkGroups(ctx, reg, others(current, reg.App)); err != nil {
		return reg, "", err
	}
	var issued string
	stored, err := sc.store.PutFunc(func(current []registry.Registration) (registry.Registration, error) {
		var err error
		if reg, issued, err = sc.admit(reg, secret, current); err != nil {
			return reg, err
		}
		if err := sc.checkCapacity(reg, current); err != nil {
			return reg, err
		}
		if err := sc.checkPolicies(reg, others(current, reg.App)); err != nil {
			return reg, err
		}
		return reg, sc.checkBrokerGroups(reg, others(current, reg.App))
	})
	if err != nil {
		return reg, "", err
	}
	sc.log.Info("registered", "app", stored.App, "produce", len(stored.Produce), "consume", len(stored.Consume), "secret", stored.SecretHash != nil)
	return stored, issued, sc.reconcile(ctx)
}

// Deregister removes an app's registration and stops the upstream
// consumers nobody else needs. secret is as for Register: deleting the
// registration of an app that has a secret needs it.
func (sc *Sidecar) Deregister(ctx context.Context, app, secret string) error {
	if sc.draining.Load() {
		return ErrShuttingDown
	}
	if err := sc.store.DeleteFunc(app, func(cur registry.Registration) error { return mayDeregister(cur, secret) }); err != nil {
		return err
	}
	sc.log.Info("deregistered", "app", app)
	return sc.reconcile(ctx)
}

func (sc *Sidecar) handleList(w http.ResponseWriter, r *http.Request) {
	regs, err := sc.store.List()
	if err != nil {
		writeError(w, err)
		return
	}
	if regs == nil {
		regs = []registry.Registration{}
	}
	writeJSON(w, http.StatusOK, regs)
}

func (sc *Sidecar) handleGet(w http.ResponseWriter, r *http.Request) {
	reg, err := sc.store.Get(r.PathValue("app"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, reg)
}

func (sc *Sidecar) handleDelete(w http.ResponseWriter, r *http.Request) {
	secret, err := bearer(r)
	if err == nil {
		err = sc.Deregister(r.Context(), r.PathValue("app"), secret)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleUpstreams lists the upstream consumers without waiting for a
// reconcile in progress (which may be waiting for a broker).
func (sc *Sidecar) handleUpstreams(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, sc.upstreamInfos(sc.clusterInfos()))
}

// Headers of POST /v1/publish/{topic}: the key comes from Msgmesh-Key (or
// ?key=), message headers from Msgmesh-Header-<name>; the app it acts as
// from Msgmesh-App, with its secret in Authorization (identity.go).
//
// HTTP header names are case-insensitive, and Go (like every HTTP/2 peer)
// does not keep the case they were sent in, so the message header name is
// <name> in lower case ("Msgmesh-Header-X-Trace" gives "x-trace"), unless
// Msgmesh-Header-Names spells it: a comma-separated list of names whose
// spelling, case included, replaces the lower-case form of the header of
// the same name (docs/http-api.md).
const (
	httpKeyHeader    = "Msgmesh-Key"
	httpHeaderPrefix = "Msgmesh-Header-"
	httpHeaderNames  = "Msgmesh-Header-Names"
	// httpTagHeader is the message's tag (broker.HeaderTag).
	httpTagHeader = "Msgmesh-Tag"
	// httpColourHeader is the message's colour (broker.HeaderColour,
	// docs/routing.md).
	httpColourHeader = "Msgmesh-Colour"
	// httpNullBodyHeader "true" publishes a null body (a Kafka
	// tombstone); the request has no body then.
	httpNullBodyHeader = "Msgmesh-Null-Body"
)

func (sc *Sidecar) handlePublish(w http.ResponseWriter, r *http.Request) {
	idv, named, err := sc.httpIdentity(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var id *identity // nil: the publish names no app
	if named {
		id = &idv
	}
	// A structured CloudEvent carries its data in an envelope, base64 for
	// bytes: room for that; the data's own size is checked as any body's.
	// A batch of them has room for several (httpbatch.go).
	limit := int64(sc.cfg.MaxMessageSize)
	mt := mediaType(r)
	switch mt {
	case ceStructuredType:
		limit = structuredLimit(limit)
	case ceBatchType:
		limit = batchLimit(limit)
	}
	body, err := readBody(r, limit)
	if err != nil {
		writeError(w, fmt.Errorf("%w: reading body: %w", ErrInvalid, err))
		return
	}
	if (mt == ceStructuredType || mt == ceBatchType) && int64(len(body)) > limit {
		writeError(w, fmt.Errorf("%w: the %s body is over %d bytes", ErrMessageTooBig, mt, limit))
		return
	}
	if mt == ceBatchType {
		sc.publishBatch(w, r, id, body)
		return
	}
	msg := broker.Message{Topic: r.PathValue("topic"), Body: body}
	// A CloudEvent (cloudevents.go): its data is the body, its attributes
	// message headers.
	ev, err := cloudEventOf(r, mt, body)
	if err != nil {
		writeError(w, err)
		return
	}
	// A key given empty is an empty key; none given is no key. A request
	// without a query has no ?key= either: parsing none costs a map.
	if vs, ok := r.Header[httpKeyHeader]; ok {
		msg.Key, msg.EmptyKey = vs[0], vs[0] == ""
	} else if r.URL.RawQuery != "" {
		if q := r.URL.Query(); q.Has("key") {
			msg.Key = q.Get("key")
			msg.EmptyKey = msg.Key == ""
		}
	}
	if v := r.Header.Get(httpNullBodyHeader); v != "" {
		null, perr := strconv.ParseBool(v)
		switch {
		case perr != nil:
			writeError(w, fmt.Errorf("%w: %s: %q is not true or false", ErrInvalid, httpNullBodyHeader, v))
			return
		case null && len(body) > 0:
			writeError(w, fmt.Errorf("%w: %s: true with a %d-byte body; a null body has no bytes", ErrInvalid, httpNullBodyHeader, len(body)))
			return
		}
		if null && ev != nil {
			writeError(w, fmt.Errorf("%w: %s: a CloudEvent's data is its body; send the event without data instead", ErrInvalid, httpNullBodyHeader))
			return
		}
		msg.NullBody = null
	}
	if msg.Headers, err = requestHeaders(r.Header); err != nil {
		writeError(w, err)
		return
	}
	contentType := r.Header.Get("Content-Type")
	if ev != nil {
		contentType = ev.message(&msg)
	}
	b, err := sc.checkPublish(id, &msg)
	if err != nil {
		writeError(w, err)
		return
	}
	// The request's own Content-Type says how the body is encoded, for
	// the schema validator, unless a message header says it.
	res, err := sc.publish(r.Context(), b, &msg, contentType)
	if err != nil {
		writeError(w, err)
		return
	}
	writePublished(w, publishResponse{Stream: res.Stream, Partition: res.Partition, Offset: res.Offset, MessageID: res.MessageID})
}

// writePublished answers a publish (200, publishResponse). Every HTTP
// publish ends here, so the usual answer, whose strings need no JSON
// escape, is appended by hand into a pooled buffer and written at once:
// writeJSON's encoder costs a few allocations and copies. Anything else
// goes through writeJSON, so the bytes are the same either way.
func writePublished(w http.ResponseWriter, res publishResponse) {
	if !plainJSON(res.Stream) || !plainJSON(res.MessageID) {
		writeJSON(w, http.StatusOK, res)
		return
	}
	bp := answerBufs.Get().(*[]byte)
	defer answerBufs.Put(bp)
	b := append((*bp)[:0], `{"stream":"`...)
	b = append(b, res.Stream...)
	b = append(b, `","partition":`...)
	b = strconv.AppendInt(b, int64(res.Partition), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, res.Offset, 10)
	if res.MessageID != "" {
		b = append(b, `,"message_id":"`...)
		b = append(b, res.MessageID...)
		b = append(b, '"')
	}
	b = append(b, "}\n"...)
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	*bp = b[:0]
}

// answerBufs holds writePublished's buffers: written through an interface,
// one on the stack would move to the heap.
var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// plainJSON: s is the same inside a JSON string as encoding/json writes
// it: printable ASCII, none of the characters it escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// readBody reads r's body, up to limit+1 bytes (one more than allowed, so
// the caller sees it is too big). With a Content-Length within the limit,
// the usual case, it is one allocation of the body's size: io.ReadAll
// starts at 512 bytes and grows (three allocations and copies for 1 KiB).
func readBody(r *http.Request, limit int64) ([]byte, error) {
	n := r.ContentLength
	if n < 0 || n > limit {
		return io.ReadAll(io.LimitReader(r.Body, limit+1))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		return nil, err
	}
	return body, nil
}

// requestHeaders are the message headers a publish request gives every
// message it publishes: its Msgmesh-Header-<name> headers
// (httpMessageHeaders), then its tag and colour.
func requestHeaders(h http.Header) ([]broker.Header, error) {
	hs, err := httpMessageHeaders(h)
	if err != nil {
		return nil, err
	}
	// The message's tag; the header rule checks it (and refuses a second
	// one sent as Msgmesh-Header-Msgmesh-Tag).
	for _, v := range h[httpTagHeader] {
		hs = append(hs, broker.Header{Key: broker.HeaderTag, Value: v})
	}
	// The message's colour, checked by the header rule like the tag.
	for _, v := range h[httpColourHeader] {
		hs = append(hs, broker.Header{Key: broker.HeaderColour, Value: v})
	}
	return hs, nil
}

// httpMessageHeaders builds the message headers of an HTTP publish from
// its Msgmesh-Header-<name> headers: names in lower case, or as
// Msgmesh-Header-Names spells them. A spelling that names no header sent
// is refused, so a typo does not go unnoticed. The header rule
// (broker.CheckHeaders) is applied later, with every other publish's.
func httpMessageHeaders(h http.Header) ([]broker.Header, error) {
	spelled := map[string]string{} // lower case → spelling
	for _, v := range h.Values(httpHeaderNames) {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				spelled[strings.ToLower(name)] = name
			}
		}
	}
	var hs []broker.Header
	for name, vals := range h {
		k, ok := strings.CutPrefix(name, httpHeaderPrefix)
		if !ok || name == httpHeaderNames { // an empty name is refused with the rest
			continue
		}
		k = strings.ToLower(k)
		if s, ok := spelled[k]; ok {
			delete(spelled, k)
			k = s
		}
		for _, v := range vals {
			hs = append(hs, broker.Header{Key: k, Value: v})
		}
	}
	for _, s := range spelled {
		return nil, fmt.Errorf("%w: %s names %q, but no %s%s header was sent", ErrInvalid, httpHeaderNames, s, httpHeaderPrefix, s)
	}
	return hs, nil
}

// publishResponse answers POST /v1/publish/{topic}: the broker acknowledged
// the message and stored it here.
type publishResponse struct {
	Stream    string `json:"stream"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	MessageID string `json:"message_id,omitempty"`
}
