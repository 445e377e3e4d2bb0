package ctrlplane

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/topology"
)

// Keys in the store (see the package doc, "State").
const (
	appPrefix   = "apps/"
	topologyKey = "topology"
)

func appKey(name string) string { return appPrefix + name }

// maxUpdateAttempts bounds the compare-and-swap retries of one update.
const maxUpdateAttempts = 32

// appRecord is one app as stored under apps/{name}. It holds no
// credential, only what checks one (credentials.go).
type appRecord struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// CredentialHash is the SHA-256 of the current credential,
	// CredentialPublicKey the public key derived from it.
	CredentialHash      string `json:"credential_sha256,omitempty"`
	CredentialPublicKey string `json:"credential_public_key,omitempty"`
	// PreviousHash is the SHA-256 of the credential before the last
	// rotation, valid until PreviousExpires; CredentialSealed is the
	// current credential sealed to that previous one's public key.
	PreviousHash     string    `json:"previous_credential_sha256,omitempty"`
	PreviousExpires  time.Time `json:"previous_expires,omitzero"`
	CredentialSealed string    `json:"credential_sealed,omitempty"`
	// LegacyCredential and LegacyPrevious are the clear-text credentials
	// of a record written before hashing: getApp migrates them at once,
	// and the next write of the record drops them.
	LegacyCredential string             `json:"credential,omitempty"`
	LegacyPrevious   string             `json:"previous_credential,omitempty"`
	RotatedAt        time.Time          `json:"rotated_at,omitzero"`
	Instances        []api.Instance     `json:"instances"`
	Topology         *topology.Topology `json:"topology,omitempty"`
	// Limits are the app's flow-control limits (flowctl.Config as JSON),
	// pushed to its sidecars; nil: none.
	Limits json.RawMessage `json:"limits,omitempty"`
	// Routing are the app's routing rules (routing.go), pushed to its
	// sidecars; nil: none.
	Routing []api.RoutingRule `json:"routing,omitempty"`
}

// topologyRecord is the global topology as stored under "topology". The
// key is never deleted, only set to a null topology, so that its ModRev
// keeps counting towards every app's version.
type topologyRecord struct {
	Topology *topology.Topology `json:"topology"`
}

func (a *appRecord) instance(id string) (int, bool) {
	return slices.BinarySearchFunc(a.Instances, id, func(in api.Instance, id string) int { return strings.Compare(in.ID, id) })
}

// view is the operators' view of the record; version is its config version.
func (a *appRecord) view(version uint64) api.App {
	return api.App{
		Name:                a.Name,
		Version:             version,
		CreatedAt:           a.CreatedAt,
		CredentialRotatedAt: a.RotatedAt,
		Instances:           cloneInstances(a.Instances),
		Topology:            a.Topology,
		Routing:             cloneRules(a.Routing),
	}
}

func cloneRules(in []api.RoutingRule) []api.RoutingRule {
	if len(in) == 0 {
		return nil
	}
	out := make([]api.RoutingRule, len(in))
	for i, r := range in {
		r.Selector = maps.Clone(r.Selector)
		out[i] = r
	}
	return out
}

func cloneInstances(in []api.Instance) []api.Instance {
	out := make([]api.Instance, len(in))
	for i, x := range in {
		x.Labels = maps.Clone(x.Labels)
		out[i] = x
	}
	return out
}

// Credentials look like "mmc1.orders.<43 characters>": the app's name is
// in them, so the control plane can tell an app's credential used in the
// wrong place (403) from a credential it does not know (401) with one
// lookup.
const credentialPrefix = "mmc1."

// credentialApp returns the app a credential claims to belong to.
func credentialApp(cred string) (string, bool) {
	rest, ok := strings.CutPrefix(cred, credentialPrefix)
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 || i == len(rest)-1 {
		return "", false
	}
	return rest[:i], api.ValidateAppName(rest[:i]) == nil
}

// getApp reads an app's record and its ModRev.
func (s *Server) getApp(ctx context.Context, name string) (appRecord, uint64, error) {
	e, err := s.store.Get(ctx, appKey(name))
	if errors.Is(err, store.ErrNotFound) {
		return appRecord{}, 0, errorf(ErrNotFound, "no app %q", name)
	}
	if err != nil {
		return appRecord{}, 0, err
	}
	var a appRecord
	if err := json.Unmarshal(e.Value, &a); err != nil {
		return appRecord{}, 0, fmt.Errorf("decoding stored app %q: %w", name, err)
	}
	if err := a.migrateLegacy(s.now()); err != nil {
		return appRecord{}, 0, fmt.Errorf("stored app %q: %w", name, err)
	}
	return a, e.ModRev, nil
}

// getTopology reads the global topology (nil when unset) and its ModRev
// (0 when it was never set).
func (s *Server) getTopology(ctx context.Context) (*topology.Topology, uint64, error) {
	e, err := s.store.Get(ctx, topologyKey)
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var t topologyRecord
	if err := json.Unmarshal(e.Value, &t); err != nil {
		return nil, 0, fmt.Errorf("decoding the stored topology: %w", err)
	}
	return t.Topology, e.ModRev, nil
}

// updateApp runs a read-modify-write cycle on an app's record: it reads
// the record, lets fn change it, and writes it back only if nobody wrote
// it in between (store compare-and-swap), retrying from the read when
// somebody did. fn may run several times and must only change the record.
// It returns the record written and the write's revision.
func (s *Server) updateApp(ctx context.Context, name string, fn func(a *appRecord) error) (appRecord, uint64, error) {
	for range maxUpdateAttempts {
		a, rev, err := s.getApp(ctx, name)
		if err != nil {
			return appRecord{}, 0, err
		}
		if err := fn(&a); err != nil {
			return appRecord{}, 0, err
		}
		value, err := json.Marshal(&a)
		if err != nil {
			return appRecord{}, 0, err
		}
		newRev, err := s.store.Put(ctx, appKey(name), value, rev)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return appRecord{}, 0, err
		}
		return a, newRev, nil
	}
	return appRecord{}, 0, errorf(ErrBusy, "app %q: too many concurrent writes to it; retry", name)
}

// setTopology replaces the global topology (nil clears it).
func (s *Server) setTopology(ctx context.Context, t *topology.Topology) (uint64, error) {
	value, err := json.Marshal(topologyRecord{Topology: t})
	if err != nil {
		return 0, err
	}
	for range maxUpdateAttempts {
		_, rev, err := s.getTopology(ctx)
		if err != nil {
			return 0, err
		}
		newRev, err := s.store.Put(ctx, topologyKey, value, rev)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return newRev, err
	}
	return 0, errorf(ErrBusy, "the global topology: too many concurrent writes to it; retry")
}

// sharedAppConfig assembles the config of one app. Its version is the newest of
// the ModRevs of the app record, the global topology and the schemas key;
// they only grow (the topology and schemas keys are never deleted), so the
// version does too. The registry is read after the store: see schemas.go,
// "Ordering".
//
// The config is the same for every reader but for the credential fields,
// which withCredentials adds per request; configCache shares it between
// the long polls a change wakes together.
func (s *Server) sharedAppConfig(ctx context.Context, name string) (api.AppConfig, appRecord, error) {
	a, appRev, err := s.getApp(ctx, name)
	if err != nil {
		return api.AppConfig{}, appRecord{}, err
	}
	global, topoRev, err := s.getTopology(ctx)
	if err != nil {
		return api.AppConfig{}, appRecord{}, err
	}
	schemas, schemaRev, err := s.getSchemaState(ctx)
	if err != nil {
		return api.AppConfig{}, appRecord{}, err
	}
	cfg := api.AppConfig{
		App:       a.Name,
		Version:   max(appRev, topoRev, schemaRev),
		Instances: cloneInstances(a.Instances),
		Brokers:   cmp.Or(a.Topology, global),
		Schemas:   s.topicSchemas(schemas.Policies),
		Limits:    a.Limits,
		Routing:   cloneRules(a.Routing),
	}
	if len(schemas.Policies) > 0 {
		cfg.SchemaPolicies = maps.Clone(schemas.Policies)
	}
	if len(schemas.Strategies) > 0 {
		cfg.SchemaStrategies = maps.Clone(schemas.Strategies)
	}
	return cfg, a, nil
}

// listApps returns every app, sorted by name, with its config version.
func (s *Server) listApps(ctx context.Context) ([]api.App, error) {
	entries, err := s.store.List(ctx, appPrefix)
	if err != nil {
		return nil, err
	}
	shared, err := s.sharedRev(ctx)
	if err != nil {
		return nil, err
	}
	leases, err := s.leases(ctx, leasePrefix)
	if err != nil {
		return nil, err
	}
	out := make([]api.App, 0, len(entries))
	for _, e := range entries {
		var a appRecord
		if err := json.Unmarshal(e.Value, &a); err != nil {
			return nil, fmt.Errorf("decoding stored app %q: %w", e.Key, err)
		}
		v := a.view(max(e.ModRev, shared))
		v.Instances = withLeases(v.Instances, leases[a.Name])
		out = append(out, v)
	}
	return out, nil
}

// createApp stores a new app with a fresh credential.
func (s *Server) createApp(ctx context.Context, name string) (api.AppCreated, error) {
	if err := api.ValidateAppName(name); err != nil {
		return api.AppCreated{}, err
	}
	cred := newCredential(name)
	a := appRecord{Name: name, CreatedAt: s.now().UTC(), Instances: []api.Instance{}}
	if err := a.setCredential(cred, time.Time{}); err != nil {
		return api.AppCreated{}, err
	}
	value, err := json.Marshal(&a)
	if err != nil {
		return api.AppCreated{}, err
	}
	rev, err := s.store.Put(ctx, appKey(name), value, 0)
	if errors.Is(err, store.ErrConflict) {
		return api.AppCreated{}, errorf(ErrExists, "app %q exists already", name)
	}
	if err != nil {
		return api.AppCreated{}, err
	}
	shared, err := s.sharedRev(ctx)
	if err != nil {
		return api.AppCreated{}, err
	}
	return api.AppCreated{App: a.view(max(rev, shared)), Credential: cred}, nil
}

// deleteApp removes an app, retrying when it changes under the delete.
func (s *Server) deleteApp(ctx context.Context, name string) error {
	for range maxUpdateAttempts {
		_, rev, err := s.getApp(ctx, name)
		if err != nil {
			return err
		}
		_, err = s.store.Delete(ctx, appKey(name), rev)
		switch {
		case errors.Is(err, store.ErrConflict):
			continue
		case errors.Is(err, store.ErrNotFound):
			return errorf(ErrNotFound, "no app %q", name)
		}
		return err
	}
	return errorf(ErrBusy, "app %q: too many concurrent writes to it; retry", name)
}

// putInstance adds an instance or replaces the one with the same ID. A
// replaced instance keeps its weight unless spec has one, and its lease
// state (a sidecar's registration is not undone by an operator's edit).
func (s *Server) putInstance(ctx context.Context, app string, spec api.InstanceSpec) (api.Instance, bool, error) {
	if err := spec.Validate(); err != nil {
		return api.Instance{}, false, err
	}
	var out api.Instance
	var created bool
	_, _, err := s.updateApp(ctx, app, func(a *appRecord) error {
		in := api.Instance{ID: spec.ID, Addr: spec.Addr, Labels: maps.Clone(spec.Labels), Weight: api.DefaultWeight}
		i, found := a.instance(spec.ID)
		created = !found
		switch {
		case found:
			was := a.Instances[i]
			in.Weight, in.Leased, in.Offline, in.SidecarVersion = was.Weight, was.Leased, was.Offline, was.SidecarVersion
			a.Instances[i] = in
		case len(a.Instances) >= api.MaxInstances:
			return api.Invalid("", "app %q has %d instances, the most allowed", app, api.MaxInstances)
		default:
			a.Instances = slices.Insert(a.Instances, i, in)
		}
		if spec.Weight != nil {
			a.Instances[i].Weight = *spec.Weight
		}
		out = a.Instances[i]
		return nil
	})
	return out, created, err
}

// removeInstance deletes one instance of an app.
func (s *Server) removeInstance(ctx context.Context, app, id string) error {
	_, _, err := s.updateApp(ctx, app, func(a *appRecord) error {
		i, found := a.instance(id)
		if !found {
			return errorf(ErrNotFound, "app %q has no instance %q", app, id)
		}
		a.Instances = slices.Delete(a.Instances, i, i+1)
		return nil
	})
	if err == nil {
		// Best effort: a lease left behind is deleted by the sweeper once
		// it lapses. A sidecar still renewing registers the instance again.
		if e, gerr := s.store.Get(ctx, leaseKey(app, id)); gerr == nil {
			_, _ = s.store.Delete(ctx, leaseKey(app, id), e.ModRev)
		}
	}
	return err
}

// setWeight sets one instance's weight.
func (s *Server) setWeight(ctx context.Context, app, id string, weight int) (api.Instance, uint64, error) {
	if err := api.ValidateWeight(weight); err != nil {
		return api.Instance{}, 0, err
	}
	var out api.Instance
	_, rev, err := s.updateApp(ctx, app, func(a *appRecord) error {
		i, found := a.instance(id)
		if !found {
			return errorf(ErrNotFound, "app %q has no instance %q", app, id)
		}
		a.Instances[i].Weight = weight
		out = a.Instances[i]
		return nil
	})
	return out, rev, err
}

// rotateCredential gives an app a new credential; the old one stays valid
// for grace (not at all when grace is 0). A previous credential still in
// its grace period is dropped.
func (s *Server) rotateCredential(ctx context.Context, app string, grace time.Duration) (api.CredentialRotated, error) {
	now := s.now().UTC()
	cred := newCredential(app)
	a, rev, err := s.updateApp(ctx, app, func(a *appRecord) error {
		var expires time.Time
		if grace > 0 {
			expires = now.Add(grace)
		}
		a.RotatedAt = now
		return a.setCredential(cred, expires)
	})
	if err != nil {
		return api.CredentialRotated{}, err
	}
	shared, err := s.sharedRev(ctx)
	if err != nil {
		return api.CredentialRotated{}, err
	}
	return api.CredentialRotated{App: app, Version: max(rev, shared), Credential: cred, PreviousExpires: a.PreviousExpires}, nil
}

// setAppTopology sets (nil: clears) an app's own topology.
func (s *Server) setAppTopology(ctx context.Context, app string, t *topology.Topology) error {
	_, _, err := s.updateApp(ctx, app, func(a *appRecord) error {
		a.Topology = t
		return nil
	})
	return err
}
