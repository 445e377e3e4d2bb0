// Package ctrlplane is the msgmesh control plane (docs/design.md §2, flows 7, 8,
// 9 and 12): the operators' source of truth for apps, their sidecar
// instances (forwarding address, labels, traffic weight 0..100), the
// broker topology (package topology: clusters and topic routes, global
// or per app) and the topics' Avro schemas (package schema's Registry,
// with a validation policy per topic), served over an HTTP/JSON API and a
// web page, and pushed to sidecars by long polling. docs/ctrlplane.md is the operator's and the
// sidecar implementer's reference; cmd/ctrlplane is a thin main around
// Run.
//
// Related packages: ctrlplane/api holds the wire types (AppConfig is what
// sidecars receive), ctrlplane/ctrlclient the Go client and the sidecar's
// Watcher, ctrlplane/store the state (bbolt or etcd).
//
// # HTTP API
//
//	GET    /healthz                                  200 {"status":"ok","long_polls":N}; no credential
//	GET    /v1/apps                                  every app ([]api.App)
//	POST   /v1/apps                                  create {"name"} → 201 api.AppCreated (holds the credential)
//	GET    /v1/apps/{app}                            one app
//	DELETE /v1/apps/{app}                            delete it → 204
//	POST   /v1/apps/{app}/credential                 rotate {"grace":"10m"} → api.CredentialRotated
//	GET    /v1/apps/{app}/instances                  its instances
//	POST   /v1/apps/{app}/instances                  add or replace api.InstanceSpec → 201 or 200
//	DELETE /v1/apps/{app}/instances/{id}             remove → 204
//	PUT    /v1/apps/{app}/instances/{id}/weight      {"weight":N}, 0..100 → api.Instance
//	GET|PUT|DELETE /v1/topology                      the global topology
//	GET|PUT|DELETE /v1/apps/{app}/topology           the app's own topology (overrides the global one)
//	GET    /v1/apps/{app}/config[?after=V[&wait=D]]  api.AppConfig; long poll with after
//	POST   /v1/apps/{app}/certificate                sign a sidecar's forwarding key
//	PUT    /v1/apps/{app}/lease                      a sidecar registers its instance / renews its lease (leases.go), with its traffic report
//	GET    /v1/apps/{app}/traffic                    recent traffic per instance and the reported topology (traffic.go, in memory only)
//	GET    /v1/schema-policies                       topics' own validation policies {"topic":"warn"}
//	GET|PUT|DELETE /v1/schema-policies/{topic}       one topic's policy, {"policy":"warn"}
//	/subjects..., /schemas/ids/..., /config...,
//	/compatibility/...                               the schema registry, Confluent's REST shape (schema.NewHandler)
//	GET    /ui/                                      the web page
//
// Every /v1 call needs "Authorization: Bearer TOKEN" with the operator
// token, except the config read, the certificate and the lease, which also
// take the app's own credential (of the app in the path, never another's). The schema registry's reads take any valid
// credential (the operator token or any app's credential), its writes the
// operator token. Errors are {"error": CODE, "message": TEXT} with the
// codes of package api (the registry's are Confluent's {"error_code": N,
// "message": TEXT}); errorCode is the one table from errors to statuses.
//
// # Push
//
// GET /v1/apps/{app}/config?after=V answers at once with the app's config
// when its version is not V, and otherwise waits up to D (default 30 s,
// --long-poll) for a change and answers 304 Not Modified when none came.
// Versions come from store revisions (see State), so they only grow, and
// any replica sharing the store computes the same version for the same
// state.
//
// A Server watches its store (store.Store.Watch) from New on; the watch
// feeds a hub that wakes the long polls of the app that changed (or of
// every app, for the global topology, the schemas key or a watch Reset). A woken poll reads
// the config again from the store and answers if the version moved. The
// etcd watch sees the writes of every replica, so a write through one
// replica wakes the polls on all of them.
//
// # State
//
// Five kinds of keys: "apps/{name}" holds one app as JSON (credential hashes,
// instances sorted by ID, own topology), "topology" the global topology
// ({"topology": null} once cleared: the key is never deleted, so its
// revision keeps counting), "schemas" the topics' validation policies and
// a counter of schema registry changes (never deleted either); "pki/ca"
// holds the forwarding CA, its key sealed with Options.SealKey if given;
// "leases/{app}/{instance id}" holds an instance's lease expiry, written by
// every renewal and ignored by the hub, so renewals push nothing (an
// instance going offline or coming back is a write of apps/{name}:
// leases.go).
// Every change is a read-modify-write of one key with the store's
// compare-and-swap, retried on conflict, so concurrent writers on several
// replicas lose nothing. An app's config version is
// max(ModRev of apps/{name}, ModRev of topology, ModRev of schemas).
//
// The schema registry itself is a schema.Registry over Options.SchemaStore
// (a bbolt file in the data directory): each Server's own, even when
// replicas share an etcd store. Its OnChange bumps the "schemas" key after
// a subject's versions changed, which pushes every app's config; the
// config is read from the store before the registry, so a config never
// carries a version number newer than its schemas (schemas.go).
//
// # Credentials
//
// An app's credential is "mmc1.{app}.{43 base64url characters}" (256
// random bits). The app name inside lets the server tell a valid
// credential used for the wrong thing (403) from an unknown one (401) with
// a single read. The store keeps only the credential's SHA-256 and a
// public key derived from it (credentials.go); records of an older
// version that held credentials in clear are migrated when a Server
// starts. A rotation keeps the previous credential valid for a grace
// period (default 10 m), during which the new credential, sealed to the
// previous one's public key, reaches the sidecars that present the
// previous one in their config; a waiting long poll rechecks its
// credential before it answers, so a revoked credential never receives
// the config that holds the new one.
//
// # Concurrency
//
// Two goroutines per Server: hub.run drains the store watch, runSweeper
// marks instances with lapsed leases offline every Options.LeaseSweep (and
// forgets traffic samples older than their window); Shutdown stops both
// and waits. Locks: Server.mu guards the list of http.Servers; hub.mu
// guards the hub's channels; caMu the forwarding CA; trafficBook.mu the
// traffic samples. None is held
// while another is taken, nor across I/O (caMu is held across the CA's
// first load). The schema Registry has its own lock and calls OnChange
// with it released. LongPolls is an atomic counter.
package ctrlplane
