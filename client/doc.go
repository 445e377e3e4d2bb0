// Package client is the Go SDK that apps use to talk to their msgmesh
// sidecar over the mesh wire protocol (codecs/mesh): publish messages,
// consume them pushed by the sidecar (Subscribe) or on request (Pull), and
// acknowledge them.
//
// # Connection and reconnect
//
// Dial opens one long-lived connection to the sidecar (127.0.0.1:7600 by
// default in msgmesh) and says HELLO before it returns; a first connection
// that fails is Dial's error. From then on the Client keeps the connection
// up by itself: when it drops (read or write error, or no frame from the
// sidecar for three heartbeat intervals) it redials with exponential backoff
// and jitter (WithReconnectBackoff), says HELLO again and re-DECLAREs the
// whole current subscription set, so subscriptions survive reconnects.
// While the Client is reconnecting, Publish, Subscribe and Pull wait for the
// new connection, bounded by their context.
//
// Delivery ids are per connection. When a connection is lost the sidecar
// hands its unanswered deliveries back to the broker, which redelivers them;
// settling such a delivery afterwards returns ErrConnectionLost and sends
// nothing, because the id would mean nothing (or something else) on the new
// connection. Queued deliveries of a lost connection are dropped without
// running the handler.
//
// # Delivery contract: at least once
//
// A publish succeeds only once the broker has durably stored the message. A
// publish that fails with ErrConnectionLost, with an *Error whose code is
// mesh.CodeTimeout, or with its context's error after it was sent, may or
// may not have been stored: retry it, and accept that the message may then
// exist twice. Any other *Error (UNAVAILABLE, BROKER_ERROR, STORAGE_FULL,
// RATE_LIMITED, ...) means the message was not stored, so retrying a
// retryable one cannot duplicate it. Consumers get every message at
// least once and must tolerate duplicates: a delivery whose ACK was lost
// with its connection, or that was not settled in time, is redelivered.
//
// # Tracing
//
// With an OpenTelemetry tracer provider (WithTracerProvider, or the app's
// global one) every publish gets a PRODUCER span "publish <topic>" whose
// W3C trace context travels in the message's headers, through the
// sidecars and brokers, to the consumers; every delivery gets a CONSUMER
// span "process <topic>", child of that context, in the handler's ctx or
// in Delivery.Context for pulled deliveries. Without a provider tracing is
// off and costs nothing. docs/observability.md has the whole picture.
//
// # Concurrency
//
// A Client is safe for concurrent use. Each connection runs on the mesh
// connection engine (codecs/mesh/meshconn): one read goroutine and one
// heartbeat goroutine, and frames written through a core.Writer, which
// batches frames written by many goroutines. PublishAsync, Ack and Nack
// queue their frames instead of writing them on the caller's goroutine,
// so that one goroutine publishing or settling a stream of messages
// shares write syscalls too. The read
// goroutine never runs application code: deliveries go to a queue per
// subscription (capacity WithMaxInflight) that the subscription's worker
// goroutines (WithConcurrency) drain, and PublishAsync callbacks run on one
// completion goroutine per Client. Every goroutine is owned by the Client
// and has returned when Close returns.
//
// Lock order: Client.declMu, then Client.mu, then Subscription.mu; the
// async queue's lock is a leaf. conn.fail takes Client.mu, so it is never
// called with Client.mu held.
package client
