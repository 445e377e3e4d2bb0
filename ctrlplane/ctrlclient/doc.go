// Package ctrlclient is the Go client of the msgmesh control plane
// (docs/ctrlplane.md), for sidecars and for meshctl.
//
// A Client has one typed method per API call. New takes one base URL or a
// comma-separated list of them (the replicas of a replicated control
// plane): a request goes to the URL in use, and when that replica cannot
// be reached or answers 502/503/504 the client moves on to the next URL,
// retrying at once when that is safe (the request was never sent, or it
// is idempotent). Errors from the server are *APIError values carrying
// the server's code and message; errors.Is matches them against ErrInvalid,
// ErrUnauthorized, ErrForbidden, ErrNotFound, ErrConflict and
// ErrUnavailable. The schema calls (RegisterSchema, Schema, CheckSchema,
// SchemaPolicies, ...) use the schema registry's Confluent-shaped paths
// and the /v1/schema-policies API; the registry's error_code is the
// *APIError's Code ("40401").
//
// A Watcher keeps a sidecar's config current: it long-polls GET
// /v1/apps/{app}/config?after=VERSION, calls its onChange with every newer
// config, and reconnects with exponential backoff and jitter when the
// control plane is away. With WithStateFile it writes every config it
// receives to a file (temp file, fsync, rename, fsync of the directory)
// before calling onChange, and starts from that file, so a sidecar that
// restarts while the control plane is down keeps serving with the last
// config it saw (LoadLast reads the file on its own).
//
// # Credentials
//
// The token given to New is sent as "Authorization: Bearer TOKEN": the
// operator token for meshctl, the app's credential for a sidecar. Since a
// rotated credential reaches the sidecars in the config itself, a Watcher
// authenticates with the credential of the newest config it has (from the
// state file or the control plane) and falls back to New's token when that
// one is refused, so a sidecar survives a rotation and a restart after it.
//
// # Goroutines
//
// A Client starts no goroutine. A Watcher owns exactly one, started by
// Watch and ended by Stop or by cancelling Watch's context; Stop waits for
// it.
package ctrlclient
