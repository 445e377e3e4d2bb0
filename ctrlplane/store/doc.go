// Package store is the control plane's state: a small versioned key-value
// interface (Store) with two implementations, an embedded bbolt file
// (OpenBolt, the default: one control-plane process) and an etcd cluster
// (OpenEtcd: several control-plane replicas behind one address share it).
//
// The control plane keeps a handful of JSON documents in it (one per app,
// one for the global topology); the store knows nothing about them. What it
// guarantees is what the push protocol needs:
//
//   - Revisions. Every successful write gets a revision that is larger than
//     every revision before it, store-wide, whichever replica wrote it: the
//     etcd revision with etcd, a counter updated in the same bbolt
//     transaction as the write with bbolt. Each entry carries the revision
//     of its last write (ModRev), so the control plane can derive config
//     versions that only grow.
//   - Compare-and-swap. Put and Delete take the ModRev the caller read (0:
//     "the key must not exist") and fail with ErrConflict if another write
//     came in between, so read-modify-write cycles from several replicas
//     never lose an update.
//   - Watch. A watch reports every write made after Watch returned,
//     through any replica, in revision order. When it may have missed
//     writes (etcd compacted past it, lost its leader, or a bbolt watcher
//     fell too far behind) it says so with a Reset event: the consumer must
//     assume everything changed.
//
// # Layout
//
// bbolt: bucket "kv" maps key to an 8-byte big-endian ModRev followed by
// the value; bucket "meta" holds "format" ("1") and "rev" (8 bytes, the
// last revision). Every write is one read-write transaction, fsynced at
// commit. etcd: every key is stored under a prefix (default
// "/msgmesh/ctrlplane/"), so one etcd cluster can hold several control
// planes' state; ModRev is etcd's mod_revision.
//
// # Concurrency
//
// Both implementations are safe for concurrent use. The bbolt store holds
// writeMu across a write transaction and the fan-out of its event, so
// watchers see events in revision order; watcher queues have their own
// lock, taken inside writeMu (order: writeMu, then watcher.mu). Every
// goroutine a store starts (one per watch) is owned by it: Close cancels
// them and waits.
package store
