package ctrlplane

import (
	"context"
	"net/http"
	"slices"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
)

// Routing rules per app (docs/routing.md): PUT /v1/apps/{app}/routing with
// an api.Routing replaces them as a whole; they are stored in the app's
// record, so the app's config version grows and its sidecars receive them
// with the push, as they receive weights. An empty list removes them.

func (s *Server) handleGetRouting(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	a, _, err := s.getApp(ctx, app)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.Routing{Rules: nonNilRules(a.Routing)})
	return nil
}

func (s *Server) handlePutRouting(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	var req api.Routing
	if err := decodeBody(r.Body, &req, false); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	_, rev, err := s.updateApp(ctx, app, func(a *appRecord) error {
		a.Routing = slices.Clone(req.Rules)
		return nil
	})
	if err != nil {
		return err
	}
	s.log.Info("app routing set", "app", app, "rules", len(req.Rules), "rev", rev)
	writeJSON(w, http.StatusOK, api.Routing{Rules: nonNilRules(req.Rules)})
	return nil
}

func nonNilRules(rules []api.RoutingRule) []api.RoutingRule {
	if rules == nil {
		return []api.RoutingRule{}
	}
	return rules
}
