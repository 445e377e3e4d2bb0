package sidecarapp

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/msgmesh/msgmesh/flowctl"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/internal/pki"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/forward"
	"github.com/msgmesh/msgmesh/scheduler"
	"github.com/msgmesh/msgmesh/schema"
)

// cpOptions connect the sidecar to the control plane (docs/design.md flows 7, 8).
type cpOptions struct {
	URLs       string // comma-separated control-plane replicas
	App        string
	Credential string // the app's credential (env MSGMESH_APP_CREDENTIAL)
	// Listen is the forwarding listener; Advertise is this sidecar's
	// forwarding address as siblings reach it: its instance id at the
	// control plane.
	Listen          string
	Advertise       string
	DeliveryTimeout time.Duration
	// Labels go with this sidecar's self-registration (--instance-label);
	// nil: none.
	Labels map[string]string
}

// File names in the data directory.
const (
	cpStateFile = "ctrlplane-config.json"
	fwdKeyFile  = "forward-key.pem"
	fwdCertFile = "forward-cert.pem"
	fwdCAFile   = "forward-ca.pem"
)

// controlPlane is one runtime's link to the control plane: the config
// watcher that feeds the scheduler its weights and the sidecar its topics'
// schemas, the forwarding identity (renewed before it expires), the
// forwarder and the forwarding listener.
type controlPlane struct {
	opts    cpOptions
	dataDir string
	flow    *flowctl.Controller // receives pushed limits
	log     *slog.Logger
	client  *ctrlclient.Client
	sched   *scheduler.Scheduler
	watcher *ctrlclient.Watcher
	id      *pki.Identity
	fwd     *forward.Forwarder
	srvTLS  *tls.Config
	srv     *forward.Server
	ln      net.Listener
	served  chan struct{} // closed when the forwarding server's Serve returns

	renewStop context.CancelFunc
	renewDone chan struct{}
	leaseStop context.CancelFunc // stops leaseLoop; nil before serve
	leaseDone chan struct{}
	closeOnce sync.Once

	// The watcher's first config may arrive before the Sidecar exists (the
	// saved one, during startControlPlane), later ones on the watcher's
	// goroutine while attach may be running: schemaMu orders them, so the
	// Sidecar always ends up with the newest schemas.
	schemaMu sync.Mutex         // guards schemas and sc; held across SetSchemas
	schemas  *msgmesh.SchemaSet // the newest pushed; nil before the first config
	sc       *msgmesh.Sidecar   // set by attach
	boot     string             // random, new with every sc: the traffic reports' boot id
	started  time.Time          // when sc was attached
}

// startControlPlane connects to the control plane: it starts watching the
// app's config (the last one saved in the data directory is applied first,
// so a sidecar that cannot reach the control plane keeps its weights),
// obtains a forwarding certificate (reusing a saved one that is still
// good), and opens the forwarding listener, or adopts inherited.
func startControlPlane(ctx context.Context, opts cpOptions, dataDir string, inherited *os.File, flow *flowctl.Controller, log *slog.Logger) (*controlPlane, error) {
	cp := &controlPlane{opts: opts, dataDir: dataDir, flow: flow, log: log.With("component", "ctrlplane")}
	fail := func(err error) (*controlPlane, error) {
		cp.close(context.Background())
		return nil, err
	}
	var err error
	if cp.client, err = ctrlclient.New(opts.URLs, opts.Credential); err != nil {
		return fail(fmt.Errorf("control plane: %w", err))
	}
	cp.sched = scheduler.New(opts.Advertise)
	cp.watcher, err = cp.client.Watch(ctx, opts.App, cp.apply,
		ctrlclient.WithStateFile(filepath.Join(dataDir, cpStateFile)), ctrlclient.WithLogger(cp.log))
	if err != nil {
		return fail(fmt.Errorf("control plane: watch %s: %w", opts.App, err))
	}
	caPEM, err := cp.identity(ctx)
	if err != nil {
		return fail(err)
	}
	srvTLS, err := pki.ServerTLS(cp.id, caPEM)
	if err != nil {
		return fail(err)
	}
	cliTLS, err := pki.ClientTLS(cp.id, caPEM)
	if err != nil {
		return fail(err)
	}
	if cp.fwd, err = forward.NewForwarder(forward.ClientConfig{TLS: cliTLS, App: opts.App, Name: opts.Advertise,
		Timeout: opts.DeliveryTimeout + 5*time.Second, Logger: log}); err != nil {
		return fail(err)
	}
	cp.srvTLS = srvTLS
	if inherited != nil {
		cp.ln, err = net.FileListener(inherited)
		inherited.Close()
	} else {
		cp.ln, err = net.Listen("tcp", opts.Listen)
	}
	if err != nil {
		return fail(fmt.Errorf("forwarding listener: %w", err))
	}
	rctx, stop := context.WithCancel(context.Background())
	cp.renewStop, cp.renewDone = stop, make(chan struct{})
	go func() { defer close(cp.renewDone); cp.renewLoop(rctx) }()
	return cp, nil
}

// apply takes a pushed app config: the instances' weights go to the
// scheduler and the topics' schemas to the sidecar (once it is attached),
// at once.
func (cp *controlPlane) apply(cfg api.AppConfig) {
	cp.applySchemas(cfg.Schemas, cfg.SchemaPolicies, cfg.SchemaStrategies)
	cp.applyLimits(cfg.Limits)
	ins := make([]scheduler.Instance, 0, len(cfg.Instances))
	offline := 0
	for _, in := range cfg.Instances {
		id := in.Addr
		if id == "" {
			id = in.ID
		}
		ins = append(ins, scheduler.Instance{ID: id, Weight: in.Weight, Offline: in.Offline, Labels: in.Labels})
		if in.Offline {
			offline++
		}
	}
	cp.sched.Apply(ins, schedulerRules(cfg.Routing))
	cp.log.Info("app config applied", "version", cfg.Version, "instances", len(ins), "offline", offline, "own_weight", cp.sched.Weight(), "routing_rules", len(cfg.Routing))
}

// schedulerRules converts the pushed routing rules (docs/routing.md) for
// the scheduler. The control plane validated them; a rule that is neither
// a colour nor a canary rule (a newer kind) is left out.
func schedulerRules(rules []api.RoutingRule) []scheduler.Rule {
	out := make([]scheduler.Rule, 0, len(rules))
	for _, r := range rules {
		sr := scheduler.Rule{Name: r.Name, Group: r.Group, Colour: r.Colour, Selector: r.Selector, Fallback: scheduler.FallbackAnywhere}
		if hold := r.Hold(); hold > 0 {
			sr.Fallback, sr.HoldFor = scheduler.FallbackHold, hold
		}
		switch {
		case r.Colour != "":
		case r.Percent != nil:
			sr.Percent = *r.Percent
		default:
			continue
		}
		out = append(out, sr)
	}
	return out
}

// identity loads the saved forwarding key and certificate, or asks the
// control plane for new ones, and returns the CA to verify siblings with.
func (cp *controlPlane) identity(ctx context.Context) ([]byte, error) {
	path := func(n string) string { return filepath.Join(cp.dataDir, n) }
	keyPEM, kerr := os.ReadFile(path(fwdKeyFile))
	certPEM, cerr := os.ReadFile(path(fwdCertFile))
	caPEM, aerr := os.ReadFile(path(fwdCAFile))
	if kerr == nil && cerr == nil && aerr == nil {
		if id, err := pki.NewIdentity(cp.opts.App, certPEM, keyPEM); err == nil && time.Until(id.NotAfter()) > time.Hour {
			cp.id = id
			return caPEM, nil
		}
	}
	certPEM, keyPEM, caPEM, err := cp.issue(ctx)
	if err != nil {
		return nil, err
	}
	if cp.id, err = pki.NewIdentity(cp.opts.App, certPEM, keyPEM); err != nil {
		return nil, err
	}
	return caPEM, nil
}

// issue gets a new certificate for a new key and saves all three files.
func (cp *controlPlane) issue(ctx context.Context) (certPEM, keyPEM, caPEM []byte, err error) {
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(cp.opts.App)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	got, err := cp.client.IssueCertificate(ctx, cp.opts.App, csrPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("control plane: forwarding certificate: %w", err)
	}
	certPEM, caPEM = []byte(got.Certificate), []byte(got.CA)
	for name, b := range map[string][]byte{fwdKeyFile: keyPEM, fwdCertFile: certPEM, fwdCAFile: caPEM} {
		if err := os.WriteFile(filepath.Join(cp.dataDir, name), b, 0o600); err != nil {
			return nil, nil, nil, fmt.Errorf("saving %s: %w", name, err)
		}
	}
	return certPEM, keyPEM, caPEM, nil
}

// renewLoop renews the certificate once two thirds of its life are over.
func (cp *controlPlane) renewLoop(ctx context.Context) {
	for {
		left := time.Until(cp.id.NotAfter())
		wait := max(left-left/3*2, time.Minute) // renew with a third of the life left
		if left < 8*time.Hour {
			wait = min(wait, left/3)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		certPEM, keyPEM, _, err := cp.issue(ctx)
		if err == nil {
			err = cp.id.Update(certPEM, keyPEM)
		}
		if err != nil {
			cp.log.Warn("renewing the forwarding certificate failed; retrying", "err", err)
			continue
		}
		cp.log.Info("forwarding certificate renewed", "not_after", cp.id.NotAfter())
	}
}

// forwarding is the sidecar's half of the wiring.
func (cp *controlPlane) forwarding() *msgmesh.Forwarding {
	return &msgmesh.Forwarding{App: cp.opts.App, Scheduler: cp.sched, Forwarder: cp.fwd}
}

// applySchemas converts the pushed schemas (by subject) and the topics'
// own policies and subject name strategies, and hands them to the sidecar
// if it is attached, else keeps them for attach. Unchanged schemas are not
// handed over again.
func (cp *controlPlane) applySchemas(pushed map[string]api.TopicSchema, policies, strategies map[string]string) {
	parse := func(topic, p string) schema.Policy {
		pol, err := schema.ParsePolicy(p)
		if err != nil {
			cp.log.Warn("unknown schema policy pushed; enforcing the schema", "topic", topic, "policy", p)
			return schema.PolicyEnforce
		}
		return pol
	}
	next := msgmesh.SchemaSet{Subjects: make(map[string]msgmesh.TopicSchema, len(pushed))}
	for key, ts := range pushed {
		subject := cmp.Or(ts.Subject, key)
		vs := make([]schema.SchemaVersion, len(ts.Versions))
		for i, v := range ts.Versions {
			vs[i] = schema.SchemaVersion{Subject: subject, Version: v.Version, ID: v.ID, Schema: v.Schema}
		}
		// The validator takes the last version as the latest.
		slices.SortFunc(vs, func(a, b schema.SchemaVersion) int { return a.Version - b.Version })
		next.Subjects[subject] = msgmesh.TopicSchema{Schemas: schema.TopicSchemas{Subject: subject, Versions: vs}, Policy: parse(subject, ts.Policy)}
	}
	if len(policies) > 0 {
		next.Policies = make(map[string]schema.Policy, len(policies))
		for topic, p := range policies {
			next.Policies[topic] = parse(topic, p)
		}
	}
	for topic, st := range strategies {
		if _, err := schema.ParseStrategy(st); err != nil {
			cp.log.Warn("unknown subject name strategy pushed; using topic_name", "topic", topic, "strategy", st)
			continue
		}
		if next.Strategies == nil {
			next.Strategies = map[string]string{}
		}
		next.Strategies[topic] = st
	}
	cp.schemaMu.Lock()
	defer cp.schemaMu.Unlock()
	if cp.schemas != nil && sameSchemas(*cp.schemas, next) {
		return
	}
	cp.schemas = &next
	if cp.sc != nil {
		cp.sc.SetSchemaSet(next)
	}
	cp.log.Info("topic schemas applied", "subjects", len(next.Subjects), "sidecar_attached", cp.sc != nil)
}

func sameSchemas(a, b msgmesh.SchemaSet) bool {
	return maps.Equal(a.Policies, b.Policies) && maps.Equal(a.Strategies, b.Strategies) &&
		maps.EqualFunc(a.Subjects, b.Subjects, func(x, y msgmesh.TopicSchema) bool {
			return x.Policy == y.Policy && x.Schemas.Subject == y.Schemas.Subject && slices.Equal(x.Schemas.Versions, y.Schemas.Versions)
		})
}

// attach hands the newest pushed schemas to sc, and every later push.
// runtime.start calls it before sc.Start, so that the first publish sc
// serves (on an inherited connection too) is validated.
func (cp *controlPlane) attach(sc *msgmesh.Sidecar) {
	cp.schemaMu.Lock()
	defer cp.schemaMu.Unlock()
	if cp.sc == sc {
		return
	}
	cp.sc, cp.boot, cp.started = sc, newBootID(), time.Now().UTC()
	if cp.schemas != nil {
		sc.SetSchemaSet(*cp.schemas)
	}
}

// prepare builds the forwarding listener's server, delivering to sc (and
// attaches sc, if that was not done yet); serve starts it.
func (cp *controlPlane) prepare(sc *msgmesh.Sidecar) error {
	cp.attach(sc)
	srv, err := forward.NewServer(forward.ServerConfig{TLS: cp.srvTLS, App: cp.opts.App, Deliverer: sc, Logger: cp.log})
	if err != nil {
		return err
	}
	cp.srv = srv
	return nil
}

// serve starts the server prepare built on the forwarding listener, then
// registers this sidecar's instance at the control plane.
func (cp *controlPlane) serve() {
	srv := cp.srv
	cp.served = make(chan struct{})
	go func() {
		defer close(cp.served)
		if err := srv.Serve(cp.ln); err != nil {
			cp.log.Error("forwarding listener stopped", "err", err)
		}
	}()
	cp.log.Info("forwarding listener serving", "addr", cp.ln.Addr().String(), "advertise", cp.opts.Advertise)
	// Register only now that siblings can reach the listener.
	lctx, stop := context.WithCancel(context.Background())
	cp.leaseStop, cp.leaseDone = stop, make(chan struct{})
	go func() { defer close(cp.leaseDone); cp.leaseLoop(lctx) }()
}

// leaseRetry bounds the wait before retrying a failed lease renewal, so a
// sidecar is back online soon after the control plane is.
const leaseRetry = 2 * time.Second

// leaseLoop registers this sidecar's instance (its --forward-advertise
// address) at the control plane and renews the lease as often as the
// control plane asks, until ctx ends. It presents the newest credential the
// watcher saw, so renewals follow a credential rotation, and falls back to
// MSGMESH_APP_CREDENTIAL when that one is refused (as the watcher does). If renewals stop
// (the process is killed, or cut off from the control plane) the lease
// lapses and the control plane marks the instance offline: its siblings
// stop forwarding to it. Registration never changes the instance's weight.
func (cp *controlPlane) leaseLoop(ctx context.Context) {
	req := api.LeaseRequest{Addr: cp.opts.Advertise, Labels: cp.opts.Labels, SidecarVersion: sidecarVersion()}
	every := leaseRetry // until the control plane says
	failing, registered := false, false
	for {
		req.Traffic = cp.trafficReport(ctx)
		cred := ""
		if last, ok := cp.watcher.Last(); ok {
			cred = last.Credential
		}
		rctx, cancel := context.WithTimeout(ctx, every+5*time.Second)
		l, err := cp.client.RenewLease(rctx, cp.opts.App, cred, req)
		if ae, ok := errors.AsType[*ctrlclient.APIError](err); ok && ae.Status == http.StatusUnauthorized && cred != "" {
			l, err = cp.client.RenewLease(rctx, cp.opts.App, "", req)
		}
		cancel()
		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				cp.log.Warn("registering this instance at the control plane failed; retrying (siblings stop forwarding here once its lease lapses)", "addr", req.Addr, "err", err)
			}
			failing = true
			wait = min(every, leaseRetry)
		default:
			if d, perr := time.ParseDuration(l.RenewEvery); perr == nil && d > 0 {
				every = d
			}
			if failing || l.Created || !registered {
				cp.log.Info("instance registered at the control plane", "instance", l.InstanceID, "addr", l.Addr,
					"weight", l.Weight, "created", l.Created, "ttl", l.TTL, "renew_every", l.RenewEvery)
			}
			failing, registered = false, true
			wait = every
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// newBootID returns a random id for one run of a Sidecar.
func newBootID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// trafficReport is what the next lease renewal says about this sidecar's
// traffic: its counters since the Sidecar started and the registrations
// it serves, with each topic's cluster (docs/ctrlplane.md, "Traffic
// reports"). Nil before a Sidecar is attached. Consumer lag is in it
// where the broker gives it cheaply (NATS JetStream: one consumer info
// request per group and topic).
func (cp *controlPlane) trafficReport(ctx context.Context) *api.TrafficReport {
	cp.schemaMu.Lock()
	sc, boot, started := cp.sc, cp.boot, cp.started
	cp.schemaMu.Unlock()
	if sc == nil {
		return nil
	}
	st := sc.Stats()
	r := &api.TrafficReport{Boot: boot, Started: started, InFlight: st.InFlight, Counters: st.TrafficCounters, Rules: st.Rules}
	if len(r.Rules) > api.MaxReportRules {
		r.Rules = nil // renamed rules piled up; the counters go without them rather than be refused
	}
	regs, err := sc.Registrations()
	if err != nil {
		cp.log.Warn("listing the registrations for the traffic report failed; sending the counters only", "err", err)
		return r
	}
	lags := make(map[[2]string]int64)
	for _, l := range sc.ConsumerLag(ctx) {
		lags[[2]string{l.Group, l.Topic}] = l.Lag
	}
	n := 0
	for _, reg := range regs {
		a := api.AppBindings{App: reg.App}
		for _, b := range reg.Produce {
			a.Produces = append(a.Produces, api.TopicCluster{Topic: b.Topic, Cluster: sc.ClusterOf(b.Topic)})
		}
		for _, b := range reg.Consume {
			gb := api.GroupBinding{Group: b.Group, Topic: b.Topic, Cluster: sc.ClusterOf(b.Topic)}
			if n, ok := lags[[2]string{b.Group, b.Topic}]; ok {
				gb.Lag = &n
			}
			a.Consumes = append(a.Consumes, gb)
		}
		if n += 1 + len(a.Produces) + len(a.Consumes); n > api.MaxReportBindings {
			break // the control plane keeps no more; the counters still go
		}
		r.Apps = append(r.Apps, a)
	}
	return r
}

// sidecarVersion is the msgmesh module version this binary was built
// from, as Go records it ("(devel)" for a build from a work tree).
func sidecarVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return strings.ReplaceAll(bi.Main.Version, " ", "_")
	}
	return "unknown"
}

// listenerFile duplicates the forwarding listener for a successor.
func (cp *controlPlane) listenerFile() (*os.File, error) {
	return core.FileOf(cp.ln)
}

// close stops everything the control-plane link runs. Safe to call more
// than once and on a half-started link.
func (cp *controlPlane) close(ctx context.Context) {
	cp.closeOnce.Do(func() {
		if cp.leaseStop != nil {
			cp.leaseStop()
			<-cp.leaseDone
		}
		if cp.served != nil {
			_ = cp.srv.Shutdown(ctx)
			<-cp.served
		} else if cp.ln != nil {
			_ = cp.ln.Close()
		}
		if cp.fwd != nil {
			_ = cp.fwd.Close()
		}
		if cp.renewStop != nil {
			cp.renewStop()
			<-cp.renewDone
		}

		if cp.watcher != nil {
			cp.watcher.Stop()
		}
	})
}

// applyLimits applies flow-control limits the control plane pushes for the
// app. While the control plane sets limits they replace the config file's;
// none pushed leaves the file's in force.
func (cp *controlPlane) applyLimits(raw json.RawMessage) {
	if len(raw) == 0 || cp.flow == nil {
		return
	}
	var cfg flowctl.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		cp.log.Error("pushed limits do not decode; the old ones stay", "err", err)
		return
	}
	if err := cp.flow.Apply(cfg); err != nil {
		cp.log.Error("pushed limits refused; the old ones stay", "err", err)
		return
	}
	cp.log.Info("pushed limits applied", "topics", len(cfg.Topics), "groups", len(cfg.Groups))
}
