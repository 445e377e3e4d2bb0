package api

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/msgmesh/msgmesh/topology"
)

// Weights. An instance's weight is the share, in percent, of the
// deliveries its sidecar receives from the brokers that it keeps for its
// own app; it forwards the rest to siblings of weight 100 (docs/design.md flow
// 7). 0 drains the instance without unsubscribing it.
const (
	MinWeight     = 0
	MaxWeight     = 100
	DefaultWeight = 100 // the weight of an instance added without one
)

// Instance is one sidecar of an app, as the control plane knows it.
type Instance struct {
	// ID names the instance within its app. It is Addr unless the
	// operator gave another when adding the instance.
	ID string `json:"id"`
	// Addr is host:port of the instance's forwarding listener, where its
	// siblings connect to forward deliveries (docs/design.md flow 8).
	Addr string `json:"addr"`
	// Labels are free-form operator metadata (version=v2, zone=a).
	Labels map[string]string `json:"labels,omitempty"`
	// Weight is 0..100; see MinWeight. Only operators set it: a sidecar
	// registering itself never changes it (a new self-registered instance
	// gets DefaultWeight).
	Weight int `json:"weight"`
	// Leased: the instance's sidecar registered it and renews a lease on
	// it (PUT /v1/apps/{app}/lease), so the control plane knows whether it
	// is alive. An instance only ever added by an operator is not leased
	// and is always online, as before leases existed; it becomes leased
	// when a sidecar advertising its Addr first registers.
	Leased bool `json:"leased,omitempty"`
	// Offline: the instance's lease lapsed (its sidecar stopped renewing:
	// stopped, killed, cut off). Siblings do not forward to an offline
	// instance; its weight is kept for when it comes back. Absent (false)
	// for online and for unleased instances, so a config without the
	// field (an older control plane) means every instance is online.
	Offline bool `json:"offline,omitempty"`
	// SidecarVersion is the msgmesh version the instance's sidecar last
	// registered with; empty for an instance never registered.
	SidecarVersion string `json:"sidecar_version,omitempty"`
	// LastSeen is when the sidecar last renewed its lease, and
	// LeaseExpires when that lease lapses. Both are in the operators'
	// views (GET /v1/apps, /v1/apps/{app}, /v1/apps/{app}/instances) only,
	// never in a pushed AppConfig: renewals do not change the config.
	LastSeen     time.Time `json:"last_seen,omitzero"`
	LeaseExpires time.Time `json:"lease_expires,omitzero"`
}

// State is "online", "offline" or, for an instance never registered by
// its sidecar, "static" (online: forwarded to, as every instance was
// before leases).
func (in Instance) State() string {
	switch {
	case in.Offline:
		return StateOffline
	case !in.Leased:
		return StateStatic
	}
	return StateOnline
}

// Instance states (Instance.State).
const (
	StateOnline  = "online"
	StateOffline = "offline"
	StateStatic  = "static"
)

// AppConfig is everything the control plane tells the sidecars of one app:
// the body of GET /v1/apps/{app}/config. A sidecar applies it as a whole.
type AppConfig struct {
	// App is the app's name.
	App string `json:"app"`
	// Version grows with every change that reaches this config (the app's
	// instances, weights, credential or topology override, the global
	// topology, a subject's versions in the schema registry, a topic's
	// schema policy). It is the store's revision of the newest such change, so
	// it only grows, across control-plane restarts and replicas, for as
	// long as the store lives.
	Version uint64 `json:"version"`
	// Instances are the app's sidecars, sorted by ID; never null.
	Instances []Instance `json:"instances"`
	// Brokers is the app's topology override if it has one, else the
	// global topology; nil when neither is set: the sidecar then keeps the
	// topology of its own config file.
	Brokers *topology.Topology `json:"brokers,omitempty"`
	// Credential is the app's current credential, which sidecars present
	// to read this config: the one the reader presented, or, when it
	// presented the previous one, the credential that replaced it, so the
	// sidecar follows a rotation. Empty when read with the operator token:
	// the control plane keeps only hashes of credentials.
	Credential string `json:"credential,omitempty"`
	// PreviousCredential is the credential before the last rotation, when
	// the reader presented it. Until PreviousCredentialExpires (set
	// whenever a previous credential is valid) the control plane still
	// accepts it, so that a rotation does not cut off a sidecar that has
	// not seen the new credential yet.
	PreviousCredential        string    `json:"previous_credential,omitempty"`
	PreviousCredentialExpires time.Time `json:"previous_credential_expires,omitzero"`
	// Schemas are the topics' Avro schemas (docs/design.md flow 9), by
	// subject: every subject of the control plane's schema registry with
	// its live versions and the validation policy of the topic of the same
	// name. Absent when the registry is empty. A topic's value schema is
	// found by its subject name strategy (SchemaStrategies; by default
	// "<topic>-value", else "<topic>"), its key schema is "<topic>-key"
	// (docs/schemas.md).
	Schemas map[string]TopicSchema `json:"schemas,omitempty"`
	// SchemaPolicies are the validation policies of the topics that have
	// one of their own (PolicyWarn, PolicyOff, ...), by topic.
	SchemaPolicies map[string]string `json:"schema_policies,omitempty"`
	// SchemaStrategies are the subject name strategies of the topics that
	// have one of their own (topic_name, topic, record_name,
	// topic_record_name), by topic.
	SchemaStrategies map[string]string `json:"schema_strategies,omitempty"`
	// Limits are the app's flow-control limits (docs/design.md flow 12), a
	// flowctl.Config as JSON, set with PUT /v1/apps/{app}/limits; absent
	// while none are set (the sidecars' files then keep theirs). Raw here
	// so that this package does not import flowctl.
	Limits json.RawMessage `json:"limits,omitempty"`
	// Routing are the app's routing rules (docs/routing.md), set with PUT
	// /v1/apps/{app}/routing; absent while there are none.
	Routing []RoutingRule `json:"routing,omitempty"`
}

// Instance returns the instance with the given ID.
func (c *AppConfig) Instance(id string) (Instance, bool) {
	i, ok := slices.BinarySearchFunc(c.Instances, id, func(in Instance, id string) int { return strings.Compare(in.ID, id) })
	if !ok {
		// Instances are sorted when they come from the control plane; be
		// lenient with hand-built configs.
		i = slices.IndexFunc(c.Instances, func(in Instance) bool { return in.ID == id })
		if i < 0 {
			return Instance{}, false
		}
	}
	return c.Instances[i], true
}

// AcceptsCredential reports whether cred is the app's credential, or its
// previous credential before it expires at now. The comparison does not
// stop early, so its time says nothing about cred.
func (c *AppConfig) AcceptsCredential(cred string, now time.Time) bool {
	ok := cred != "" && ConstantTimeEqual(cred, c.Credential)
	prev := cred != "" && c.PreviousCredential != "" && now.Before(c.PreviousCredentialExpires) &&
		ConstantTimeEqual(cred, c.PreviousCredential)
	return ok || prev
}

// App is an app as operators see it: everything but its credentials.
type App struct {
	Name string `json:"name"`
	// Version is the version of the app's AppConfig.
	Version   uint64    `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	// CredentialRotatedAt is when the credential was last rotated; absent
	// if it never was.
	CredentialRotatedAt time.Time `json:"credential_rotated_at,omitzero"`
	// Instances are sorted by ID; never null.
	Instances []Instance `json:"instances"`
	// Topology is the app's own topology, overriding the global one; nil
	// when the app uses the global topology.
	Topology *topology.Topology `json:"topology,omitempty"`
	// Routing are the app's routing rules (docs/routing.md); absent when
	// it has none.
	Routing []RoutingRule `json:"routing,omitempty"`
}

// CreateAppRequest is the body of POST /v1/apps.
type CreateAppRequest struct {
	Name string `json:"name"`
}

// AppCreated answers POST /v1/apps. This is the only answer that carries
// the app's credential to the operator; rotating it gives a new one.
type AppCreated struct {
	App
	Credential string `json:"credential"`
}

// RotateCredentialRequest is the (optional) body of POST
// /v1/apps/{app}/credential.
type RotateCredentialRequest struct {
	// Grace is how long the previous credential stays valid, a Go
	// duration ("10m", "0s"). Empty: the control plane's default
	// (--rotation-grace, 10m). "0s" revokes it at once: sidecars that hold
	// only the old credential can no longer read their config until they
	// are given the new one.
	Grace string `json:"grace,omitempty"`
}

// CredentialRotated answers POST /v1/apps/{app}/credential.
type CredentialRotated struct {
	App     string `json:"app"`
	Version uint64 `json:"version"`
	// Credential is the new credential.
	Credential string `json:"credential"`
	// PreviousExpires is when the old credential stops working; absent
	// when it stopped at once.
	PreviousExpires time.Time `json:"previous_expires,omitzero"`
}

// InstanceSpec is the body of POST /v1/apps/{app}/instances, which adds an
// instance or replaces the one with the same ID.
type InstanceSpec struct {
	// ID defaults to Addr.
	ID string `json:"id,omitempty"`
	// Addr is required: host:port of the forwarding listener.
	Addr   string            `json:"addr"`
	Labels map[string]string `json:"labels,omitempty"`
	// Weight is 0..100. Absent: a new instance gets DefaultWeight and a
	// replaced one keeps its weight.
	Weight *int `json:"weight,omitempty"`
}

// LeaseRequest is the body of PUT /v1/apps/{app}/lease: a sidecar
// registering its own instance, or renewing its lease. The app's credential
// (or the operator token) is required; it may register only that app's
// instances. The call is idempotent: the first one creates the instance
// (ID Addr, DefaultWeight) or adopts the one an operator added with that
// Addr; every one extends the lease by the control plane's lease TTL and
// brings an offline instance back online. It never changes the weight.
type LeaseRequest struct {
	// Addr is required: the sidecar's --forward-advertise, host:port.
	Addr string `json:"addr"`
	// Labels are merged into the instance's labels: a key given here
	// overwrites the stored value, keys not given keep theirs (operators'
	// labels survive).
	Labels map[string]string `json:"labels,omitempty"`
	// SidecarVersion is the sidecar's msgmesh version, at most
	// MaxVersionLen bytes.
	SidecarVersion string `json:"sidecar_version,omitempty"`
	// Traffic is the sidecar's traffic report, kept in memory by the
	// control plane replica that takes it (docs/ctrlplane.md, "Traffic
	// reports"); nil: none. It never changes the app's config.
	Traffic *TrafficReport `json:"traffic,omitempty"`
}

// MaxVersionLen bounds LeaseRequest.SidecarVersion, in bytes.
const MaxVersionLen = 128

// Lease answers PUT /v1/apps/{app}/lease.
type Lease struct {
	App        string `json:"app"`
	InstanceID string `json:"instance_id"`
	Addr       string `json:"addr"`
	// TTL is how long the lease lasts from this renewal, RenewEvery how
	// often the sidecar should renew it (a third of TTL), as Go durations.
	TTL        string    `json:"ttl"`
	RenewEvery string    `json:"renew_every"`
	Expires    time.Time `json:"expires"`
	// Weight is the instance's weight, as the operator set it.
	Weight int `json:"weight"`
	// Created: this call created the instance.
	Created bool `json:"created,omitempty"`
}

// WeightRequest is the body of PUT /v1/apps/{app}/instances/{id}/weight.
type WeightRequest struct {
	// Weight is required, 0..100.
	Weight *int `json:"weight"`
}

// ErrorBody is every error answer of the API, the same shape as the
// sidecar's HTTP API.
type ErrorBody struct {
	Code    string `json:"error"`   // one of the Code constants
	Message string `json:"message"` // what is wrong, for a person
}

// Error codes: the "error" field of an ErrorBody.
const (
	CodeInvalid      = "INVALID"       // 400: a bad body, parameter or name
	CodeUnauthorized = "UNAUTHORIZED"  // 401: no credential, or not one the control plane knows
	CodeForbidden    = "FORBIDDEN"     // 403: a valid credential that may not do this
	CodeNotFound     = "NOT_FOUND"     // 404: no such app, instance, topology or route
	CodeNotAllowed   = "NOT_ALLOWED"   // 405: the path exists, the method does not
	CodeConflict     = "CONFLICT"      // 409: the app exists already, or a write kept racing others
	CodeTooLarge     = "TOO_LARGE"     // 413: the body is over MaxBodySize
	CodeShuttingDown = "SHUTTING_DOWN" // 503: this replica is stopping; retry (another replica)
	CodeUnavailable  = "UNAVAILABLE"   // 503: the store cannot be reached
	CodeInternal     = "INTERNAL"      // 500: a bug
)

// HTTP details of the config long poll (GET /v1/apps/{app}/config).
const (
	// VersionHeader carries the config's version on 200 and 304 answers.
	VersionHeader = "Msgmesh-Config-Version"
	// DefaultWait is how long the control plane holds a long poll open
	// when the request has no wait parameter.
	DefaultWait = 30 * time.Second
	// MaxWait is the longest wait parameter accepted.
	MaxWait = 5 * time.Minute
)

// MaxBodySize is the largest request body the API reads, in bytes.
const MaxBodySize = 1 << 20

// CertificateRequest asks the control plane to sign a sidecar's forwarding
// key (POST /v1/apps/{app}/certificate, with the app's credential).
type CertificateRequest struct {
	CSR string `json:"csr"` // PEM
}

// Certificate is a signed forwarding certificate naming the app, and the CA
// that siblings verify it against.
type Certificate struct {
	Certificate string    `json:"certificate"` // PEM
	CA          string    `json:"ca"`          // PEM
	NotAfter    time.Time `json:"not_after"`
}

// Validation policies of a topic with a schema (docs/schemas.md): what
// its sidecars do with a published body that does not match.
const (
	PolicyEnforce = "enforce" // refuse it (SCHEMA_INVALID); the default
	PolicyWarn    = "warn"    // publish it anyway, log and count it
	PolicyOff     = "off"     // do not validate
)

// MaxSchemaPolicies is the most topics that may have a policy of their own.
const MaxSchemaPolicies = 10000

// TopicSchema is one topic's entry in AppConfig.Schemas.
type TopicSchema struct {
	// Subject is the registry subject the versions come from: the topic's
	// name.
	Subject string `json:"subject"`
	// Policy is PolicyEnforce, PolicyWarn or PolicyOff.
	Policy string `json:"policy"`
	// Versions are every version of the subject, oldest first; a body may
	// match any of them.
	Versions []SchemaVersion `json:"versions"`
}

// SchemaVersion is one version of a registry subject. Its JSON form is the
// schema registry's answer to GET /subjects/{subject}/versions/{version}
// (Confluent's shape); inside an AppConfig the subject is left out.
type SchemaVersion struct {
	Subject string `json:"subject,omitempty"`
	Version int    `json:"version"`
	// ID is the schema's id, unique across the registry: what the
	// Confluent wire format carries in front of a body.
	ID     int    `json:"id"`
	Schema string `json:"schema"`
}

// LatestVersion asks for the newest version of a subject wherever a
// version number is taken.
const LatestVersion = -1

// CompatibilityResult is the schema registry's answer to a compatibility
// check (POST /compatibility/subjects/{subject}/versions/latest).
type CompatibilityResult struct {
	IsCompatible bool `json:"is_compatible"`
	// Messages say why not: which version, which direction, which field.
	Messages []string `json:"messages"`
}

// SchemaPolicyRequest is the body of PUT /v1/schema-policies/{topic}:
// the topic's validation policy, its subject name strategy, or both; a
// field left out keeps its value.
type SchemaPolicyRequest struct {
	Policy          string `json:"policy,omitempty"`
	SubjectStrategy string `json:"subject_strategy,omitempty"`
}

// SchemaPolicy is a topic's validation policy, the answer of GET and PUT
// /v1/schema-policies/{topic}.
type SchemaPolicy struct {
	Topic  string `json:"topic"`
	Policy string `json:"policy"`
	// SubjectStrategy is how the topic's value schema is found among the
	// subjects; "topic_name" unless set.
	SubjectStrategy string `json:"subject_strategy"`
	// Default: the topic has no policy of its own; Policy is the default,
	// PolicyEnforce.
	Default bool `json:"default,omitempty"`
}
