// Package rocketmqbroker is the RocketMQ adapter of the broker contract
// (package broker): the only msgmesh code that imports the RocketMQ client
// (github.com/apache/rocketmq-client-go/v2, pinned at v2.1.2). Tests run it
// against internal/rmqtest, a small remoting-protocol test broker.
//
// # Names
//
// RocketMQ names allow letters, digits, '_', '-', '|' and '%', not '.'. A
// msgmesh topic maps to the RocketMQ topic with every '.' replaced by '|'
// ("orders.created" → "orders|created"); dot-free topics keep their name.
// The mapping is injective, so two msgmesh topics never share a RocketMQ
// topic. RocketMQ's system topics (TBW102, SCHEDULE_TOPIC_XXXX, RMQ_SYS_*)
// are refused.
//
// A msgmesh group on a topic is the RocketMQ consumer group
// GroupPrefix + group + "__" + topic, both mapped like topics
// ("MESH_billing__orders|created"), with a hash suffix when that could be
// ambiguous or is too long (see consumerGroup). Not the group alone: every
// member of a RocketMQ group must subscribe the same topics (each member
// divides each subscribed topic's queues among all members), and two
// sidecars consuming different topics of one msgmesh group would leave
// queues unread. The producer group is GroupPrefix + "PRODUCER".
//
// # Publish
//
// Publish is a synchronous send (SEND_OK or an error). The key becomes the
// KEYS and SHARDING_KEY properties, and picks the queue as Java producers
// do with SelectMessageQueueByHash and the key as its argument:
// queues[abs(key.hashCode() % n)], with Java's String.hashCode over the
// key's UTF-16 code units and the queues in Java's order (by broker name,
// then queue id; selector.go). So messages with the same key always go to
// the same queue (as long as the topic's queue count does not change),
// whether the sidecar or a Java producer sent them; messages without a key
// go round robin. KEYS is a space-separated list for RocketMQ (its index
// keys): a key with spaces is several index keys, and still one queue
// choice (the whole key is hashed). Headers become user properties, so their keys
// must be unique, may not be RocketMQ system property names (KEYS, TAGS,
// UNIQ_KEY, DELAY, anything starting with "__", ...: broker.RocketMQReserved,
// the list the sidecar's header rule uses too), and keys and values may
// not contain bytes 0x01 or 0x02. Bodies over 4 KiB are compressed by the
// client and decompressed on consumption. The brokers bound the body
// (Config.MaxMessageSize) and the properties (32 KiB, the key counted
// twice); MaxBody reports what fits, and a refusal for size wraps
// broker.ErrTooLarge. The result has Stream = the
// RocketMQ topic, Partition = the queue id, Offset = the queue offset and
// MessageID = the producer's unique message id (UNIQ_KEY), which consumers
// see as the message id. Publish retries a failed send Config.Retries
// times (the client's own retries are off, so that Publish sees every
// attempt's error), and retries "route info not found" (nothing was sent)
// until ctx ends; a retried timeout may store the message twice.
//
// Publishes to one queue share a request while the queue's previous one
// is in flight (Config.MaxBatch; batch.go): a SEND_BATCH_MESSAGE that the
// broker stores at consecutive offsets, each publish answered with its own
// offset and message id, and each going on alone when the batch fails.
//
// Errors say whether the message may have been stored. Those that prove it
// was not wrap broker.ErrRejected (bad topic or headers; broker codes
// MESSAGE_ILLEGAL, NO_PERMISSION, TOPIC_NOT_EXIST) or
// broker.ErrUnavailable (no route, no connection to the broker, the
// broker busy or refusing with another code), plus the client's error.
// Those after an attempt that may have reached the broker wrap
// broker.ErrOutcomeUnknown: a timeout (which is also how the client
// reports a connection lost with the send outstanding), a failed write,
// an error the adapter does not know, on any attempt; and a broker answer
// FLUSH_DISK_TIMEOUT, FLUSH_SLAVE_TIMEOUT or SLAVE_NOT_AVAILABLE, for
// which the broker stored the message but not durably.
//
// # Consume
//
// A consumer is the client's pull consumer (Poll and ACK) in clustering
// mode, with a client instance of its own, starting a new group at the
// oldest message. A pull brings a batch of up to Prefetch/4 messages (at
// most 32, what a broker answers; at least 1), but each message is acked
// to the client on its own (the client's request split per message, a
// local patch), so offsets, nacks and the handover below work message by
// message as with a batch of one. (Not the push consumer: with v2.1.2 its
// start sequence and its Suspend/Resume are data races that the race
// detector reports in most runs, Suspend makes its pull loops sleep 30 s,
// and its callbacks of one queue run concurrently, so a pause could leave
// a returned message behind an unreturned one. The pull consumer hands
// out each queue's messages in order and acks synchronously.)
//
// Offsets. The client commits, per queue, the lowest offset it has
// handed out and not yet seen acked (its process queue), so a queue's
// committed offset never passes an unacked message: at-least-once. Acks
// move that offset in memory at once; it reaches the broker (one-way) every
// 5 s (the client's timer), on Pause, when a paused consumer's last
// outstanding delivery is settled, when a rebalance takes a queue away,
// and on Close. A consumer that stops
// without committing (crash, lost commit) makes the group get the messages
// after the last commit again: duplicates, never losses. So do rebalances
// (another member of the group starting or stopping), RocketMQ's usual
// behaviour.
//
// Next returns one message at a time, in queue order per queue. Ack is a
// local operation (no round trip). Nack sends the message back
// (CONSUMER_SEND_MSG_BACK): the broker stores a copy in %RETRY%<group>
// (which the consumer also reads) and delivers it after the retry delay
// level chosen for the delay (RocketMQ's levels, 1 s ... 2 h, the shortest
// at least the delay; 1 s for 0) with Redelivered + 1 and the same
// MessageID (the retry keeps ORIGIN_MESSAGE_ID). RocketMQ would move it
// to %DLQ%<group> only after MaxReconsumeTimes (1016) send-backs, above
// any limit of the sidecar, which dead-letters poison messages itself
// (on every broker alike). A message not answered within ConsumerSpec.AckWait
// (zero: DefaultAckWait, 60 s) is sent back like a Nack by the adapter,
// and a later answer gets ErrSettled. Timestamp is the broker's store time
// (for a retry copy, the original's send time).
//
// Pause makes Next return broker.ErrPaused and stops handing out; it does
// not stop the client's pulls, which stop by themselves once the client's
// buffers are full. Messages polled but not handed out stay, unacked,
// with the consumer and come first after Resume, after any that the
// sidecar took from Next just as the pause began and gave back
// (broker.Returner: not acked to the client, so not sent back, and handed
// out again as the same attempt, uncounted); since every queue is handed
// out in order, everything handed out before them precedes them, so once
// the outstanding deliveries are acked the committed offsets are exactly
// "all messages handed out consumed": a consumer of the group started
// elsewhere (an upgraded sidecar) neither skips nor repeats anything.
// Pause commits the offsets at once and again when the last outstanding
// delivery is settled. (The client's own Suspend is not used; see above.)
//
// Close drops the unreturned messages unacked and, once no delivery is
// outstanding, shuts the client down, which commits the offsets and closes
// its connections (the broker then gives its queues to the group's other
// members). While deliveries are outstanding the client stays connected so
// that their acks still commit (at most AckWait, after which they are
// sent back); Close waits for that until its ctx ends. Acks after the
// shutdown fail with broker.ErrClosed, and those messages are redelivered.
// Nothing acked is redelivered after a Close, and nothing unacked is lost.
//
// Hot upgrade. Release (broker.Releaser) shuts the consumer down at once,
// whatever apps hold; a delivery they hold then moves to another process
// (broker.Portable, broker.Adopter): its token carries its queue's state
// as the release committed it, and the successor's consumer re-reads the
// queue from that commit, binding the held offsets to the inherited
// deliveries and acking the settled ones without a delivery
// (handover.go). A successor released in turn before its consumer read
// all it inherited (Next stops at the first message to hand out, and a
// queue comes a pull batch at a time) passes the unread rest on in its
// own tokens. Messages polled but not handed out at a release keep the
// commit before them; when a later offset of the same pull was settled
// at once (bound or acked as above), the tokens list them to come again.
//
// Prefetch. ConsumerSpec.Prefetch (zero: Config.Prefetch) sets the pull
// batch B = Prefetch/4, 1 to 32. The client holds what it pulled ahead in
// fixed channels: per queue the consumer owns, K = max(1, 32/B) batches
// buffered, the batch waiting to enter the buffer and the one on its way
// to Poll; plus 4 batches for all queues, plus the batch Next is giving
// out: at most queues × (K + 2) × B + 5 × B messages (about 32 + 2B per
// queue), whatever arrives. Memory stays bounded (with the default 128
// and 4 queues, 544 messages; 140 when each pull brought one), but
// Prefetch is not an exact limit.
//
// # Client quirks the adapter works around
//
//   - The client logs through a process-wide logger (package rlog); the
//     first New routes it to that Broker's Config.Logger at debug level.
//   - It accepts only IP addresses as name servers; New resolves host
//     names once (a name server that moves needs a new Broker).
//   - Clients are shared per instance name; the adapter gives each producer
//     and consumer a unique one. Each client keeps a connection to a name
//     server that its shutdown does not close; it closes after the client's
//     120 s read timeout.
//   - Upstream's ACK gives no way to choose a retry delay but an
//     interceptor, which every ACK then builds contexts for; the local
//     copy takes the delay level from ACK's ctx (consumer.WithDelayLevel,
//     third_party patch 15), and the adapter installs no interceptor.
package rocketmqbroker
