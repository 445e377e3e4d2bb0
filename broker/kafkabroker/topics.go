package kafkabroker

import (
	"context"
	"fmt"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/msgmesh/msgmesh/broker"
)

var _ broker.TopicChecker = (*Broker)(nil)

// collisionKey is the name Kafka compares topics by when it creates one:
// '.' and '_' become the same character in its metric names, so two topics
// whose names differ only there cannot both exist (CreateTopics refuses
// the second with INVALID_TOPIC_EXCEPTION, and a producer to it gets
// "[17] Invalid Topic").
func collisionKey(topic string) string { return strings.ReplaceAll(topic, ".", "_") }

// CheckTopics refuses, with an error wrapping broker.ErrTopicConflict that
// names both topics, a topic of topics that collides on Kafka ('.' versus
// '_', see collisionKey) with another of topics, with one of registered,
// or with a topic the cluster already has; and a topic Kafka's naming
// rules refuse. The cluster's topics come from the client's metadata
// cache (every topic, refreshed every few seconds), so the check costs no
// round trip once the Broker is connected; a topic created elsewhere in
// the last seconds may be missed, and then fails at its first publish as
// before. An error that does not wrap ErrTopicConflict means the
// cluster's topics could not be read.
func (b *Broker) CheckTopics(ctx context.Context, topics, registered []string) error {
	have := make(map[string]string, len(registered))
	for _, t := range registered {
		if _, ok := have[collisionKey(t)]; !ok {
			have[collisionKey(t)] = t
		}
	}
	mine := make(map[string]string, len(topics))
	for _, t := range topics {
		if err := checkTopic(t); err != nil {
			return fmt.Errorf("kafkabroker: topic %q: %w: %w", t, broker.ErrTopicConflict, err)
		}
		k := collisionKey(t)
		o, ok := mine[k]
		if !ok {
			o, ok = have[k]
		}
		if ok && o != t {
			return collision(t, o, "")
		}
		mine[k] = t
	}
	if b.isClosed() {
		return fmt.Errorf("kafkabroker: check topics: %w", broker.ErrClosed)
	}
	// Nil Topics: every topic, answered from the transport's cache.
	md, err := b.client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return wrap("check topics: list the cluster's topics", err)
	}
	for _, ct := range md.Topics {
		if t, ok := mine[collisionKey(ct.Name)]; ok && t != ct.Name {
			return collision(t, ct.Name, ", which exists on the Kafka cluster")
		}
	}
	return nil
}

func collision(topic, other, where string) error {
	return fmt.Errorf("kafkabroker: %w: topic %q collides with topic %q%s: Kafka refuses a topic whose name differs from another's only in '.' versus '_' (their metric names would clash); use another name",
		broker.ErrTopicConflict, topic, other, where)
}
