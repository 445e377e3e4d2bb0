// Package schema is msgmesh's Avro schema registry and message validation
// (docs/design.md §3 flow 9; docs/schemas.md is the user-facing spec). It uses
// github.com/hamba/avro/v2 to parse schemas and to decide compatibility.
//
// # Registry
//
// A Registry holds subjects (a subject is normally a topic name), each with
// versions 1..n; every distinct schema gets a globally unique id, shared
// by every subject that registers the same schema. Registering a schema
// that is the same as an existing version of the subject returns that
// version. "The same" means equal after hamba/avro normalises it (no
// whitespace, fixed key order, full names), which keeps defaults, aliases,
// docs and custom properties: the Avro canonical form would drop defaults,
// and a changed default must be a new version.
//
// Each subject has a compatibility level (Compatibility), else the global
// default, else BACKWARD. A new version is checked against the latest
// version (all versions for the _TRANSITIVE levels) with hamba/avro's
// SchemaCompatibility; a refusal is an *IncompatibleError whose messages
// name the version, the direction and the field path.
//
// The Registry keeps its content in memory and writes every change through
// a Store before it answers: BoltStore (one bbolt file, fsync per write)
// or MemoryStore. NewHandler serves it in the shape of Confluent's Schema
// Registry REST API.
//
// # Validation
//
// A Validator checks message bodies against a topic's TopicSchemas (every
// version of its subject) before the sidecar publishes them, and
// optionally after it receives them. It accepts the Confluent wire format,
// raw Avro binary and JSON (re-encoded to the Confluent wire format); see
// Validator for how it tells them apart. A body that does not match is a
// *ValidationError with the field path ("items[2].price") and the reason.
//
// Binary bodies are checked by a walker of its own over the bytes (not by
// decoding with hamba/avro), which allocates nothing for a valid body,
// knows the path and byte offset of every problem, and bounds the work for
// hostile input: lengths and block counts are checked against the bytes
// left, nesting depth and zero-size items are capped (ValidatorOptions).
// JSON bodies are parsed with encoding/json and encoded by a walker that
// resolves unions and logical types.
//
// # Concurrency
//
// Registry, Validator, BoltStore and MemoryStore are safe for concurrent
// use. Registry: one RWMutex; writers hold it across their Store write so
// that the Store sees changes in the order they are applied; OnChange runs
// after it is released. Validator: lookups of compiled schemas take no
// lock (a copy-on-write map); compiling a new schema id takes a mutex. No
// type in this package starts a goroutine.
package schema
