package msgmesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/msgmesh/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// HTTP API (docs/http-api.md):
//
//	POST   /v1/registrations         register or replace an app's metadata
//	GET    /v1/registrations         list registrations
//	GET    /v1/registrations/{app}   one registration
//	DELETE /v1/registrations/{app}   remove it (its upstream consumers stop)
//	GET    /v1/upstreams             running upstream consumers
//	GET    /v1/stats                 delivery counters (from broker, forwarded, from siblings)
//	GET    /metrics                  Prometheus metrics, when telemetry is on
//	POST   /v1/publish/{topic}       publish the request body (for apps without an SDK)
//	GET    /healthz                  200 while serving; 503 while stopping or when Config.Health fails
//
// httpGuard (httpguard.go) stands in front of all of it, and the two
// request bodies have their content types checked.
func (sc *Sidecar) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/registrations", jsonBody(sc.handleRegister))
	mux.HandleFunc("GET /v1/registrations", sc.handleList)
	mux.HandleFunc("GET /v1/registrations/{app}", sc.handleGet)
	mux.HandleFunc("DELETE /v1/registrations/{app}", sc.handleDelete)
	mux.HandleFunc("GET /v1/upstreams", sc.handleUpstreams)
	mux.HandleFunc("GET /v1/stats", sc.handleStats)
	if t := sc.cfg.Telemetry; t != nil {
		mux.Handle("GET /metrics", t.MetricsHandler())
	}
	mux.Handle("POST /v1/publish/{topic}", opaqueBody(sc.handlePublish))
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
	return sc.guard.wrap(mux)
}

// errorBody is every error answer of the HTTP API.
type errorBody struct {
	Error   string `json:"error"`   // the wire code name, e.g. NOT_REGISTERED
	Message string `json:"message"` // what is wrong, for a person
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	code := codeOf(err)
	if errors.Is(err, registry.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, errorBody{Error: "NOT_FOUND", Message: err.Error()})
		return
	}
	writeJSON(w, httpStatus(code), errorBody{Error: code.String(), Message: err.Error()})
}

func (sc *Sidecar) handleRegister(w http.ResponseWriter, r *http.Request) {
	reg, err := registry.DecodeJSON(r.Body)
	if err != nil {
		writeError(w, err)
		return
	}
	stored, err := sc.Register(r.Context(), reg)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, stored)
}

// Register stores reg durably and starts the upstream consumers it needs.
func (sc *Sidecar) Register(ctx context.Context, reg registry.Registration) (registry.Registration, error) {
	if sc.draining.Load() {
		return reg, ErrShuttingDown
	}
	stored, err := sc.store.Put(reg)
	if err != nil {
		return reg, err
	}
	sc.log.Info("registered", "app", stored.App, "produce", len(stored.Produce), "consume", len(stored.Consume))
	return stored, sc.reconcile(ctx)
}

// Deregister removes an app's registration and stops the upstream
// consumers nobody else needs.
func (sc *Sidecar) Deregister(ctx context.Context, app string) error {
	if sc.draining.Load() {
		return ErrShuttingDown
	}
	if err := sc.store.Delete(app); err != nil {
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
	if err := sc.Deregister(r.Context(), r.PathValue("app")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// upstreamInfo describes one upstream consumer in GET /v1/upstreams.
type upstreamInfo struct {
	Cluster string `json:"cluster"`
	Group   string `json:"group"`
	Topic   string `json:"topic"`
	Running bool   `json:"running"`
	Error   string `json:"error,omitempty"` // why it is not running yet
}

func (sc *Sidecar) handleUpstreams(w http.ResponseWriter, r *http.Request) {
	sc.reconcileMu.Lock()
	out := make([]upstreamInfo, 0, len(sc.upstreams)+len(sc.failed))
	for k := range sc.upstreams {
		out = append(out, upstreamInfo{Cluster: k.cluster, Group: k.group, Topic: k.topic, Running: true})
	}
	for k, err := range sc.failed {
		out = append(out, upstreamInfo{Cluster: k.cluster, Group: k.group, Topic: k.topic, Error: err.Error()})
	}
	sc.reconcileMu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].Topic < out[j].Topic
	})
	writeJSON(w, http.StatusOK, out)
}

// Headers of POST /v1/publish/{topic}: the key comes from Msgmesh-Key (or
// ?key=), message headers from Msgmesh-Header-<Name>.
const (
	httpKeyHeader    = "Msgmesh-Key"
	httpHeaderPrefix = "Msgmesh-Header-"
)

func (sc *Sidecar) handlePublish(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(sc.cfg.MaxMessageSize)+1))
	if err != nil {
		writeError(w, fmt.Errorf("%w: reading body: %w", ErrInvalid, err))
		return
	}
	msg := broker.Message{Topic: r.PathValue("topic"), Key: r.Header.Get(httpKeyHeader), Body: body}
	if msg.Key == "" {
		msg.Key = r.URL.Query().Get("key")
	}
	for name, vals := range r.Header {
		if k, ok := strings.CutPrefix(name, httpHeaderPrefix); ok && k != "" {
			for _, v := range vals {
				msg.Headers = append(msg.Headers, broker.Header{Key: k, Value: v})
			}
		}
	}
	b, err := sc.checkPublish(&msg)
	if err != nil {
		writeError(w, err)
		return
	}
	res, err := sc.publish(r.Context(), b, &msg)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, publishResponse{Stream: res.Stream, Partition: res.Partition, Offset: res.Offset, MessageID: res.MessageID})
}

// publishResponse answers POST /v1/publish/{topic}: the broker acknowledged
// the message and stored it here.
type publishResponse struct {
	Stream    string `json:"stream"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	MessageID string `json:"message_id,omitempty"`
}
