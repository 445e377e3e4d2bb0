package ctrlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
)

// Instance leases (docs/ctrlplane.md, "Self-registration and leases").
//
// A sidecar registers its own instance and renews a lease on it with PUT
// /v1/apps/{app}/lease. The lease lives under its own key,
// leases/{app}/{instance id}, holding its expiry: a renewal writes only
// that key, which the hub ignores, so renewals do not change the app's
// config version and wake no sidecar. The instance's state in the app
// record (Leased, Offline) changes only on a transition: a registration
// that creates or adopts the instance or brings it back online, and the
// sweeper marking it offline once its lease has lapsed. Those are writes of
// apps/{app}, which the watch turns into a push, like a weight change.
//
// The expiry is a stored time checked against the server's clock (Options.Now,
// injected by tests), the same with bbolt and etcd. An etcd lease on the
// key was considered: it would delete the key on time without a sweeper,
// but something must still rewrite apps/{app} to push the change, the bbolt
// store would need the sweeper anyway, and a stored expiry lets a test move
// a clock instead of waiting. Every replica sweeps; the app record's
// compare-and-swap makes them agree, and a replica whose clock is ahead by
// d marks instances offline up to d early (keep replicas' clocks in sync).
const leasePrefix = "leases/"

func leaseKey(app, id string) string { return leasePrefix + app + "/" + id }

// Defaults of the lease options.
const (
	// DefaultLeaseTTL is how long a registration or renewal keeps an
	// instance online; sidecars renew every third of it.
	DefaultLeaseTTL = 15 * time.Second
	// MinLeaseTTL is the shortest LeaseTTL New accepts.
	MinLeaseTTL = 300 * time.Millisecond
)

// leaseRecord is one lease as stored under leases/{app}/{id}.
type leaseRecord struct {
	Addr     string    `json:"addr"`
	LastSeen time.Time `json:"last_seen"`
	Expires  time.Time `json:"expires"`
}

// instanceByAddr finds the instance whose forwarding address is addr: the
// one a sidecar advertising addr registers as.
func (a *appRecord) instanceByAddr(addr string) (int, bool) {
	i := slices.IndexFunc(a.Instances, func(in api.Instance) bool { return in.Addr == addr })
	return i, i >= 0
}

// renewLease registers the sidecar that advertises req.Addr as an instance
// of app and extends its lease (see api.LeaseRequest).
func (s *Server) renewLease(ctx context.Context, app string, req api.LeaseRequest) (api.Lease, error) {
	if err := req.Validate(); err != nil {
		return api.Lease{}, err
	}
	a, _, err := s.getApp(ctx, app)
	if err != nil {
		return api.Lease{}, err
	}
	id := req.Addr
	i, found := a.instanceByAddr(req.Addr)
	if found {
		id = a.Instances[i].ID
	} else if j, taken := a.instance(id); taken {
		return api.Lease{}, errorf(ErrExists, "app %q has an instance %q with another address (%s); remove it or give it another id", app, id, a.Instances[j].Addr)
	}
	now := s.now().UTC()
	rec := leaseRecord{Addr: req.Addr, LastSeen: now, Expires: now.Add(s.opts.LeaseTTL)}
	if err := s.putLease(ctx, leaseKey(app, id), rec); err != nil {
		return api.Lease{}, err
	}
	out := api.Lease{App: app, InstanceID: id, Addr: req.Addr, TTL: s.opts.LeaseTTL.String(),
		RenewEvery: (s.opts.LeaseTTL / 3).String(), Expires: rec.Expires}
	if found && !registrationChanges(a.Instances[i], req) {
		out.Weight = a.Instances[i].Weight
		return out, nil
	}
	var was api.Instance
	_, _, err = s.updateApp(ctx, app, func(a *appRecord) error {
		i, found := a.instanceByAddr(req.Addr)
		out.Created = !found
		switch {
		case found:
			was = a.Instances[i]
		case len(a.Instances) >= api.MaxInstances:
			return api.Invalid("", "app %q has %d instances, the most allowed", app, api.MaxInstances)
		default:
			j, taken := a.instance(id)
			if taken {
				return errorf(ErrExists, "app %q has an instance %q with another address (%s)", app, id, a.Instances[j].Addr)
			}
			a.Instances = slices.Insert(a.Instances, j, api.Instance{ID: id, Addr: req.Addr, Weight: api.DefaultWeight})
			i = j
			was = api.Instance{}
		}
		in := &a.Instances[i]
		in.Leased, in.Offline, in.SidecarVersion = true, false, req.SidecarVersion
		if len(req.Labels) > 0 {
			if in.Labels == nil {
				in.Labels = map[string]string{}
			}
			maps.Copy(in.Labels, req.Labels)
			if len(in.Labels) > api.MaxLabels {
				return api.Invalid("labels", "the instance would have %d labels; at most %d are allowed", len(in.Labels), api.MaxLabels)
			}
		}
		out.InstanceID, out.Weight = in.ID, in.Weight
		return nil
	})
	if err != nil {
		return api.Lease{}, err
	}
	switch {
	case out.Created:
		s.log.Info("instance registered itself", "app", app, "instance", out.InstanceID, "addr", req.Addr, "weight", out.Weight, "sidecar_version", req.SidecarVersion)
	case was.Offline:
		s.log.Info("instance back online", "app", app, "instance", out.InstanceID, "addr", req.Addr, "weight", out.Weight)
	default:
		s.log.Info("instance registration updated", "app", app, "instance", out.InstanceID, "addr", req.Addr, "leased_before", was.Leased)
	}
	return out, nil
}

// registrationChanges reports whether registering req changes in's record
// (else only the lease key is written).
func registrationChanges(in api.Instance, req api.LeaseRequest) bool {
	if !in.Leased || in.Offline || in.SidecarVersion != req.SidecarVersion {
		return true
	}
	for k, v := range req.Labels {
		if cur, ok := in.Labels[k]; !ok || cur != v {
			return true
		}
	}
	return false
}

// putLease writes a lease record, whatever was there.
func (s *Server) putLease(ctx context.Context, key string, rec leaseRecord) error {
	value, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	for range maxUpdateAttempts {
		var prev uint64
		e, err := s.store.Get(ctx, key)
		switch {
		case err == nil:
			prev = e.ModRev
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		_, err = s.store.Put(ctx, key, value, prev)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return err
	}
	return errorf(ErrBusy, "lease %s: too many concurrent writes to it; retry", key)
}

// leases returns the stored leases under prefix (leasePrefix, or one app's
// leasePrefix+app+"/") by app and instance id, with their ModRevs.
func (s *Server) leases(ctx context.Context, prefix string) (map[string]map[string]storedLease, error) {
	entries, err := s.store.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]storedLease{}
	for _, e := range entries {
		app, id, ok := strings.Cut(strings.TrimPrefix(e.Key, leasePrefix), "/")
		if !ok {
			continue
		}
		var rec leaseRecord
		if err := json.Unmarshal(e.Value, &rec); err != nil {
			return nil, fmt.Errorf("decoding stored lease %q: %w", e.Key, err)
		}
		if out[app] == nil {
			out[app] = map[string]storedLease{}
		}
		out[app][id] = storedLease{rec: rec, rev: e.ModRev}
	}
	return out, nil
}

type storedLease struct {
	rec leaseRecord
	rev uint64
}

// withLeases adds the leases' last renewal and expiry to an operators'
// view of instances.
func withLeases(ins []api.Instance, leases map[string]storedLease) []api.Instance {
	for i := range ins {
		if l, ok := leases[ins[i].ID]; ok && ins[i].Leased {
			ins[i].LastSeen, ins[i].LeaseExpires = l.rec.LastSeen, l.rec.Expires
		}
	}
	return ins
}

// appView is the operators' view of an app, with its leases.
func (s *Server) appView(ctx context.Context, a *appRecord, version uint64) (api.App, error) {
	leases, err := s.leases(ctx, leasePrefix+a.Name+"/")
	if err != nil {
		return api.App{}, err
	}
	v := a.view(version)
	v.Instances = withLeases(v.Instances, leases[a.Name])
	return v, nil
}

// sweepLeases marks offline every leased, online instance whose lease has
// lapsed, and deletes the lapsed leases of instances that are gone. It
// judges no lease in the first LeaseTTL after New, so that sidecars renew
// with a control plane that was down for longer than a lease before any
// is marked offline.
func (s *Server) sweepLeases(ctx context.Context) error {
	now := s.now()
	if now.Before(s.started.Add(s.opts.LeaseTTL)) {
		return nil
	}
	leases, err := s.leases(ctx, leasePrefix)
	if err != nil {
		return err
	}
	entries, err := s.store.List(ctx, appPrefix)
	if err != nil {
		return err
	}
	lapsed := func(app, id string) bool {
		l, ok := leases[app][id]
		return !ok || !now.Before(l.rec.Expires)
	}
	var errs []error
	for _, e := range entries {
		var a appRecord
		if err := json.Unmarshal(e.Value, &a); err != nil {
			errs = append(errs, fmt.Errorf("decoding stored app %q: %w", e.Key, err))
			continue
		}
		var due []string
		for _, in := range a.Instances {
			if in.Leased && !in.Offline && lapsed(a.Name, in.ID) {
				due = append(due, in.ID)
			}
		}
		for id, l := range leases[a.Name] {
			if _, ok := a.instance(id); !ok && !now.Before(l.rec.Expires) {
				// Best effort: a failure leaves it for the next sweep.
				_, _ = s.store.Delete(ctx, leaseKey(a.Name, id), l.rev)
			}
		}
		delete(leases, a.Name)
		if len(due) > 0 {
			errs = append(errs, s.markOffline(ctx, a.Name, due, now))
		}
	}
	for app, ls := range leases { // leases of deleted apps
		for id, l := range ls {
			if !now.Before(l.rec.Expires) {
				_, _ = s.store.Delete(ctx, leaseKey(app, id), l.rev)
			}
		}
	}
	return errors.Join(errs...)
}

// markOffline marks the instances ids of app offline, those whose lease
// is still lapsed when the record is written (a renewal may have come
// since the sweep read it).
func (s *Server) markOffline(ctx context.Context, app string, ids []string, now time.Time) error {
	var marked []string
	_, _, err := s.updateApp(ctx, app, func(a *appRecord) error {
		marked = marked[:0]
		for _, id := range ids {
			i, ok := a.instance(id)
			if !ok || !a.Instances[i].Leased || a.Instances[i].Offline {
				continue
			}
			e, err := s.store.Get(ctx, leaseKey(app, id))
			if err == nil {
				var rec leaseRecord
				if json.Unmarshal(e.Value, &rec) == nil && now.Before(rec.Expires) {
					continue // renewed meanwhile
				}
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			a.Instances[i].Offline = true
			marked = append(marked, id)
		}
		if len(marked) == 0 {
			return errNothingToDo
		}
		return nil
	})
	if errors.Is(err, errNothingToDo) || errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("marking instances of app %q offline: %w", app, err)
	}
	for _, id := range marked {
		s.log.Info("instance offline: its lease lapsed", "app", app, "instance", id)
	}
	return nil
}

// errNothingToDo stops an updateApp that would write nothing.
var errNothingToDo = errors.New("nothing to do")

// runSweeper sweeps leases every Options.LeaseSweep until the server stops.
func (s *Server) runSweeper() {
	t := time.NewTicker(s.opts.LeaseSweep)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.StoreTimeout)
		err := s.sweepLeases(ctx)
		cancel()
		s.traffic.prune(s.now())
		s.sweeps.Add(1)
		if err != nil && s.ctx.Err() == nil {
			s.log.Warn("sweeping instance leases failed; retrying", "err", err)
		}
	}
}

// handleLease answers PUT /v1/apps/{app}/lease, with the app's credential
// or the operator token.
func (s *Server) handleLease(ctx context.Context, w http.ResponseWriter, r *http.Request, app string) error {
	var req api.LeaseRequest
	if err := decodeBody(r.Body, &req, false); err != nil {
		return err
	}
	l, err := s.renewLease(ctx, app, req)
	if err != nil {
		return err
	}
	if req.Traffic != nil {
		s.traffic.record(app, l.InstanceID, req.Traffic, s.now())
	}
	status := http.StatusOK
	if l.Created {
		status = http.StatusCreated
	}
	writeJSON(w, status, l)
	return nil
}
