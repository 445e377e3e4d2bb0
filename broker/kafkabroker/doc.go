// Package kafkabroker is the Kafka adapter of the broker contract, built on
// github.com/segmentio/kafka-go.
//
// Topics. Publish and Consume create a missing topic with
// Config.Partitions (default 3) and Config.ReplicationFactor (default 1)
// through an explicit CreateTopics request; an existing topic keeps its
// configuration. Creation is race-safe: a creation that loses to another
// client (TopicAlreadyExists) counts as success. Concurrent calls in one
// process share one check per topic, and a topic found is remembered until
// a publish reports it unknown (deleted).
//
// Publish. One kafka-go Writer, shared by every Publish, with acks=all
// (RequiredAcks = RequireAll: every in-sync replica has the message before
// Publish returns). A message with a key goes to the partition given by
// murmur2 of the key, the Java client's default partitioner, so the same
// key always lands on the same partition (for a given partition count)
// whichever client produced it; a message without a key (empty Key) goes
// round robin. Key is the Kafka key and Headers are Kafka headers (order
// and duplicates kept). The Writer batches messages per partition across
// concurrent Publish calls: a batch is sent when 100 messages or the
// brokers' message.max.bytes (read by New; less a margin, limits.go) are
// waiting, or 1 ms after its first message. That limit also bounds one
// message (MaxBody); a message over it, or over a topic's own
// max.message.bytes, fails with broker.ErrTooLarge. So a lone Publish pays at
// most 1 ms on top of the round trip, while the sidecar's many concurrent
// publishes share produce requests (and the Writer keeps one request in
// flight per partition, so batches also grow by themselves under load).
// Concurrent Publish calls also share WriteMessages calls: they queue their
// messages, and one goroutine hands what is queued to the Writer in one
// call (publishqueue.go); a call the Writer refuses (one message too
// large, say) gives each of its messages back to its Publish to be written
// alone, so only the refused one fails.
// Publish returns the partition and offset Kafka gave the message: the
// Writer's Completion callback receives each batch stamped from the
// produce response (base offset + index), and finds the waiting Publish
// through the message's WriterData. PublishResult.Stream is the topic,
// MessageID "<topic>/<partition>/<offset>". Publish retries retriable
// failures (leader moved, not enough replicas, connection reset) up to 10
// times with backoff (100 ms doubling to 1 s), within its ctx; the Writer
// makes one attempt per call, so that Publish sees every attempt's error.
// Kafka's idempotent producer is not available in kafka-go, so a retry
// after a lost response can store a message twice (at-least-once). A
// Publish that ends with its ctx leaves its batch's attempt to the Writer:
// the message may still be stored. A message above 1 MiB is refused before
// it is sent.
//
// Errors say whether the message may have been stored. Those that prove
// it was not wrap broker.ErrRejected (message too large, invalid topic,
// authorisation and other permanent refusals) or broker.ErrUnavailable (no
// connection could be made, the topic could not be looked up or created,
// or every attempt was refused by the broker with a retriable code).
// Those after an attempt that may have reached the broker wrap
// broker.ErrOutcomeUnknown: the ctx ended while the batch was on its way,
// the connection dropped or the answer timed out, or the broker answered
// a code that comes after the leader appended the message
// (REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND,
// KAFKA_STORAGE_ERROR, UNKNOWN) — on any attempt, not only the last.
//
// Consume. A member of the Kafka consumer group ConsumerSpec.BrokerGroup
// (ConsumerSpec.Group when that is empty) subscribed to ConsumerSpec.Topic:
// one group may span several topics, with one member per topic. The
// adapter speaks the group protocol itself (member.go, groupproto.go),
// because kafka-go's ConsumerGroup writes a subscription (version 1
// without OwnedPartitions) that librdkafka cannot read and reads none
// that librdkafka writes, so it could not share a group with librdkafka or
// Java consumers. The member uses protocol type "consumer" with the eager
// assignors range and roundrobin (what librdkafka offers by default, and
// range is Java's first), over a connection of its own to the group
// coordinator: heartbeats every second, session timeout 10 s, rebalance
// timeout 30 s. As leader it assigns every member's subscribed topics,
// foreign members included, exactly as Kafka's RangeAssignor and
// RoundRobinAssignor do (assign.go), and rebalances when a subscribed
// topic gains partitions (checked every 5 s). Each assigned partition is
// read by a fetcher of the adapter's own, with protocol-level Fetch
// requests of kafka-go's Client, from the group's committed offset; a
// partition without one starts at the oldest retained message (like the
// NATS adapter's deliver-all). Not kafka-go's Reader: it reads a null key
// or value as an empty one, and a Fetch keeps the difference (a null key
// is no key, an empty one broker.Message.EmptyKey; a null value
// NullBody). Fetched messages wait in one queue of ConsumerSpec.Prefetch
// (default Config.Prefetch, 128) messages; besides them each partition's
// fetcher holds the rest of its last fetch response (at most 1 MiB, or
// one larger batch) while the queue is full. ConsumerSpec.AckWait is not used: Kafka has no
// per-message ack timeout (see Redelivery below).
//
// Commits. Offsets are committed by the adapter (no auto commit), and
// only under this rule: a partition's offset is committed up to a message
// only when the app acked that message and every earlier message of the
// partition that this consumer handed out. An unacked (or nacked and
// waiting) message holds back the commit of every later message of its
// partition. Per partition the consumer tracks the offsets it handed out,
// in order, with their ack state; the commit point is the lowest unacked
// one, or one past the highest when all are acked. Ack and Nack never wait
// on the network: they update this tracker, and a committer goroutine
// commits what moved, at most every 5 ms (acks arriving meanwhile go in
// one commit), retrying with backoff on failure. Close stops the committer
// and makes a final commit of what is contiguously acked, so a restarted
// consumer of the group starts exactly at the first message that was not
// acked. An Ack after Close cannot be committed and returns an error
// wrapping broker.ErrClosed (the message is read again by the group).
//
// Nack. Nack(delay) keeps the message in an in-memory redelivery queue of
// the consumer: Next returns it again (same MessageID, Redelivered + 1)
// once the delay is over, before any new message. Its offset stays
// uncommitted meanwhile, so if the process dies the group reads it again
// from Kafka. This was chosen over a retry topic because it keeps the
// message in its partition (no copy, no second topic to create and
// consume, no reordering beyond the delay), and a crash cannot lose it.
// The cost: a long-nacked message (or one nacked again and again) holds
// back the commits of its whole partition, so a crash or a rebalance then
// redelivers every later message of that partition too. The sidecar bounds
// both: it caps nack delays (msgmesh.Config.MaxNackDelay) and moves a
// message to a dead-letter topic after its group's last allowed attempt. The queue holds
// only messages already handed out, so it is bounded by the sidecar's
// in-flight deliveries. Nack after Close does nothing (the offset is not
// committed; the group reads the message again).
//
// Deliveries. MessageID is "<topic>/<partition>/<offset>". Redelivered
// counts how often this consumer handed the message out before (0 the
// first time); Kafka keeps no delivery count, so after a restart or a
// rebalance a message read again from the last commit has Redelivered 0.
// Timestamp is the Kafka message timestamp (Publish sets the create time).
//
// Rebalance. When the coordinator announces a rebalance, the consumer
// stops its fetchers, commits what is contiguously acked (in the ending
// generation, which Kafka accepts while the group prepares to rebalance),
// drops the messages fetched and not handed out, and rejoins; Next hands
// out nothing meanwhile (nacked messages that come due wait). With the new
// assignment it reads the committed offsets: a partition it owned before
// and on which nobody committed since keeps its commit tracker, so
// deliveries still with the app are not handed out again, their acks and
// nacks still count, and reading continues after the last message handed
// out. Any other partition starts afresh from its committed offset. A
// partition that moved to another member is read there from the last
// commit: messages handed out here and not yet acked are delivered there
// again (duplicates, never a loss); their acks here are not committed any
// more (they would move the offset behind the new owner's), and their
// nacks are dropped. Messages fetched in one generation are never handed
// out in a later one.
//
// Pause and Close. Pause makes Next return broker.ErrPaused (a blocked
// Next returns at once) and nothing more: the consumer stays in the group,
// keeps its partitions and keeps committing acks. The fetchers keep fetching only until the queue is full.
// Messages fetched but not handed out stay queued and are handed out after
// Resume, after any that the sidecar took from Next just as the pause
// began and returned (broker.Returner: back to the retry queue, due at
// once, as the same attempt, uncounted); if the consumer is closed instead they are dropped uncommitted,
// and the group reads them again from the last commit. Close makes a
// blocked Next return broker.ErrClosed, stops the fetchers, makes the
// final commit and leaves the group (LeaveGroup: its partitions go to
// other members at once); committed offsets are kept. Pause, Resume and Close are safe
// concurrently with a blocked Next and with each other, and idempotent.
//
// Hot upgrade. A delivery an app still holds when its consumer closed
// moves to another process (broker.Portable, broker.Adopter): its token
// carries the partition's state after the final commit, and the
// successor's consumer re-reads the partition from that commit, binding
// the held offsets to the inherited deliveries and skipping the acked
// ones (handover.go). Closed before it read all of that, it hands the
// unread rest on in its own tokens, so those held deliveries move again.
//
// Goroutines. Besides kafka-go's own (the Writer's per-partition batchers,
// the transport's metadata refresh and connections), the Broker runs the
// publish queue's flusher, and
// each consumer runs a committer, a group loop (membership and
// rebalances) and one fetcher per assigned partition, which the group loop
// starts and stops. Consumer.Close stops the committer, then the group
// loop, which stops the fetchers, commits and leaves; Broker.Close closes
// the consumers still open, stops the flusher once it wrote what was
// queued, closes the Writer and the transport, and waits for all of them.
package kafkabroker
