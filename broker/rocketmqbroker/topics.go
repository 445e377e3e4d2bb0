package rocketmqbroker

import (
	"context"
	"fmt"

	"github.com/msgmesh/msgmesh/broker"
)

var _ broker.TopicChecker = (*Broker)(nil)

// CheckTopics refuses, with an error wrapping broker.ErrTopicConflict, a
// topic RocketMQ cannot hold under the adapter's mapping (longer than 127
// bytes once mapped, or a RocketMQ system topic), so that such a name
// fails when an app registers it rather than at its first publish. The
// mapping is injective, so two msgmesh topics never collide, and
// registered is not needed. It asks the cluster nothing.
func (b *Broker) CheckTopics(ctx context.Context, topics, registered []string) error {
	for _, t := range topics {
		if err := checkTopic(t); err != nil {
			return fmt.Errorf("rocketmqbroker: topic %q: %w: %w", t, broker.ErrTopicConflict, err)
		}
	}
	return nil
}
