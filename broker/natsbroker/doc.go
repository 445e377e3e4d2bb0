// Package natsbroker is the NATS JetStream adapter of the broker contract
// (package broker): the only msgmesh code that imports the NATS client. It
// also runs an embedded nats-server (StartEmbedded), which the sidecar uses
// when no broker is configured and tests use as a real broker.
//
// # Topics and streams
//
// A topic is used as the NATS subject as it is. Stream policy, applied the
// first time a Broker publishes to or consumes a topic:
//
//   - if a stream already captures the subject (an operator may pre-create
//     streams, for example one on "orders.>" for all order topics), that
//     stream is used;
//   - otherwise the adapter creates stream StreamPrefix + topic with dots
//     turned into '_' ("orders.created" → "MESH_orders_created"), subjects
//     [topic], discard new, and the topic's settings from Config.Streams
//     over DefaultStreams (retention limits, max age 7 days, no byte or
//     message limit of its own, one replica, file storage, a 2-minute
//     duplicate window). If that name is
//     taken by a stream that does not capture the topic ("a_b" vs "a.b"),
//     the name gets a hash suffix.
//   - existing streams are never modified or deleted; one msgmesh created
//     for the topic with other settings is used as it is, with a warning.
//
// Publishing to a stream with interest retention that has no consumer is
// refused (broker.ErrRejected): JetStream would acknowledge the message and
// keep it for nobody. On a work-queue stream (an operator's) CheckGroups
// refuses a second consumer group at registration (broker.GroupChecker);
// DescribeStream shows a topic's stream and its settings
// (broker.StreamDescriber).
//
// Which stream serves a topic is cached per Broker. Creation is safe when
// several goroutines or sidecars publish a topic's first message at once:
// losing the race is treated as success and followed by a new lookup. If a
// publish finds no stream (an operator deleted it), the adapter looks
// again, re-creating the stream under the policy above, and retries once.
//
// # Publish
//
// Publish returns after the JetStream publish ack, with Stream = stream
// name, Partition = -1, Offset = stream sequence and MessageID =
// "<stream>:<sequence>". The message key travels in header KeyHeader
// ("Msgmesh-Key"), or base64 in KeyB64Header when it would not survive a
// header value. Headers NATS acts on are refused (broker.NATSReserved:
// "Nats-*", which JetStream reads, "Nats-Msg-Id" deduplicating within the
// stream's window; "Status", which nats.go reads as a server status on an
// empty message), as are those two key headers; the sidecar refuses them
// first, with its one header rule for every broker (broker.CheckHeaders).
// Header order across different keys is not kept (NATS headers are a
// map); values lose surrounding white space and may not contain CR or LF.
// The server's max_payload bounds body and headers together (MaxBody).
//
// With Config.MaxBatch over 1 (the default with an embedded server that
// fsyncs every write), the publishes to a topic that wait for its publish
// in flight go as one JetStream atomic batch (nats-server 2.12 or later;
// batch.go): stored together at consecutive sequences, or not at all,
// with one fsync and one ack for all of them. Each publish still gets its
// own sequence; a refused batch leaves each member to go alone. Streams
// the adapter creates then allow atomic publishes; an operator's stream
// gets batches only if it allows them. Deliveries do not carry the batch
// headers (Nats-Batch-*).
//
// Errors say whether the message may have been stored. Publish sends
// nothing while the connection is down: it waits for nats.go to reconnect
// (nats.go would otherwise buffer the message and send it after
// reconnecting, even after the publish gave up), and if ctx ends first the
// error wraps broker.ErrUnavailable. Errors that prove nothing was stored
// wrap broker.ErrUnavailable (no stream answered: no responders; JetStream
// 5xx answers; the stream could not be looked up or created),
// broker.ErrTooLarge (over max_payload, a stream's max_msg_size, or 64 KiB
// of headers), broker.ErrStorageFull (no space: the stream's max_bytes or
// max_msgs, the account's or the server's storage limit, the embedded
// store's disk; the message names which and how space comes back) or
// broker.ErrRejected (other JetStream refusals such as wrong
// last sequence, bad headers: broker.ErrInvalidHeader), plus the client's
// error. A publish that was written and got no answer (ctx ended, the
// connection dropped, an unreadable answer) wraps broker.ErrOutcomeUnknown:
// the server may have stored it.
//
// # The embedded server
//
// StartEmbedded runs nats-server in this process with a storage limit
// fixed at start (EmbeddedConfig.MaxStore) and, by default, an fsync before
// every publish ack (EmbeddedConfig.SyncInterval). It watches its store
// (storage.go): while the disk is short of space it refuses publishes
// (Embedded.StoreErr, asked by Brokers whose Config.Embedded is set), and
// after write errors or a shutdown of JetStream it restarts the server on
// the same store and port once space is back; connections reconnect and
// consumers pull again.
//
// # Consume
//
// A group on a topic is one durable pull consumer on the topic's stream,
// named sanitize(group) + "__" + sanitize(topic) ("billing__orders_created"),
// with a short hash appended when that form could be ambiguous (see
// consumerName), so two topics of one group in one operator stream never
// share a consumer. It filters the topic, acks explicitly, waits
// ConsumerSpec.AckWait (zero: 60 s) for an ack, redelivers without limit
// (MaxDeliver -1: the sidecar moves poison messages to a dead-letter topic
// itself, while a JetStream max_deliver would only stop delivering the
// message and leave it unacked in the stream),
// starts a new group at the oldest retained message (like Kafka's
// "earliest"), and allows Config.MaxAckPending unacknowledged messages.
// An existing consumer is updated to this configuration; one of that name
// that filters another subject is refused, never repointed.
//
// The consumer asks for at most ConsumerSpec.Prefetch (zero:
// Config.Prefetch) messages that Next has not returned: it reads with pull
// requests of half that many on one subscription, a new one sent as soon
// as half of the window is free (so the server always has one to fill
// while Next reads), each waiting at most 200 ms at the server. Pause and
// Close send no new request, wait for those in flight to end (so that the
// server picks no message for a request nobody reads any more, which would
// then wait for the ack wait), and nak what they brought so the server
// redelivers them at once; Resume starts fetching again. Close keeps the durable consumer, so
// a later Consume continues where the group stopped. Next keeps blocking
// through broker outages and recreates the durable consumer if an operator
// deleted it; both are logged.
//
// Delivery.Ack and Nack do not wait for a round trip: a lost ack or nack
// means the server redelivers after AckWait, a duplicate but never a loss.
// Redelivered is the server's delivery count minus one.
package natsbroker
