package ctrlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/topology"
)

// maxGrace is the longest credential grace period a rotation may ask for.
const maxGrace = 30 * 24 * time.Hour

// Handler returns the HTTP API and the web page (see the package doc).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.handleHealth)

	mux.Handle("GET /v1/apps", s.operator(s.handleListApps))
	mux.Handle("POST /v1/apps", s.operator(s.handleCreateApp))
	mux.Handle("GET /v1/apps/{app}", s.operator(s.handleGetApp))
	mux.Handle("DELETE /v1/apps/{app}", s.operator(s.handleDeleteApp))
	mux.Handle("POST /v1/apps/{app}/credential", s.operator(s.handleRotate))
	mux.Handle("GET /v1/apps/{app}/instances", s.operator(s.handleListInstances))
	mux.Handle("POST /v1/apps/{app}/instances", s.operator(s.handlePutInstance))
	mux.Handle("DELETE /v1/apps/{app}/instances/{id}", s.operator(s.handleRemoveInstance))
	mux.Handle("PUT /v1/apps/{app}/instances/{id}/weight", s.operator(s.handleSetWeight))
	mux.Handle("GET /v1/apps/{app}/traffic", s.operator(s.handleTraffic))
	mux.Handle("GET /v1/apps/{app}/topology", s.operator(s.handleGetAppTopology))
	mux.Handle("PUT /v1/apps/{app}/topology", s.operator(s.handlePutAppTopology))
	mux.Handle("DELETE /v1/apps/{app}/topology", s.operator(s.handleDeleteAppTopology))
	mux.Handle("GET /v1/apps/{app}/limits", s.operator(s.handleGetLimits))
	mux.Handle("PUT /v1/apps/{app}/limits", s.operator(s.handlePutLimits))
	mux.Handle("GET /v1/apps/{app}/routing", s.operator(s.handleGetRouting))
	mux.Handle("PUT /v1/apps/{app}/routing", s.operator(s.handlePutRouting))
	mux.Handle("GET /v1/topology", s.operator(s.handleGetTopology))
	mux.Handle("PUT /v1/topology", s.operator(s.handlePutTopology))
	mux.Handle("DELETE /v1/topology", s.operator(s.handleDeleteTopology))
	mux.HandleFunc("GET /v1/apps/{app}/config", s.handleConfig)
	mux.Handle("POST /v1/apps/{app}/certificate", s.sidecar(s.handleCertificate))
	mux.Handle("PUT /v1/apps/{app}/lease", s.sidecar(s.handleLease))
	mux.Handle("GET /v1/schema-policies", s.operator(s.handleListSchemaPolicies))
	mux.Handle("GET /v1/schema-policies/{topic}", s.operator(s.handleGetSchemaPolicy))
	mux.Handle("PUT /v1/schema-policies/{topic}", s.operator(s.handlePutSchemaPolicy))
	mux.Handle("DELETE /v1/schema-policies/{topic}", s.operator(s.handleDeleteSchemaPolicy))
	registry := s.schemaRegistry()
	for _, p := range registryPaths {
		mux.Handle(p, registry)
	}

	mux.Handle("GET /ui/", uiHandler())
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	return jsonErrors(recoverer(mux, s.log))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away (or its connection was cut): nobody reads an answer
	}
	status, code := errorCode(err)
	switch {
	case status == http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="msgmesh-ctrlplane"`)
	case status == http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	case status >= 500:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, status, api.ErrorBody{Code: code, Message: err.Error()})
}

// apiFunc is a handler that returns its error for writeError.
type apiFunc func(ctx context.Context, w http.ResponseWriter, r *http.Request) error

// operator runs fn for requests with the operator token, with a context
// that bounds its store operations.
func (s *Server) operator(fn apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.StoreTimeout)
		defer cancel()
		if _, err := s.authorize(ctx, r, ""); err != nil {
			s.writeError(w, r, err)
			return
		}
		if err := fn(ctx, w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// sidecarFunc is a handler of a sidecar's call about its own app.
type sidecarFunc func(ctx context.Context, w http.ResponseWriter, r *http.Request, app string) error

// sidecar runs fn for requests with the credential of the path's {app}
// (or the operator token), with a context that bounds its store
// operations. Another app's credential is 403: it may not act for this app.
func (s *Server) sidecar(fn sidecarFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.StoreTimeout)
		defer cancel()
		app, err := pathApp(r)
		if err == nil {
			_, err = s.authorize(ctx, r, app)
		}
		if err == nil {
			err = fn(ctx, w, r, app)
		}
		if err != nil {
			s.writeError(w, r, err)
		}
	})
}

// pathApp returns the {app} path value, checked.
func pathApp(r *http.Request) (string, error) {
	app := r.PathValue("app")
	if err := api.ValidateAppName(app); err != nil {
		return "", err
	}
	return app, nil
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.stopping:
		s.writeError(w, r, ErrShuttingDown)
	default:
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "long_polls": s.LongPolls()})
	}
}

func (s *Server) handleListApps(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	apps, err := s.listApps(ctx)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apps)
	return nil
}

func (s *Server) handleCreateApp(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	var req api.CreateAppRequest
	if err := decodeBody(r.Body, &req, false); err != nil {
		return err
	}
	created, err := s.createApp(ctx, req.Name)
	if err != nil {
		return err
	}
	s.log.Info("app created", "app", req.Name, "version", created.Version)
	writeJSON(w, http.StatusCreated, created)
	return nil
}

func (s *Server) handleGetApp(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	a, rev, err := s.getApp(ctx, app)
	if err != nil {
		return err
	}
	shared, err := s.sharedRev(ctx)
	if err != nil {
		return err
	}
	v, err := s.appView(ctx, &a, max(rev, shared))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) handleDeleteApp(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	if err := s.deleteApp(ctx, app); err != nil {
		return err
	}
	s.configs.forget(app) // a read kept for it is of no more use (replicas keep theirs: one per app at most)
	s.log.Info("app deleted", "app", app)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleRotate(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	var req api.RotateCredentialRequest
	if err := decodeBody(r.Body, &req, true); err != nil {
		return err
	}
	grace := s.opts.RotationGrace
	if req.Grace != "" {
		grace, err = time.ParseDuration(req.Grace)
		if err != nil || grace < 0 || grace > maxGrace {
			return api.Invalid("grace", "%q is not a duration in 0s..%s", req.Grace, maxGrace)
		}
	}
	out, err := s.rotateCredential(ctx, app, grace)
	if err != nil {
		return err
	}
	s.log.Info("app credential rotated", "app", app, "grace", grace, "version", out.Version)
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleListInstances(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	a, _, err := s.getApp(ctx, app)
	if err != nil {
		return err
	}
	v, err := s.appView(ctx, &a, 0)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v.Instances)
	return nil
}

func (s *Server) handlePutInstance(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	var spec api.InstanceSpec
	if err := decodeBody(r.Body, &spec, false); err != nil {
		return err
	}
	in, created, err := s.putInstance(ctx, app, spec)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	s.log.Info("instance set", "app", app, "instance", in.ID, "addr", in.Addr, "weight", in.Weight, "created", created)
	writeJSON(w, status, in)
	return nil
}

func (s *Server) handleRemoveInstance(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if err := api.ValidateInstanceID(id); err != nil {
		return err
	}
	if err := s.removeInstance(ctx, app, id); err != nil {
		return err
	}
	s.log.Info("instance removed", "app", app, "instance", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleSetWeight(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if err := api.ValidateInstanceID(id); err != nil {
		return err
	}
	var req api.WeightRequest
	if err := decodeBody(r.Body, &req, false); err != nil {
		return err
	}
	if req.Weight == nil {
		return api.Invalid("weight", "required: an integer in %d..%d", api.MinWeight, api.MaxWeight)
	}
	in, rev, err := s.setWeight(ctx, app, id, *req.Weight)
	if err != nil {
		return err
	}
	s.log.Info("weight set", "app", app, "instance", id, "weight", in.Weight, "rev", rev)
	writeJSON(w, http.StatusOK, in)
	return nil
}

func (s *Server) handleGetTopology(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	t, _, err := s.getTopology(ctx)
	if err != nil {
		return err
	}
	if t == nil {
		return errorf(ErrNotFound, "no global topology is set")
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

// decodeTopology reads and validates a topology document.
func decodeTopology(r *http.Request) (*topology.Topology, error) {
	var t topology.Topology
	if err := decodeBody(r.Body, &t, false); err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

func (s *Server) handlePutTopology(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	t, err := decodeTopology(r)
	if err != nil {
		return err
	}
	rev, err := s.setTopology(ctx, t)
	if err != nil {
		return err
	}
	s.log.Info("global topology set", "clusters", len(t.Clusters), "routes", len(t.Routes), "rev", rev)
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (s *Server) handleDeleteTopology(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if _, err := s.setTopology(ctx, nil); err != nil {
		return err
	}
	s.log.Info("global topology cleared")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleGetAppTopology(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	a, _, err := s.getApp(ctx, app)
	if err != nil {
		return err
	}
	if a.Topology == nil {
		return errorf(ErrNotFound, "app %q has no topology of its own (it uses the global one)", app)
	}
	writeJSON(w, http.StatusOK, a.Topology)
	return nil
}

func (s *Server) handlePutAppTopology(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	t, err := decodeTopology(r)
	if err != nil {
		return err
	}
	if err := s.setAppTopology(ctx, app, t); err != nil {
		return err
	}
	s.log.Info("app topology set", "app", app, "clusters", len(t.Clusters), "routes", len(t.Routes))
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (s *Server) handleDeleteAppTopology(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	if err := s.setAppTopology(ctx, app, nil); err != nil {
		return err
	}
	s.log.Info("app topology cleared", "app", app)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleConfig answers GET /v1/apps/{app}/config[?after=V[&wait=D]]: the
// app's config at once without after, or as soon as its version differs
// from V (greater, or smaller after the store was reset), else 304 after
// the wait.
func (s *Server) handleConfig(w http.ResponseWriter, r *http.Request) {
	if err := s.serveConfig(w, r); err != nil {
		s.writeError(w, r, err)
	}
}

func (s *Server) serveConfig(w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var after uint64
	poll := q.Has("after")
	if poll {
		after, err = strconv.ParseUint(q.Get("after"), 10, 64)
		if err != nil {
			return api.Invalid("after", "%q is not a config version (a decimal integer)", q.Get("after"))
		}
	}
	wait := s.opts.LongPollWait
	if q.Has("wait") {
		wait, err = time.ParseDuration(q.Get("wait"))
		if err != nil || wait <= 0 || wait > api.MaxWait {
			return api.Invalid("wait", "%q is not a duration in (0s, %s]", q.Get("wait"), api.MaxWait)
		}
	}
	actx, cancel := context.WithTimeout(r.Context(), s.opts.StoreTimeout)
	who, err := s.authorize(actx, r, app)
	cancel()
	if err != nil {
		return err
	}
	// Each read checks the credential again (withCredentials, against the
	// app record of that read): one revoked while the poll waited must
	// not be answered with the config, which holds the new credential for
	// holders of the old one.
	read := func(appCh, allCh <-chan struct{}, fresh bool) (api.AppConfig, bool, error) {
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.StoreTimeout)
		defer cancel()
		return s.cachedAppConfig(ctx, app, who, appCh, allCh, fresh)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for first := true; ; first = false {
		appCh, allCh := s.hub.wait(app)
		// A plain GET is answered from a read of its own, and so is a new
		// long poll whose shared read would be the answer: a write made
		// before the request may not have reached the hub yet
		// (configcache.go). A woken poll may share.
		cfg, shared, err := read(appCh, allCh, first && !poll)
		if err == nil && first && shared && cfg.Version != after {
			cfg, _, err = read(appCh, allCh, true)
		}
		if err != nil {
			return err
		}
		if !poll || cfg.Version != after {
			w.Header().Set(api.VersionHeader, strconv.FormatUint(cfg.Version, 10))
			writeJSON(w, http.StatusOK, cfg)
			return nil
		}
		switch s.park(r.Context(), appCh, allCh, timer.C) {
		case parkChanged:
			continue
		case parkTimeout:
			w.Header().Set(api.VersionHeader, strconv.FormatUint(cfg.Version, 10))
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusNotModified)
			return nil
		case parkStopping:
			return ErrShuttingDown
		default:
			return nil // the client went away
		}
	}
}

// parkEnd is how a parked long poll ended.
type parkEnd int

const (
	parkChanged  parkEnd = iota // the app's config may have changed: read it again
	parkTimeout                 // the wait is over: 304
	parkStopping                // Shutdown: 503
	parkGone                    // the client went away
)

// park waits for a change or the end of the long poll; LongPolls counts it
// meanwhile.
func (s *Server) park(ctx context.Context, appCh, allCh <-chan struct{}, timeout <-chan time.Time) parkEnd {
	s.parked.Add(1)
	defer s.parked.Add(-1)
	select {
	case <-appCh:
		return parkChanged
	case <-allCh:
		return parkChanged
	case <-timeout:
		return parkTimeout
	case <-s.stopping:
		return parkStopping
	case <-ctx.Done():
		return parkGone
	}
}

// LongPolls returns how many config long polls are waiting for a change
// right now: roughly, how many sidecars are connected to this replica.
func (s *Server) LongPolls() int { return int(s.parked.Load()) }

// jsonErrors turns the mux's plain-text 404 and 405 answers into the
// API's JSON error body.
func jsonErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&errorRewriter{ResponseWriter: w, r: r}, r)
	})
}

type errorRewriter struct {
	http.ResponseWriter
	r         *http.Request
	rewritten bool
}

func (w *errorRewriter) WriteHeader(status int) {
	if (status == http.StatusNotFound || status == http.StatusMethodNotAllowed) &&
		strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		w.rewritten = true
		w.Header().Del("X-Content-Type-Options")
		body := api.ErrorBody{Code: api.CodeNotFound, Message: fmt.Sprintf("no route %s %s", w.r.Method, w.r.URL.Path)}
		if status == http.StatusMethodNotAllowed {
			body = api.ErrorBody{Code: api.CodeNotAllowed, Message: fmt.Sprintf("%s is not allowed on %s (allowed: %s)", w.r.Method, w.r.URL.Path, w.Header().Get("Allow"))}
		}
		writeJSON(w.ResponseWriter, status, body)
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *errorRewriter) Write(b []byte) (int, error) {
	if w.rewritten {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *errorRewriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// recoverer answers a panicking handler with 500 INTERNAL and logs it,
// instead of dropping the connection.
func recoverer(next http.Handler, log interface {
	Error(msg string, args ...any)
}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", v)
				writeJSON(w, http.StatusInternalServerError, api.ErrorBody{Code: api.CodeInternal, Message: "internal error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}
