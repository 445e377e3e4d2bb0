package kafkabroker

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/msgmesh/msgmesh/broker"
)

// msgBuf holds the bytes and header slice of one message toKafka built,
// for Publish to reuse once the Writer is done with them: after the
// message's Completion (its produce request was encoded, sent and answered)
// and only when Publish succeeded (a failed Publish's error may hold the
// message, and one that ended with its ctx leaves the message to the
// Writer). Broker.msgBufs pools them.
type msgBuf struct {
	bytes   []byte
	headers []kafka.Header
}

// maxPooledMsgBytes bounds the buffers kept for reuse, so that an idle
// pool holds little memory; larger messages allocate theirs.
const maxPooledMsgBytes = 16 << 10

func newMsgBuf() any { return new(msgBuf) }

// putMsgBuf hands mb back for reuse.
func (b *Broker) putMsgBuf(mb *msgBuf) {
	if cap(mb.bytes) > maxPooledMsgBytes {
		return
	}
	clear(mb.headers) // header names are the caller's strings
	mb.headers = mb.headers[:0]
	b.msgBufs.Put(mb)
}

// toKafka turns msg into a kafka-go message that owns its bytes: key,
// body and header values share one copy, in mb. The Writer may still read
// the message after a Publish that ended with its ctx returned, so it must
// not alias the caller's buffers. An empty Key is no key (round robin),
// unless EmptyKey; NullBody is a null value.
func (mb *msgBuf) toKafka(msg *broker.Message) kafka.Message {
	n := len(msg.Key) + len(msg.Body)
	for _, h := range msg.Headers {
		n += len(h.Value)
	}
	if mb.bytes == nil || cap(mb.bytes) < n {
		// Never nil, not even for n == 0: an empty body is a value, a
		// nil one a tombstone (NullBody), as an empty header value is
		// one.
		mb.bytes = make([]byte, n)
	}
	buf := mb.bytes[:n]
	copy(buf, msg.Key)
	end := len(msg.Key) + copy(buf[len(msg.Key):], msg.Body)
	km := kafka.Message{
		Topic: msg.Topic,
		Value: buf[len(msg.Key):end:end],
		Time:  time.Now(),
	}
	switch {
	case msg.Key != "":
		km.Key = buf[:len(msg.Key):len(msg.Key)]
	case msg.EmptyKey:
		km.Key = []byte{} // not nil: a key, empty (hashed by murmur2 like any key)
	}
	if msg.NullBody {
		km.Value = nil // a tombstone
	}
	if len(msg.Headers) > 0 {
		for _, h := range msg.Headers {
			start := end
			end += copy(buf[end:], h.Value)
			mb.headers = append(mb.headers, kafka.Header{Key: h.Key, Value: buf[start:end:end]})
		}
		km.Headers = mb.headers[:len(msg.Headers):len(msg.Headers)]
	}
	return km
}

// recordMessage is a fetched record as a kafka-go message that owns its
// bytes (key and value share one allocation): a null key or value is nil,
// an empty one a non-nil empty slice, so fromKafka can tell them apart.
// It closes the record's key and value.
func recordMessage(topic string, partition int, rec *kafka.Record) (kafka.Message, error) {
	defer closeBytes(rec.Key)
	defer closeBytes(rec.Value)
	m := kafka.Message{
		Topic:     topic,
		Partition: partition,
		Offset:    rec.Offset,
		Time:      rec.Time,
		Headers:   rec.Headers,
	}
	klen, vlen := bytesLen(rec.Key), bytesLen(rec.Value)
	buf := make([]byte, max(klen, 0)+max(vlen, 0))
	if klen >= 0 {
		m.Key = buf[:klen:klen]
		if _, err := io.ReadFull(rec.Key, m.Key); err != nil {
			return m, fmt.Errorf("read key: %w", err)
		}
	}
	if vlen >= 0 {
		m.Value = buf[len(buf)-vlen:]
		if _, err := io.ReadFull(rec.Value, m.Value); err != nil {
			return m, fmt.Errorf("read value: %w", err)
		}
	}
	return m, nil
}

// bytesLen is b's length, -1 for null.
func bytesLen(b kafka.Bytes) int {
	if b == nil {
		return -1
	}
	return b.Len()
}

func closeBytes(b kafka.Bytes) {
	if b != nil {
		_ = b.Close()
	}
}

// fromKafka rebuilds the broker message: Kafka's key and headers (in their
// order) are the message's; a non-nil empty key is an empty key
// (EmptyKey), a nil value a null one (NullBody), as recordMessage reads
// them.
func fromKafka(m *kafka.Message) broker.Message {
	msg := broker.Message{
		Topic:    m.Topic,
		Key:      string(m.Key),
		Body:     m.Value,
		EmptyKey: m.Key != nil && len(m.Key) == 0,
		NullBody: m.Value == nil,
	}
	if len(m.Headers) > 0 {
		msg.Headers = make([]broker.Header, len(m.Headers))
		for i, h := range m.Headers {
			msg.Headers[i] = broker.Header{Key: h.Key, Value: string(h.Value)}
		}
	}
	return msg
}

// delivery is one message handed out by Next. A nacked message is handed
// out again as a new delivery of the same message (Redelivered + 1), a
// returned one (broker.Returner) too, with the same Redelivered.
type delivery struct {
	c *consumer
	// t is the tracker of the assignment the message was handed out
	// under: its ack counts there, and only while that tracker is the
	// partition's (see consumer.assigned).
	t           *partitionTracker
	partition   int
	offset      int64
	msg         broker.Message
	id          string
	redelivered int
	ts          time.Time
	answered    atomic.Bool
}

func (c *consumer) newDelivery(m *kafka.Message, t *partitionTracker) *delivery {
	return &delivery{
		c:         c,
		t:         t,
		partition: m.Partition,
		offset:    m.Offset,
		msg:       fromKafka(m),
		id:        messageID(m.Topic, m.Partition, m.Offset),
		ts:        m.Time,
	}
}

// next is a new delivery of the same message, with Redelivered n.
func (d *delivery) next(n int) *delivery {
	return &delivery{
		c:           d.c,
		t:           d.t,
		partition:   d.partition,
		offset:      d.offset,
		msg:         d.msg,
		id:          d.id,
		redelivered: n,
		ts:          d.ts,
	}
}

// Message returns the message. The sidecar may keep the pointer.
func (d *delivery) Message() *broker.Message { return &d.msg }

// MessageID is "<topic>/<partition>/<offset>".
func (d *delivery) MessageID() string { return d.id }

// Redelivered counts how often this consumer handed the message out
// before (nacks). Kafka keeps no delivery count: after a restart or a
// rebalance the count starts at 0 again.
func (d *delivery) Redelivered() int { return d.redelivered }

// Timestamp is the Kafka message's timestamp (the producer's create time,
// or the broker's append time if the topic is configured so).
func (d *delivery) Timestamp() time.Time { return d.ts }

// Ack marks the message processed. It only updates the consumer's commit
// tracker (no network round trip); the consumer commits the partition's
// offset once this and every earlier message it handed out on the
// partition are acked. After the consumer was closed the ack can no longer
// be committed: Ack returns an error wrapping broker.ErrClosed and the
// message comes back to the group from the last commit.
func (d *delivery) Ack(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kafkabroker: ack %s: %w", d.id, err)
	}
	if !d.answered.CompareAndSwap(false, true) {
		return fmt.Errorf("kafkabroker: ack %s: %w", d.id, ErrAnswered)
	}
	if !d.c.ack(d.t, d.offset) {
		return fmt.Errorf("kafkabroker: ack %s: consumer closed, the offset cannot be committed; the group will read the message again: %w",
			d.id, broker.ErrClosed)
	}
	return nil
}

// Nack hands the message back: the consumer's Next returns it again after
// delay (see the package doc). Its offset, and so every later offset of its
// partition, stays uncommitted meanwhile. Like Ack it does no network round
// trip. After the consumer was closed Nack does nothing and returns nil:
// the offset was not committed, so the group reads the message again.
func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kafkabroker: nack %s: %w", d.id, err)
	}
	if !d.answered.CompareAndSwap(false, true) {
		return fmt.Errorf("kafkabroker: nack %s: %w", d.id, ErrAnswered)
	}
	d.c.nack(d, max(delay, 0))
	return nil
}

// Position is the message's partition and offset (broker.Positioner).
func (d *delivery) Position() (int32, int64) { return int32(d.partition), d.offset }

// Endpoint describes the cluster for telemetry: its first bootstrap
// address (broker.Describer).
func (b *Broker) Endpoint() broker.Endpoint { return broker.NewEndpoint("kafka", b.cfg.Brokers[0]) }
