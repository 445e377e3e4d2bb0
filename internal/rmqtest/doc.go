// Package rmqtest is a small RocketMQ name server and broker speaking the
// remoting protocol, whose only job is to let the real
// github.com/apache/rocketmq-client-go/v2 producer and push consumer run
// against it, in tests (Start, or testbroker.Start) and as a binary
// (cmd/rmq-testbroker). It is not a RocketMQ server.
//
// # What it implements
//
//   - Remoting frames with JSON or RocketMQ-binary headers (it answers in
//     the serialization of the request). A frame that cannot be decoded
//     closes its connection and no other; an unknown request code gets
//     REQUEST_CODE_NOT_SUPPORTED (3) and the connection stays usable.
//   - Name server: GET_ROUTEINFO_BY_TOPIC (one broker, BrokerName
//     "broker-a" with the advertised address as broker id 0, and the
//     topic's read/write queues), GET_BROKER_CLUSTER_INFO,
//     GET_ALL_TOPIC_LIST_FROM_NAMESERVER, and GET_KV_CONFIG (always "not
//     found"). Any topic with a legal name ([%|a-zA-Z0-9_-], at most 127
//     bytes) is created on first use with Config.QueuesPerTopic queues;
//     retry (%RETRY%<group>) and dead-letter (%DLQ%<group>) topics get one.
//   - Broker: SEND_MESSAGE, SEND_MESSAGE_V2 and SEND_BATCH_MESSAGE (queue
//     offsets, commit-log offsets and the broker-side msgId like
//     RocketMQ's; the body limit is Config.MaxMessageSize); PULL_MESSAGE
//     with long polling (a pull that finds nothing waits for a message on
//     its queue, up to its suspend timeout capped by Config.MaxPollWait),
//     the commit offset a pull carries, and RocketMQ's offset corrections;
//     QUERY_CONSUMER_OFFSET and UPDATE_CONSUMER_OFFSET; GET_MAX_OFFSET,
//     GET_MIN_OFFSET and SEARCH_OFFSET_BY_TIMESTAMP; HEART_BEAT,
//     UNREGISTER_CLIENT and GET_CONSUMER_LIST_BY_GROUP, with members
//     leaving on connection close or after Config.ClientTimeout without a
//     heartbeat, and NOTIFY_CONSUMER_IDS_CHANGED sent to a group's members
//     when its membership changes (clients rebalance at once; unlike
//     RocketMQ, not to the member whose heartbeat caused the change, which
//     rebalances on its own right after);
//     CONSUMER_SEND_MSG_BACK (retry through %RETRY%<group> with reconsume
//     times + 1 and ORIGIN_MESSAGE_ID, dead-letter queue after the
//     maximum reconsume times).
//   - Delay levels: messages sent with a delay level, and retries, wait in
//     SCHEDULE_TOPIC_XXXX and move to their topic when due, with the
//     delays of Config.DelayLevels (RocketMQ's table by default).
//   - Persistence with Config.DataDir: a commit log (replayed on start; a
//     torn tail is cut off) and a state file with consumer offsets and
//     delay cursors (written every second and on Close). Without DataDir
//     everything is in memory and gone after Close.
//   - Without a committed offset, QUERY_CONSUMER_OFFSET answers 0, as
//     RocketMQ does while a queue's first message is still in memory: a new
//     group starts at the oldest message whatever its ConsumeFromWhere.
//   - Fault injection and inspection: Broker.Intercept sees every request
//     and can delay it, drop it, fail it, close its connection, handle it
//     and close the connection unanswered, or store a message and answer
//     FLUSH_DISK_TIMEOUT, SLAVE_NOT_AVAILABLE or FLUSH_SLAVE_TIMEOUT;
//     ConsumerOffset,
//     MaxOffset, Queues, ConsumerIDs and WaitingPulls show the state.
//     Package testbroker starts one for a test.
//
// # What it does not implement
//
//   - More than one broker, replication, master/slave roles, broker
//     registration with the name server, or a name server separate from
//     its broker.
//   - Transactions (transactional sends are refused; no END_TRANSACTION or
//     transaction checks), request/reply messages, and ordered-message
//     queue locks (LOCK_BATCH_MQ is not supported, so orderly push
//     consumers cannot consume).
//   - SQL92 subscriptions are not evaluated. TAG subscriptions are: a pull
//     that carries its subscription (the subscription flag) gets only the
//     messages whose tags' hash codes (Java's String.hashCode) the
//     expression names, and a pull that skipped only non-matching messages
//     is answered PULL_RETRY_IMMEDIATELY with the next offset past them,
//     as RocketMQ does; a pull without it gets every message (RocketMQ
//     would use the group's subscription from its heartbeats).
//   - ACL, TLS, the VIP channel, admin and statistics requests, message
//     queries by key or id, topic and group configuration requests, and
//     broadcast offsets.
//   - Retention or limits on storage: every message stays in memory for
//     the life of the process (also with DataDir, whose log is replayed
//     into memory), and nothing is ever deleted. The commit log is not
//     fsynced per message; offsets written in the last second before a
//     crash are lost (consumers then get some messages again).
//   - Delay precision: a delayed message moves when its delay has passed
//     (at millisecond resolution, on one timer), never earlier; a retry
//     therefore waits at least the delay of its level (1 s for level 1 by
//     default).
package rmqtest
