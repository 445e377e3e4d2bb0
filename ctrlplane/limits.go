package ctrlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/flowctl"
)

// Flow-control limits per app (docs/flow-control.md): PUT
// /v1/apps/{app}/limits with a flowctl.Config as JSON; the app's config
// version grows and its sidecars apply the limits without a restart. An
// empty object lifts them.

func (s *Server) handleGetLimits(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	a, _, err := s.getApp(ctx, app)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	if len(a.Limits) == 0 {
		_, _ = w.Write([]byte("{}\n"))
		return nil
	}
	_, _ = w.Write(append(a.Limits, '\n'))
	return nil
}

func (s *Server) handlePutLimits(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, api.MaxBodySize+1))
	if err != nil {
		return api.Invalid("body", "reading it: %v", err)
	}
	if len(body) > api.MaxBodySize {
		return api.Invalid("body", "over %d bytes", api.MaxBodySize)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var cfg flowctl.Config
	if err := dec.Decode(&cfg); err != nil {
		return api.Invalid("body", "not a flow-control config: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		return api.Invalid("body", "%v", err)
	}
	norm, _ := json.Marshal(cfg)
	if _, _, err := s.updateApp(ctx, app, func(a *appRecord) error {
		a.Limits = norm
		return nil
	}); err != nil {
		return err
	}
	s.log.Info("app limits set", "app", app, "topics", len(cfg.Topics), "groups", len(cfg.Groups))
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(norm, '\n'))
	return nil
}
