// Package rpcproxy is the RPC application of the proxy core (docs/design.md §4):
// request/response forwarding between services, beside the message mesh,
// on the same network, codec and stream layers.
//
//   - Egress (default 127.0.0.1:7610): an app calls a service through its
//     local sidecar. The proxy decodes the request, routes it by service
//     name (mesh RPC) or Host and path prefix (HTTP/1.1) to a cluster,
//     picks a host (weighted round robin or least request), and forwards
//     it on a pooled upstream connection. With the mesh codec many
//     downstream connections share one multiplexed upstream connection:
//     each request gets a new id unique on that connection, and its answer
//     gets the caller's id back on the connection it came from.
//   - Ingress (default 0.0.0.0:7611): calls from other sidecars go to the
//     local app. The proxy heartbeats the app; while the app does not
//     answer, the ingress listener is closed, calls on open connections
//     are answered UNAVAILABLE without being forwarded, and Healthy is
//     false.
//
// Both listeners serve both codecs on one port: the first byte of a
// connection tells them apart (0x00 starts a mesh frame, an upper-case
// letter an HTTP method). Every call passes the proxy's pipeline (package
// pipeline, the one the sidecar's publishes and deliveries pass too): the
// stages metrics, optional access log, per-route limits, and
// Config.Stages, in that order. The metrics are served on the sidecar's
// /metrics (msgmesh_exchanges_total and friends, docs/observability.md).
//
// Errors the proxy answers itself are typed: mesh ERROR frames with the
// codes of codecs/mesh (NO_ROUTE, NO_HEALTHY_HOST, UPSTREAM_RESET,
// TIMEOUT, UNAVAILABLE, RATE_LIMITED, SHUTTING_DOWN, ...), HTTP 404, 429,
// 502, 503, 504 with a JSON body. No call hangs: every call has a deadline
// (its route's timeout), and a call whose upstream connection dies fails
// at once.
//
// Hot upgrade and reload (handover.go, docs/upgrade.md): Freeze stops the
// proxy for a successor but keeps its listening sockets and every caller's
// connection, cut at a request boundary once the calls read from it are
// answered, with the bytes of a request read only in part; a new Proxy
// given them with Adopt serves them from there, so callers see no reset.
//
// Goroutines: the proxy's Routines own the listeners' Serve loops, the
// ingress accept pump and the health loop; each core.Server owns its
// connection handlers; each handler waits for its calls in flight. A call
// of the HTTP/1.1 codec runs on a goroutine of its handler's; a mesh RPC
// call has none: the handler's read loop queues it upstream
// (stream.Cluster.Start) and the upstream connection's read loop queues
// its answer (downConn.start, exchange.CallDone). Each stream.Cluster owns
// its connections' read loops, its timeout sweeper and the goroutines of
// the calls that could not be queued. Shutdown stops reading, waits for the calls in flight until its
// context ends, then fails the rest and waits for everything.
//
// Locks: Proxy.connMu and switchListener.mu are leaves (nothing else is
// locked while they are held) and no lock is held across network I/O; the
// stream layer's lock rules are in stream/upstream.go.
//
// docs/rpc.md is the user's guide: configuration, routing, the
// protocols, errors, health, limits and the benchmark.
package rpcproxy
