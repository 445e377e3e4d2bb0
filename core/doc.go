// Package core is the proxy core that the message mesh and the RPC proxy both
// run on (DESIGN.md §4). It holds the layers that know nothing about
// messages or RPC:
//
//   - network: Server accepts connections on a listener and owns one
//     goroutine per connection, at most ConnLimit.Max at once (connlimit.go),
//     and logs a periodic summary of its connections instead of a line per
//     connection (connlog.go);
//     Routines owns every other goroutine and waits for them on shutdown;
//     HTTPLimits bounds the clients of the HTTP servers beside it
//     (httplimits.go), and FitFiles fits a connection limit to the
//     process's open-file limit (fdlimit.go);
//   - stream: Writer batches frames from many goroutines onto one
//     connection (group commit); Pending matches answers to requests by
//     id, and IDs hands out ids unique on a connection; the upstream pools
//     (upstream.go, balancer.go) rewrite request ids when many downstream
//     connections share one upstream connection;
//   - codec: the Codec interface (codec.go) that the RPC proxy's wire
//     protocols implement, so a new protocol needs no change above it;
//   - filters: the Chain every exchange passes, RPC call, publish or
//     delivery (filter.go, filters.go), where metrics and limits plug in.
//
// The codec layer (codecs/...) turns bytes into frames; the application
// layer (msgmesh, the RPC proxy) decides what frames mean.
package core
