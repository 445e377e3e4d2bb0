package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// routes is the demo app's HTTP API, read by the e2e driver:
//
//	GET  /healthz                       200 once registered, connected and subscribed; 503 before
//	GET  /v1/state                      app, ready, connections (dials), dial errors, consumed totals
//	GET  /v1/consumed?group=&topic=&prefix=
//	                                    {"ids": {id: {"n","redelivered","traceparent"}}, "deliveries": N}
//	POST /v1/jobs                       start a publish job (jobSpec); 201 {"id": N}
//	GET  /v1/jobs/{id}[?ids=1]          the job's status (jobStatus), with the acked ids if asked
//	POST /v1/jobs/{id}/stop             stop it gracefully; answers the final status with ids
//	POST /v1/publish                    publish one message, synchronously (publishRequest)
func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !a.ready.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ready": true})
	})
	mux.HandleFunc("GET /v1/state", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"app":         a.cfg.App,
			"client":      a.cfg.ClientName,
			"ready":       a.ready.Load(),
			"registered":  a.registered.Load(),
			"connections": a.dials.Load(),
			"dial_errors": a.dialErrs.Load(),
			"consumed":    a.consumed.totals(),
			"tracing":     a.tracer != nil,
		})
	})
	mux.HandleFunc("GET /v1/consumed", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("group") == "" || q.Get("topic") == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "group and topic are required"})
			return
		}
		ids, n := a.consumed.snapshot(q.Get("group")+"|"+q.Get("topic"), q.Get("prefix"))
		writeJSON(w, http.StatusOK, map[string]any{"ids": ids, "deliveries": n})
	})
	mux.HandleFunc("POST /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		var spec jobSpec
		if err := decode(r, &spec); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if spec.Topic == "" || spec.Prefix == "" || spec.Count < 0 || spec.Rate < 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "need topic, prefix, count >= 0, rate >= 0"})
			return
		}
		spec.Workers = max(spec.Workers, 1)
		cl := a.cl.Load()
		if cl == nil || !a.ready.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": errNotReady.Error()})
			return
		}
		j := a.jobs.start(cl, a.log, spec)
		writeJSON(w, http.StatusCreated, map[string]int{"id": j.ID})
	})
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		j := a.job(w, r)
		if j != nil {
			writeJSON(w, http.StatusOK, j.status(r.URL.Query().Get("ids") != ""))
		}
	})
	mux.HandleFunc("POST /v1/jobs/{id}/stop", func(w http.ResponseWriter, r *http.Request) {
		j := a.job(w, r)
		if j != nil {
			j.stop()
			writeJSON(w, http.StatusOK, j.status(true))
		}
	})
	mux.HandleFunc("POST /v1/publish", a.handlePublish)
	return mux
}

func (a *app) job(w http.ResponseWriter, r *http.Request) *job {
	id, err := strconv.Atoi(r.PathValue("id"))
	j := a.jobs.get(id)
	if err != nil || j == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such job"})
		return nil
	}
	return j
}

// publishRequest is one synchronous publish (POST /v1/publish). The body
// is Body as is; Headers are added after the demo-id header. With Trace the
// publish runs inside a span of the app's own, whose trace id is answered.
type publishRequest struct {
	Topic   string            `json:"topic"`
	ID      string            `json:"id"`
	Key     string            `json:"key"`
	Body    string            `json:"body"`
	Headers map[string]string `json:"headers"`
	Trace   bool              `json:"trace"`
}

// publishAnswer: OK with the broker's ack, or the error's wire code
// (SCHEMA_INVALID, NOT_REGISTERED, ...) and message.
type publishAnswer struct {
	OK        bool   `json:"ok"`
	Code      string `json:"code,omitempty"`
	Message   string `json:"message,omitempty"`
	Stream    string `json:"stream,omitempty"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	MessageID string `json:"message_id,omitempty"`
	TraceID   string `json:"trace_id,omitempty"`
}

func (a *app) handlePublish(w http.ResponseWriter, r *http.Request) {
	var req publishRequest
	if err := decode(r, &req); err != nil || req.Topic == "" || req.ID == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("need topic and id (%v)", err)})
		return
	}
	cl := a.cl.Load()
	if cl == nil || !a.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": errNotReady.Error()})
		return
	}
	m := &client.Message{Topic: req.Topic, Key: req.Key, Body: []byte(req.Body), Headers: []mesh.HeaderField{{Key: HeaderID, Value: req.ID}}}
	for k, v := range req.Headers {
		m.Headers = append(m.Headers, mesh.HeaderField{Key: k, Value: v})
	}
	ctx, cancel := context.WithTimeout(r.Context(), attemptTimeout)
	defer cancel()
	var ans publishAnswer
	if req.Trace {
		if a.tracer == nil {
			writeJSON(w, http.StatusConflict, map[string]string{"error": "tracing is off (DEMO_OTLP_ENDPOINT is not set)"})
			return
		}
		var span trace.Span
		ctx, span = a.tracer.Start(ctx, "demo send "+req.ID, trace.WithSpanKind(trace.SpanKindInternal))
		ans.TraceID = span.SpanContext().TraceID().String()
		defer span.End()
	}
	ack, err := cl.Publish(ctx, m)
	if err != nil {
		ans.Code, ans.Message = codeName(err), err.Error()
		var ce *client.Error
		if errors.As(err, &ce) {
			ans.Message = ce.Message
		}
		writeJSON(w, http.StatusOK, ans)
		return
	}
	ans.OK, ans.Stream, ans.Partition, ans.Offset, ans.MessageID = true, ack.Stream, ack.Partition, ack.Offset, ack.MessageID
	writeJSON(w, http.StatusOK, ans)
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
