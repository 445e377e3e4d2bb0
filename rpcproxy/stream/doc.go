// Package stream is the RPC proxy's stream layer: requests and answers
// matched by id and multiplexed on shared upstream connections, over the
// protocol-free connection layer of package core.
//
//   - codec: the Codec interface (codec.go) that the RPC proxy's wire
//     protocols implement (codecs/meshrpc, codecs/http1), so a new protocol
//     needs no change above it, and the codec-neutral Error a proxy answers
//     with itself (codec_errors.go);
//   - upstream: a Cluster is a set of hosts with a load-balancing policy
//     (balancer.go) and, per host, a pool of connections; it rewrites request
//     ids when many downstream connections share one upstream connection
//     (upstream.go);
//   - exchanges: the Exchange every RPC call is seen as by the stages of
//     the proxy's pipeline (exchange.go; the pipeline itself, shared with
//     the sidecar's publishes and deliveries, is package pipeline), and the
//     built-in stages Metrics, AccessLog and Limiter (stages.go).
//
// It is a package of its own, beside rpcproxy rather than in it, because the
// codecs implement its interfaces and rpcproxy imports the codecs.
package stream
