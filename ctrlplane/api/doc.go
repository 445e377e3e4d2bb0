// Package api holds the wire types of the msgmesh control plane's HTTP API
// (docs/ctrlplane.md): the configuration the control plane pushes to every
// sidecar of an app (AppConfig), the operator-facing views of apps and
// instances, the error body, and the validation rules both sides share.
//
// It imports no server or client code, so a sidecar can depend on it, and
// on topology for the broker clusters and routes, without pulling in
// the control plane's store or HTTP server.
//
// # Compatibility
//
// Every type is encoded as JSON with the snake_case names in its struct
// tags. Readers must ignore fields they do not know: later versions add
// fields (flow-control limits are already reserved in AppConfig) without
// changing the meaning of the existing ones.
package api
