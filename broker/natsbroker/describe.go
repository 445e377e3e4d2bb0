package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/topology"
)

var (
	_ broker.StreamDescriber = (*Broker)(nil)
	_ broker.GroupChecker    = (*Broker)(nil)
	_ broker.Describer       = (*Broker)(nil)
)

// DescribeStream reports the stream that captures topic and its settings,
// or, when none does yet, the settings Publish or Consume will create it
// with (Exists false). It creates nothing.
func (b *Broker) DescribeStream(ctx context.Context, topic string) (broker.StreamInfo, error) {
	if err := checkTopic(topic); err != nil {
		return broker.StreamInfo{}, fmt.Errorf("natsbroker: describe %q: %w: %w", topic, broker.ErrRejected, err)
	}
	name, err := b.js.StreamNameBySubject(ctx, topic)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		cfg := b.streamConfig(streamName(b.cfg.StreamPrefix, topic, false), topic)
		info := streamInfo(topic, cfg)
		info.CreatedBy = "msgmesh"
		return info, nil
	}
	if err != nil {
		return broker.StreamInfo{}, b.opError("describe", topic, fmt.Errorf("look up stream: %w", withSentinel(err)))
	}
	s, err := b.js.Stream(ctx, name)
	if err != nil {
		return broker.StreamInfo{}, b.opError("describe", topic, fmt.Errorf("read stream %s: %w", name, withSentinel(err)))
	}
	ci := s.CachedInfo()
	info := streamInfo(topic, ci.Config)
	info.Exists = true
	info.CreatedBy = "operator"
	if ci.Config.Description == streamDescription(topic) {
		info.CreatedBy = "msgmesh"
	}
	info.Messages, info.Bytes, info.Consumers = ci.State.Msgs, ci.State.Bytes, ci.State.Consumers
	return info, nil
}

// streamInfo is c in broker.StreamInfo's terms.
func streamInfo(topic string, c jetstream.StreamConfig) broker.StreamInfo {
	info := broker.StreamInfo{
		Topic: topic, Stream: c.Name,
		Retention: topology.RetentionLimits, MaxAge: c.MaxAge.String(), MaxBytes: c.MaxBytes, MaxMsgs: c.MaxMsgs,
		Discard: "old", Storage: storageName(c.Storage), Replicas: max(c.Replicas, 1), Duplicates: c.Duplicates.String(),
	}
	switch c.Retention {
	case jetstream.InterestPolicy:
		info.Retention = topology.RetentionInterest
	case jetstream.WorkQueuePolicy:
		info.Retention = "workqueue"
	}
	if c.Discard == jetstream.DiscardNew {
		info.Discard = "new"
	}
	return info
}

// CheckGroups refuses a second consumer group on a topic whose stream is a
// work queue (an operator's: msgmesh never creates one). JetStream gives
// each message of a work-queue stream to one consumer and refuses a second
// consumer of the same subject, so a second group could never consume:
// the error names the stream, the groups, and any consumer that reads the
// topic already. A topic without a stream yet, or on a stream of another
// retention, passes.
func (b *Broker) CheckGroups(ctx context.Context, topic string, groups []string) error {
	name, err := b.js.StreamNameBySubject(ctx, topic)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("natsbroker: check groups of %q: look up stream: %w", topic, withSentinel(err))
	}
	s, err := b.js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("natsbroker: check groups of %q: read stream %s: %w", topic, name, withSentinel(err))
	}
	if s.CachedInfo().Config.Retention != jetstream.WorkQueuePolicy {
		return nil
	}
	groups = slices.Compact(slices.Sorted(slices.Values(groups)))
	if len(groups) > 1 {
		return fmt.Errorf("%w: topic %q is on stream %s, a work queue (retention workqueue), which gives each message to one consumer: only one consumer group may consume it, and groups %s would; consume it with one group, or ask the operator for a stream with retention limits or interest",
			broker.ErrGroupConflict, topic, name, strings.Join(groups, ", "))
	}
	mine := map[string]bool{}
	for _, g := range groups {
		mine[consumerName(g, topic)] = true
	}
	names := s.ListConsumers(ctx)
	for ci := range names.Info() {
		if mine[ci.Name] || !filterCaptures(ci.Config, topic) {
			continue
		}
		return fmt.Errorf("%w: topic %q is on stream %s, a work queue (retention workqueue), and its consumer %s already reads the topic: JetStream allows one consumer per subject there, so group %s could never consume it; delete that consumer first, or ask the operator for a stream with retention limits or interest",
			broker.ErrGroupConflict, topic, name, ci.Name, strings.Join(groups, ", "))
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("natsbroker: check groups of %q: list the consumers of %s: %w", topic, name, withSentinel(err))
	}
	return nil
}

// filterCaptures reports whether a consumer of configuration c receives
// messages of topic: it has no filter, or a filter subject matching it.
func filterCaptures(c jetstream.ConsumerConfig, topic string) bool {
	filters := c.FilterSubjects
	if c.FilterSubject != "" {
		filters = append(filters, c.FilterSubject)
	}
	if len(filters) == 0 {
		return true
	}
	for _, f := range filters {
		if topology.Match(f, topic) {
			return true
		}
	}
	return false
}
