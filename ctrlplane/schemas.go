package ctrlplane

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/schema"
)

// The schema registry (docs/design.md flow 9, docs/schemas.md) lives in the
// control plane:
//
//   - A schema.Registry over Options.SchemaStore holds the subjects and
//     their versions. It is served at Confluent's paths (/subjects,
//     /schemas/ids, /config, /compatibility) by schema.NewHandler: any
//     valid credential reads, the operator token writes.
//   - Topics' validation policies (enforce, warn, off) live in the
//     control plane's store, under schemasKey, with
//     /v1/schema-policies/{topic}.
//   - Every app's config carries every subject with its versions and
//     policy (AppConfig.Schemas). To push a change, the store key
//     schemasKey is written: by a policy change, and by the registry's
//     OnChange (Changes++) after a subject's versions changed. Its ModRev
//     counts toward every app's config version, and the hub wakes every
//     app's long polls when it changes, as for the global topology.
//
// Ordering: appConfig reads the store revisions before it reads the
// registry, and OnChange writes the key after the registry committed the
// change. So a config with version V holds every registry change that
// bumped the key up to V; a change that comes after the revisions were
// read bumps the key beyond V and is pushed again.

// schemasKey holds the schemasRecord. It is never deleted, so its ModRev
// keeps counting towards every app's config version.
const schemasKey = "schemas"

// schemasRecord is stored under schemasKey.
type schemasRecord struct {
	// Policies are the topics' own policies (api.PolicyWarn, ...); a
	// topic without one enforces its schema.
	Policies map[string]string `json:"policies,omitempty"`
	// Strategies are the topics' own subject name strategies
	// (msgmesh.StrategyRecordName, ...); a topic without one uses
	// topic_name.
	Strategies map[string]string `json:"strategies,omitempty"`
	// Changes counts the registry's changes of subjects' versions. Its
	// only use is to change the key, and so its ModRev.
	Changes uint64 `json:"changes"`
}

// getSchemaState reads the schemasRecord and its ModRev (0: never
// written).
func (s *Server) getSchemaState(ctx context.Context) (schemasRecord, uint64, error) {
	e, err := s.store.Get(ctx, schemasKey)
	if errors.Is(err, store.ErrNotFound) {
		return schemasRecord{}, 0, nil
	}
	if err != nil {
		return schemasRecord{}, 0, err
	}
	var rec schemasRecord
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		return schemasRecord{}, 0, fmt.Errorf("decoding the stored schema policies: %w", err)
	}
	return rec, e.ModRev, nil
}

// updateSchemaState is a compare-and-swap read-modify-write of the
// schemasRecord, retried on conflict (see updateApp). It returns the
// record written and the write's revision.
func (s *Server) updateSchemaState(ctx context.Context, fn func(*schemasRecord) error) (schemasRecord, uint64, error) {
	for range maxUpdateAttempts {
		rec, rev, err := s.getSchemaState(ctx)
		if err != nil {
			return schemasRecord{}, 0, err
		}
		if err := fn(&rec); err != nil {
			return schemasRecord{}, 0, err
		}
		value, err := json.Marshal(&rec)
		if err != nil {
			return schemasRecord{}, 0, err
		}
		newRev, err := s.store.Put(ctx, schemasKey, value, rev)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return schemasRecord{}, 0, err
		}
		return rec, newRev, nil
	}
	return schemasRecord{}, 0, errorf(ErrBusy, "the schema policies: too many concurrent writes to them; retry")
}

// sharedRev is the part of every app's config version that is not the
// app's own: the newest of the global topology's and the schemas' ModRevs.
func (s *Server) sharedRev(ctx context.Context) (uint64, error) {
	_, topoRev, err := s.getTopology(ctx)
	if err != nil {
		return 0, err
	}
	_, schemaRev, err := s.getSchemaState(ctx)
	if err != nil {
		return 0, err
	}
	return max(topoRev, schemaRev), nil
}

// schemasChanged is the registry's OnChange: it bumps schemasKey so that
// every app's config version grows and its sidecars get the subject's new
// versions. It runs on the goroutine of the request that changed the
// registry, after the registry committed the change.
func (s *Server) schemasChanged(subject string) {
	if err := s.bumpSchemas(); err != nil {
		// The change is stored but not pushed: the next request to the
		// registry, or any policy change, pushes it.
		s.bumpPending.Store(true)
		s.log.Error("a schema change could not be pushed to the sidecars; retried with the next schema request", "subject", subject, "err", err)
		return
	}
	s.log.Info("schema subject changed; pushing it to every app", "subject", subject)
}

func (s *Server) bumpSchemas() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.StoreTimeout)
	defer cancel()
	_, _, err := s.updateSchemaState(ctx, func(r *schemasRecord) error {
		r.Changes++
		return nil
	})
	return err
}

// retryPendingBump pushes a registry change whose push failed before.
func (s *Server) retryPendingBump() {
	if !s.bumpPending.CompareAndSwap(true, false) {
		return
	}
	if err := s.bumpSchemas(); err != nil {
		s.bumpPending.Store(true)
		s.log.Error("pushing an earlier schema change failed again", "err", err)
	}
}

// topicSchemas is AppConfig.Schemas: every subject that has versions,
// under the topic of the same name, with the topic's policy; nil when the
// registry is empty. Each subject is a consistent snapshot of its
// versions.
func (s *Server) topicSchemas(policies map[string]string) map[string]api.TopicSchema {
	subjects := s.schemas.Subjects()
	if len(subjects) == 0 {
		return nil
	}
	out := make(map[string]api.TopicSchema, len(subjects))
	for _, subject := range subjects {
		ts, err := s.schemas.TopicSchemas(subject)
		if err != nil {
			continue // deleted since Subjects: its deletion bumps the version again
		}
		vs := make([]api.SchemaVersion, len(ts.Versions))
		for i, v := range ts.Versions {
			vs[i] = api.SchemaVersion{Version: v.Version, ID: v.ID, Schema: v.Schema}
		}
		out[subject] = api.TopicSchema{Subject: subject, Policy: cmp.Or(policies[subject], api.PolicyEnforce), Versions: vs}
	}
	return out
}

// principalKey is the context key of the principal of a schema registry
// request, for the write check of schema.NewHandler.
type principalKey struct{}

// registryPaths are the prefixes of Confluent's Schema Registry API, served
// by schemaRegistry.
var registryPaths = []string{"/subjects", "/subjects/", "/schemas", "/schemas/", "/config", "/config/", "/compatibility/", "/mode", "/mode/"}

// schemaRegistry serves the registry in Confluent's shape: every request
// needs a valid credential (the operator token or any app's credential),
// and writes need the operator token. Errors of this wrapper have
// Confluent's shape too.
func (s *Server) schemaRegistry() http.Handler {
	h := schema.NewHandler(s.schemas, func(r *http.Request) bool {
		who, ok := r.Context().Value(principalKey{}).(principal)
		return ok && who.operator
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.StoreTimeout)
		defer cancel()
		who, err := s.authenticate(ctx, r)
		if err != nil {
			s.writeRegistryError(w, r, err)
			return
		}
		s.retryPendingBump()
		h.ServeHTTP(w, r.WithContext(context.WithValue(ctx, principalKey{}, who)))
	})
}

// writeRegistryError answers err in the schema registry's error shape,
// {"error_code": N, "message": TEXT}, with the status errorCode gives it.
func (s *Server) writeRegistryError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	status, _ := errorCode(err)
	code := 50001 // Confluent: a store error
	switch status {
	case http.StatusUnauthorized:
		code = 40101
		// Confluent clients send Basic credentials (basic.auth.user.info)
		// or a bearer token; offer both.
		w.Header().Add("WWW-Authenticate", `Basic realm="msgmesh-ctrlplane"`)
		w.Header().Add("WWW-Authenticate", `Bearer realm="msgmesh-ctrlplane"`)
	case http.StatusForbidden:
		code = 40301
	case http.StatusServiceUnavailable:
		code = 50002 // Confluent: an operation timed out
		w.Header().Set("Retry-After", "1")
	default:
		s.log.Error("schema registry request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	w.Header().Set("Content-Type", schema.ContentTypeRegistry)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		ErrorCode int    `json:"error_code"`
		Message   string `json:"message"`
	}{code, err.Error()})
}

// pathTopic returns the {topic} path value, checked with the registry's
// subject rule: the topic's subject has its name.
func pathTopic(r *http.Request) (string, error) {
	topic := r.PathValue("topic")
	if err := schema.ValidateSubject(topic); err != nil {
		return "", api.Invalid("topic", "%s", strings.TrimPrefix(err.Error(), "schema: "))
	}
	return topic, nil
}

func (s *Server) handleListSchemaPolicies(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	rec, _, err := s.getSchemaState(ctx)
	if err != nil {
		return err
	}
	out := rec.Policies
	if out == nil {
		out = map[string]string{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleGetSchemaPolicy(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	topic, err := pathTopic(r)
	if err != nil {
		return err
	}
	rec, _, err := s.getSchemaState(ctx)
	if err != nil {
		return err
	}
	p, ok := rec.Policies[topic]
	writeJSON(w, http.StatusOK, api.SchemaPolicy{Topic: topic, Policy: cmp.Or(p, api.PolicyEnforce), Default: !ok,
		SubjectStrategy: cmp.Or(rec.Strategies[topic], schema.StrategyTopicName)})
	return nil
}

func (s *Server) handlePutSchemaPolicy(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	topic, err := pathTopic(r)
	if err != nil {
		return err
	}
	var req api.SchemaPolicyRequest
	if err := decodeBody(r.Body, &req, false); err != nil {
		return err
	}
	if strings.TrimSpace(req.Policy) == "" && req.SubjectStrategy == "" {
		return api.Invalid("policy", "required: enforce, warn or off (or subject_strategy: topic_name, topic, record_name or topic_record_name)")
	}
	var p schema.Policy
	if req.Policy != "" {
		var err error
		if p, err = schema.ParsePolicy(req.Policy); err != nil {
			return api.Invalid("policy", "%q is not a policy; use enforce, warn or off", req.Policy)
		}
	}
	if req.SubjectStrategy != "" {
		if _, err := schema.ParseStrategy(req.SubjectStrategy); err != nil {
			return api.Invalid("subject_strategy", "%q is not a subject name strategy; use topic_name, topic, record_name or topic_record_name", req.SubjectStrategy)
		}
	}
	rec, rev, err := s.updateSchemaState(ctx, func(rec *schemasRecord) error {
		_, hasPolicy := rec.Policies[topic]
		_, hasStrategy := rec.Strategies[topic]
		if !hasPolicy && !hasStrategy && len(rec.Policies)+len(rec.Strategies) >= api.MaxSchemaPolicies {
			return api.Invalid("topic", "%d topics have a policy of their own, the most allowed", api.MaxSchemaPolicies)
		}
		if req.Policy != "" {
			if rec.Policies == nil {
				rec.Policies = map[string]string{}
			}
			rec.Policies[topic] = p.String()
		}
		if req.SubjectStrategy != "" {
			if rec.Strategies == nil {
				rec.Strategies = map[string]string{}
			}
			rec.Strategies[topic] = req.SubjectStrategy
		}
		return nil
	})
	if err != nil {
		return err
	}
	policy := cmp.Or(rec.Policies[topic], api.PolicyEnforce)
	strategy := cmp.Or(rec.Strategies[topic], schema.StrategyTopicName)
	s.log.Info("schema policy set", "topic", topic, "policy", policy, "subject_strategy", strategy, "rev", rev)
	writeJSON(w, http.StatusOK, api.SchemaPolicy{Topic: topic, Policy: policy, SubjectStrategy: strategy})
	return nil
}

func (s *Server) handleDeleteSchemaPolicy(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	topic, err := pathTopic(r)
	if err != nil {
		return err
	}
	_, _, err = s.updateSchemaState(ctx, func(rec *schemasRecord) error {
		_, hasPolicy := rec.Policies[topic]
		_, hasStrategy := rec.Strategies[topic]
		if !hasPolicy && !hasStrategy {
			return errorf(ErrNotFound, "topic %q has no policy of its own (it enforces its schema, found by the topic_name strategy)", topic)
		}
		delete(rec.Policies, topic)
		delete(rec.Strategies, topic)
		return nil
	})
	if err != nil {
		return err
	}
	s.log.Info("schema policy removed", "topic", topic)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
