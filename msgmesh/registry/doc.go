// Package registry holds the sidecar's registrations (docs/design.md §3 flow 1).
//
// A registration is what an app tells its local sidecar when it starts: its
// name, the topics it produces (each with a producer group) and the topics
// it consumes (each with a consumer group). Each (group, topic) pair is a
// Binding. Registrations are keyed by app name: registering again replaces
// the previous registration of that app.
//
// # Persistence
//
// A Store keeps the registrations in one bbolt file in the sidecar's data
// directory: bucket "registrations", key the app name, value the
// registration as JSON, with the SHA-256 of the app's secret beside it
// ("secret_sha256", when the app has one; Registration.SecretHash, which the
// registration's own JSON never shows). Every Put and Delete is one bbolt
// read-write transaction, and bbolt fsyncs the file when it commits, so a
// write is on disk before the call returns. PutFunc and DeleteFunc let the
// caller decide from the stored state inside that transaction (the sidecar
// checks an app's secret and who owns a consumer group there). After a crash the sidecar reopens the file
// and List gives back every registration it acknowledged. The file is
// locked while open; a second Open of the same file (another msgmesh on the
// same data directory) gives up after 2 s with an error wrapping ErrLocked.
//
// # Names
//
// Validate checks every name, and DecodeJSON and Store.Put call it:
//
//   - app and group: ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$ (1 to 128 bytes);
//   - topic: ^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$ and at most 249 bytes
//     (Kafka's limit): dot-separated, no empty segment;
//   - a registration has at least one produce or consume binding, and no
//     (group, topic) appears twice within produce or within consume.
//
// # Dead-letter policy
//
// A consume binding may carry its group's dead-letter policy on the topic:
// max_attempts (0 to MaxAttemptsLimit; 0 or absent: the sidecar's default)
// and dead_letter_topic (a valid topic name other than the binding's own
// topic; absent: DefaultDeadLetterTopic, "<topic>.<group>.dlq"). Produce
// bindings may not set either. The registry only stores and checks them;
// the sidecar applies them (docs/protocol.md, "Poison messages").
//
// # Broker group
//
// A consume binding may name its broker-side consumer group, broker_group
// (^[A-Za-z0-9][A-Za-z0-9_.-]{0,248}$): the sidecar then consumes the
// topic in that group on the broker, verbatim, instead of the name it
// derives from the group (docs/brokers.md), so that a service can move
// into the mesh inside the group its own clients used. Produce bindings
// may not set it.
//
// # Push subscription
//
// A consume binding may name push_url, an http or https URL the sidecar
// POSTs the group's deliveries to as CloudEvents, with push_concurrency
// (0 to MaxPushConcurrency), push_mode ("binary" or "structured") and
// push_timeout (a Go duration); the last three need push_url. The
// registry checks the URL's form only; which hosts may be pushed to is the
// sidecar's setting (loopback by default), checked when the app
// registers.
//
// A violation is a *ValidationError naming the field ("consume[1].topic")
// and the reason; errors.Is(err, ErrInvalid) holds for it. Normalize sorts
// the bindings so that stored registrations compare and serialise
// deterministically.
//
// # Concurrency
//
// A Store is safe for concurrent use. It has no lock of its own: bbolt runs
// one read-write transaction at a time and any number of read transactions
// beside it.
package registry
