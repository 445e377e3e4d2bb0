package rocketmqbroker

import (
	"context"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/msgmesh/msgmesh/broker/internal/sendq"
)

// Publishes to one queue go out together. RocketMQ's broker takes a
// batch of messages for one queue in one request (SEND_BATCH_MESSAGE) and
// stores them at consecutive offsets, all or none (rocketmq-client-go
// sends one when SendSync is given several messages; the adapter encodes
// it the same way, with MarshalMessageBatch, itself). A request costs the
// client and the broker about as much as a message in it (a frame with a
// JSON header each way, a response future, two wake-ups), so the adapter
// groups the publishes that wait for the same queue (package sendq, which
// JetStream's atomic batches use too):
//
//   - A publish whose queue has no request in flight is sent at once,
//     alone, as before: one publish at a time waits no longer.
//   - While a queue's request is in flight, the publishes for it queue up.
//     When the request is answered, the publish that sent it hands the
//     queued ones (up to Config.MaxBatch, and maxBatchBytes) to the first
//     of them, which sends them as one request, and so on. Each queue has
//     one request in flight at a time; a broker stores one queue's
//     messages in order anyway.
//   - Each publish gets its own answer: the queue, the batch's first
//     offset plus its place in the batch, and its own message id (the
//     UNIQ_KEY the adapter gives each member, as the client gives a
//     message sent alone).
//   - A failed batch is not the members' last word: each member goes on
//     alone from there, as a publish whose first attempt failed with that
//     error (Broker.send), so retries, "not stored" and "outcome unknown"
//     are decided per message by the same rules as before.
//
// Only messages RocketMQ lets into a batch and that the client would send
// alike are grouped: bodies under the client's compression threshold
// (a batch is never compressed; a single message of 4 KiB or more is),
// never delayed or transactional ones (the adapter sends neither). The
// queue of a message is picked by the adapter from the route the client
// last used for its topic (javaHashSelector.pick), with Select's rule, so
// a key keeps its queue; a topic not sent to yet goes alone, through the
// selector, and its route is known from then on.

const (
	// DefaultMaxBatch is Config.MaxBatch's default.
	DefaultMaxBatch = 64
	// maxBatchBytes bounds a batch's bodies and properties, far under a
	// broker's smallest sane maxMessageSize (the batch request's body is
	// checked against it).
	maxBatchBytes = 256 << 10
	// batchableBody is the client's CompressMsgBodyOverHowmuch default: it
	// compresses a body from this size on when sent alone, never in a
	// batch, so larger bodies go alone to stay stored as before.
	batchableBody = 4 << 10
)

// sendQueue is one queue's publishes (sendq.Queue).
type sendQueue = sendq.Queue[*primitive.Message, *primitive.SendResult]

// batchSize counts a message against maxBatchBytes: its body, its
// properties, and the 22 bytes of framing each member gets in the batch.
func batchSize(bodyLen, propsLen int) int { return bodyLen + propsLen + 22 }

// sender sends what a sendQueue hands it, with the Broker's producer.
type sender struct{ b *Broker }

// One sends rm alone, as before batching.
func (s sender) One(ctx context.Context, rm *primitive.Message) (*primitive.SendResult, error) {
	return s.b.producer.p.SendSync(ctx, rm)
}

// Batch sends msgs, all for the queue the first one names, as one
// SEND_BATCH_MESSAGE: one message whose body is the members' encoded one
// after the other and Batch set, the request SendSync makes of several
// messages, encoded here so that copied is called before the round trip.
func (s sender) Batch(ctx context.Context, msgs []*primitive.Message, copied func()) (*primitive.SendResult, error) {
	for _, rm := range msgs {
		// The client gives a message sent alone its id; a batch's
		// members need theirs from the sender (Java's client does the
		// same in MessageBatch). A member sent alone later keeps it.
		if rm.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex) == "" {
			rm.WithProperty(primitive.PropertyUniqueClientMessageIdKeyIndex, primitive.CreateUniqID())
		}
	}
	body := producer.MarshalMessageBatch(msgs...)
	copied()
	return s.b.producer.p.SendSync(ctx, &primitive.Message{
		Topic: msgs[0].Topic, Queue: msgs[0].Queue, Body: body, Batch: true,
	})
}
