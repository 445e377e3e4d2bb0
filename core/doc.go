// Package core is the proxy core that the message mesh and the RPC proxy both
// run on (DESIGN.md §4). It holds the layers that know nothing about
// messages or RPC:
//
//   - network: Server accepts connections on a listener and owns one
//     goroutine per connection; Routines owns every other goroutine and
//     waits for them on shutdown;
//   - stream: Writer batches frames from many goroutines onto one
//     connection; Pending matches answers to requests by id, and IDs hands
//     out ids unique on a connection (what request-id rewriting needs when
//     many downstream connections share one upstream connection).
//
// The codec layer (codecs/...) turns bytes into frames; the application
// layer (msgmesh, the RPC proxy) decides what frames mean.
package core
