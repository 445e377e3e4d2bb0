package msgmesh

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
	"github.com/msgmesh/msgmesh/observe"
)

// Poison messages (docs/protocol.md §5.7). Every consumer group has, per
// topic, one policy on every broker: a message is delivered to the group
// at most MaxAttempts times. An attempt is one delivery to an app; it fails
// when the app nacks it (or answers ERROR) or lets the delivery time out.
// When attempt MaxAttempts fails, the sidecar publishes a copy to the
// binding's dead-letter topic (key, headers and body kept, the
// mesh.HeaderDeadLetter* headers added) and, only once the broker acked
// that publish, acks the original: a crash in between leaves the original
// to be redelivered, and at worst dead-lettered twice, never lost.
//
// The attempt count is the broker's (broker.Delivery.Redelivered() + 1),
// which apps see as redelivered on every delivery. A message the broker
// offers again after its last allowed attempt (that attempt's connection
// was lost, the sidecar stopped or crashed, or the dead-letter publish
// failed) is dead-lettered at once, without another delivery.

// Defaults of the poison-message settings of Config.
const (
	// DefaultMaxAttempts is Config.MaxAttempts when zero.
	DefaultMaxAttempts = 10
	// DefaultMaxNackDelay is Config.MaxNackDelay when zero.
	DefaultMaxNackDelay = time.Minute
)

// deadLetterRetry is how long a message whose dead-letter publish failed
// waits (at most Config.MaxNackDelay) before the broker offers it again
// and the sidecar retries the publish.
const deadLetterRetry = 5 * time.Second

// deadLetterPolicy is the effective policy of one (group, topic).
type deadLetterPolicy struct {
	maxAttempts int
	topic       string // the dead-letter topic
	// tags is the group's tag filter on the topic, canonical
	// (broker.TagFilter.String): part of the group's one policy per topic,
	// since one upstream consumer serves every registration of the pair.
	tags string
}

// policyFor is the effective policy of a consume binding: the binding's
// values, else the sidecar's default and DefaultDeadLetterTopic.
func (sc *Sidecar) policyFor(b registry.Binding) deadLetterPolicy {
	p := deadLetterPolicy{maxAttempts: b.MaxAttempts, topic: b.DeadLetter(), tags: "*"}
	if f, err := broker.ParseTagExpression(b.Tags); err == nil { // Validate checked it
		p.tags = f.String()
	}
	if p.maxAttempts == 0 {
		p.maxAttempts = sc.cfg.MaxAttempts
	}
	return p
}

// policyOf is the policy of (group, topic) as the registrations give it;
// the default policy for a pair no registration consumes (a delivery that
// a sibling forwarded, say).
func (sc *Sidecar) policyOf(k routeKey) deadLetterPolicy {
	if p, ok := sc.snap.Load().policy[k]; ok {
		return p
	}
	return sc.policyFor(registry.Binding{Group: k.group, Topic: k.topic})
}

// attemptFailed handles an attempt the app nacked (why DeadLetterNack,
// with the app's delay) or let time out (DeadLetterTimeout): the message
// goes back to the broker, to come again no later than MaxNackDelay,
// unless it was the last attempt the group's policy allows; then it is
// dead-lettered. The dead-letter publish runs on a goroutine of the
// sidecar's, not on the caller's (a connection's read loop or its
// timeout sweeper).
func (sc *Sidecar) attemptFailed(ctx context.Context, k routeKey, d broker.Delivery, why string, delay time.Duration) error {
	p := sc.policyOf(k)
	attempts := d.Redelivered() + 1
	if _, inherited := broker.As[broker.Inherited](d); attempts < p.maxAttempts || inherited {
		// An inherited delivery (hot upgrade) has no body to dead-letter:
		// the broker offers it again and overLimit moves it then.
		return d.Nack(ctx, min(delay, sc.cfg.MaxNackDelay))
	}
	if !sc.deadLetters.Go(func() { sc.deadLetter(k, d, p, attempts, why) }) {
		// Stopping: the broker offers it again (to this sidecar after a
		// restart, or to another of the group), and that one moves it.
		return d.Nack(ctx, 0)
	}
	return nil
}

// overLimit reports whether the broker offers d after the last attempt
// the group's policy allows; the caller then dead-letters it instead of
// delivering it.
func (sc *Sidecar) overLimit(k routeKey, d broker.Delivery) (deadLetterPolicy, bool) {
	p := sc.policyOf(k)
	return p, d.Redelivered() >= p.maxAttempts
}

// deadLetter publishes a copy of d to the policy's dead-letter topic and,
// once the broker acked it, acks d. If the publish fails, d goes back to
// the broker for deadLetterRetry, and is dead-lettered when offered again.
func (sc *Sidecar) deadLetter(k routeKey, d broker.Delivery, p deadLetterPolicy, attempts int, why string) {
	log := sc.log.With("group", k.group, "topic", k.topic, "message_id", d.MessageID(),
		"attempts", attempts, "reason", why, "dead_letter_topic", p.topic)
	msg := d.Message()
	dl := broker.Message{
		Topic:    p.topic,
		Key:      msg.Key,
		Body:     msg.Body,
		Headers:  deadLetterHeaders(msg.Headers, k, d.MessageID(), attempts, why, time.Now()),
		NullBody: msg.NullBody,
		EmptyKey: msg.EmptyKey,
	}
	cluster := sc.clusterOf(p.topic)
	ctx, cancel := context.WithTimeout(context.Background(), sc.cfg.PublishTimeout)
	defer cancel()
	start := time.Now()
	br := sc.cfg.Flow.Breaker(cluster)
	var res broker.PublishResult
	err := br.Allow()
	if err == nil {
		res, err = sc.cfg.Brokers[cluster].Publish(ctx, &dl)
		if errors.Is(err, broker.ErrNullBody) || errors.Is(err, broker.ErrEmptyKey) {
			// A Kafka tombstone (or empty key) dead-lettered to a broker
			// that has none: the copy gets an empty body (no key).
			log.Warn("the dead-letter topic's broker has no null body or empty key; the copy has an empty body and no key instead", "err", err)
			dl.NullBody, dl.EmptyKey = false, false
			res, err = sc.cfg.Brokers[cluster].Publish(ctx, &dl)
		}
		br.Record(err)
	}
	sc.metrics().Published(ctx, dl.Topic, len(dl.Body), time.Since(start), err)
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err != nil {
		sc.metrics().BrokerError(ctx, cluster)
		log.Error("dead-letter publish failed; the message goes back to the broker and is moved when it comes again",
			"retry_in", min(deadLetterRetry, sc.cfg.MaxNackDelay), "err", err)
		if nerr := d.Nack(sctx, min(deadLetterRetry, sc.cfg.MaxNackDelay)); nerr != nil {
			log.Warn("handing the message back failed; the broker redelivers it after its ack wait", "err", nerr)
		}
		return
	}
	observe.MarkDeadLetter(d)
	if err := d.Ack(sctx); err != nil {
		// The broker delivers it again and it is moved again: a duplicate
		// on the dead-letter topic, never a loss.
		log.Warn("acking the dead-lettered original failed; it may be dead-lettered twice", "err", err)
		return
	}
	log.Warn("message dead-lettered", "stream", res.Stream, "partition", res.Partition, "offset", res.Offset)
}

// deadLetterHeaders is the headers of a dead-lettered copy: the original's
// in their order, without any of the sidecar's dead-letter headers, then
// those headers for this move.
func deadLetterHeaders(orig []broker.Header, k routeKey, messageID string, attempts int, why string, now time.Time) []broker.Header {
	add := []broker.Header{
		{Key: mesh.HeaderDeadLetterTopic, Value: k.topic},
		{Key: mesh.HeaderDeadLetterGroup, Value: k.group},
		{Key: mesh.HeaderDeadLetterMessageID, Value: messageID},
		{Key: mesh.HeaderDeadLetterAttempts, Value: strconv.Itoa(attempts)},
		{Key: mesh.HeaderDeadLetterReason, Value: why},
		{Key: mesh.HeaderDeadLetterTime, Value: now.UTC().Format(time.RFC3339Nano)},
	}
	out := make([]broker.Header, 0, len(orig)+len(add))
	for _, h := range orig {
		ours := false
		for _, a := range add {
			if strings.EqualFold(h.Key, a.Key) {
				ours = true
				break
			}
		}
		if !ours {
			out = append(out, h)
		}
	}
	return append(out, add...)
}
