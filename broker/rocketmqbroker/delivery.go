package rocketmqbroker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/msgmesh/msgmesh/broker"
)

// delivery is one message handed out by Next.
type delivery struct {
	c           *consumer
	batch       *batch
	msg         broker.Message
	id          string
	redelivered int
	ts          time.Time
	queue       int
	offset      int64
	qk          queueKey // for a handover

	// Guarded by c.mu.
	timer   *time.Timer // AckWait; set when Next returns the delivery
	settled bool
}

func (c *consumer) newDelivery(b *batch, m *primitive.MessageExt) *delivery {
	d := &delivery{
		c:           c,
		batch:       b,
		msg:         fromRocket(m, c.topic),
		id:          messageID(m),
		redelivered: int(m.ReconsumeTimes),
		ts:          storedAt(m),
		offset:      m.QueueOffset,
	}
	if m.Queue != nil {
		d.queue = m.Queue.QueueId
	}
	if mq := b.cr.GetMQ(); mq != nil {
		d.qk = queueKey{group: c.rgroup, topic: mq.Topic, brokerName: mq.BrokerName, queue: mq.QueueId}
	}
	return d
}

// Message returns the message. The sidecar may keep the pointer.
func (d *delivery) Message() *broker.Message { return &d.msg }

// MessageID is the producer's unique message id (PublishResult.MessageID),
// the same on every redelivery (see messageID).
func (d *delivery) MessageID() string { return d.id }

// Redelivered is RocketMQ's reconsume count: how often the message was
// sent back (by Nack, by AckWait expiry, or by a consumer of another
// client). A redelivery after a consumer stopped without acking (crash,
// rebalance, Close with the delivery outstanding) is not counted.
func (d *delivery) Redelivered() int { return d.redelivered }

// Timestamp is when the broker stored the message (for a retry, when the
// producer sent the original).
func (d *delivery) Timestamp() time.Time { return d.ts }

// Ack marks the message consumed. It does no network round trip: the
// offset moves in the client's memory at once and reaches the broker with
// the client's 5 s commit, Pause, or Close.
// The offset of a queue only moves past messages that are all acked (or
// sent back), so a lost commit means a redelivery, never a loss.
func (d *delivery) Ack(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rocketmqbroker: ack %s: %w", d.id, err)
	}
	return d.settle(ctx, "ack", false, 0)
}

// Nack sends the message back to the broker, which redelivers it to the
// group after the delay of the retry level chosen for delay (RocketMQ's
// levels: 1 s, 5 s, 10 s, 30 s, 1 m ... 2 h; the shortest at least delay,
// so 1 s for 0) with Redelivered + 1. It waits for the broker's answer
// until ctx ends; the send-back goes on after that, and the message is
// never lost: until the send-back succeeds, the queue's offset stays
// before it. RocketMQ moves the message to the group's own dead-letter
// topic (%DLQ%<group>) only after MaxReconsumeTimes send-backs.
func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rocketmqbroker: nack %s: %w", d.id, err)
	}
	return d.settle(ctx, "nack", true, delay)
}

// expire hands the delivery back when AckWait passed without an answer.
func (d *delivery) expire() {
	ctx, cancel := context.WithTimeout(context.Background(), expireNackTimeout)
	defer cancel()
	err := d.settle(ctx, "expire", true, 0)
	if errors.Is(err, ErrSettled) || errors.Is(err, broker.ErrClosed) {
		return // answered meanwhile, or the consumer is gone
	}
	d.c.log.Warn("delivery not answered within AckWait; sent back to the broker",
		"msg_id", d.id, "queue", d.queue, "offset", d.offset, "ack_wait", d.c.ackWait, "error", err)
}

// settle records the answer and, once every message of the delivery's
// batch is answered, hands the batch to the client.
func (d *delivery) settle(ctx context.Context, op string, nack bool, delay time.Duration) error {
	c := d.c
	c.mu.Lock()
	if d.settled {
		c.mu.Unlock()
		return fmt.Errorf("rocketmqbroker: %s %s: %w", op, d.id, ErrSettled)
	}
	d.settled = true
	if d.timer != nil {
		d.timer.Stop()
	}
	delete(c.outstanding, d)
	b := d.batch
	b.remaining--
	if nack {
		b.nacked = true
		b.delay = max(b.delay, delay)
	}
	complete := b.remaining == 0
	if c.state == stateShut || complete && !c.beginOpLocked() {
		if nack {
			c.again[d] = d.redelivered + 1 // not sent back: a successor delivers it again
		}
		c.mu.Unlock()
		return fmt.Errorf("rocketmqbroker: %s %s: %w: %w", op, d.id, broker.ErrClosed, errDeliveryClosed)
	}
	c.mu.Unlock()
	var err error
	if complete {
		if err = c.ackBatch(ctx, b); err != nil {
			err = fmt.Errorf("rocketmqbroker: %s %s: %w", op, d.id, err)
		}
	}
	c.afterSettle()
	return err
}

// Position is the message's queue id and queue offset (broker.Positioner).
func (d *delivery) Position() (int32, int64) { return int32(d.queue), d.offset }

// Endpoint describes the cluster for telemetry: its first name server
// (broker.Describer).
func (b *Broker) Endpoint() broker.Endpoint {
	return broker.NewEndpoint("rocketmq", b.cfg.NameServers[0])
}
