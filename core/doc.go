// Package core is the protocol-free connection layer that the message mesh
// (msgmesh, its forwarding service, the SDK) and the RPC proxy both run on.
// Nothing in it knows about frames, messages or RPC:
//
//   - accepting: Server accepts connections on a listener and owns one
//     goroutine per connection, at most ConnLimit.Max at once (connlimit.go),
//     and logs a periodic summary of its connections instead of a line per
//     connection (connlog.go);
//   - goroutines: Routines owns every other goroutine and waits for them on
//     shutdown;
//   - writing: Writer batches frames from many goroutines onto one
//     connection (group commit);
//   - matching: IDs hands out request ids unique on a connection, and
//     Pending matches answers to requests by id (pending.go);
//   - limits: HTTPLimits bounds the clients of the HTTP servers beside the
//     listeners (httplimits.go), and FitFiles fits a connection limit to the
//     process's open-file limit (fdlimit.go);
//   - moving: FileOf duplicates a listener's or connection's socket for a
//     hot upgrade (file.go; internal/upgrade carries it).
//
// Above it, the codecs (codecs/...) turn bytes into frames, the RPC proxy's
// stream layer (rpcproxy/stream: codec interface, upstream pools with id
// rewriting, balancer, exchange stages) forwards requests, and the
// applications (msgmesh, rpcproxy) decide what frames mean.
package core
