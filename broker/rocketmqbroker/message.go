package rocketmqbroker

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/msgmesh/msgmesh/broker"
)

// maxPropertiesLen is RocketMQ's limit on a message's encoded properties
// (a 16-bit length in the store format).
const maxPropertiesLen = 1<<15 - 1

// clientProperties bounds the properties the client adds after the adapter
// checks (UNIQ_KEY, about 42 bytes; WAIT, 10) and the adapter's own fixed
// part (the names KEYS and SHARDING_KEY with their separators, 20).
const clientProperties = 128

// toRocket builds the RocketMQ message of msg for RocketMQ topic topic.
// The key becomes KEYS (indexed by RocketMQ) and SHARDING_KEY (the queue
// selector hashes it); headers become user properties. RocketMQ keeps
// properties in a map, so header keys must be unique.
//
// RocketMQ has no null body and keeps no empty property value, so a
// NullBody message is refused (broker.ErrNullBody), and so is an EmptyKey
// one (broker.ErrEmptyKey).
//
// It also returns the length of the message's properties as the client
// encodes them, but for the ones the client adds (clientProperties).
func toRocket(msg *broker.Message, topic string) (*primitive.Message, int, error) {
	switch {
	case msg.NullBody:
		return nil, 0, broker.ErrNullBody
	case msg.Key == "" && msg.EmptyKey:
		return nil, 0, broker.ErrEmptyKey
	}
	props := make(map[string]string, len(msg.Headers)+2)
	tag := ""
	// The sidecar refuses all of these headers first
	// (broker.CheckHeaders); this is the second line for direct callers.
	for _, h := range msg.Headers {
		if strings.EqualFold(h.Key, broker.HeaderTag) {
			// The message's tag: RocketMQ's TAGS, what subscriptions
			// filter on; not a user property.
			if why := broker.CheckTag(h.Value); why != "" {
				return nil, 0, &broker.HeaderError{Name: h.Key, Reason: why}
			}
			tag = h.Value
			continue
		}
		why := ""
		switch _, dup := props[h.Key]; {
		case h.Key == "":
			why = "the name is empty"
		case broker.RocketMQReserved(h.Key):
			why = "a RocketMQ system property"
		case strings.ContainsAny(h.Key, "\x01\x02"), strings.ContainsAny(h.Value, "\x01\x02"):
			why = "names and values may not contain bytes 0x01 or 0x02 (RocketMQ property separators)"
		case dup:
			why = "appears twice; RocketMQ properties hold one value per name"
		}
		if why != "" {
			return nil, 0, &broker.HeaderError{Name: h.Key, Reason: why}
		}
		props[h.Key] = h.Value
	}
	if msg.Key != "" {
		if strings.ContainsAny(msg.Key, "\x01\x02") {
			return nil, 0, &broker.HeaderError{Name: primitive.PropertyKeys, Reason: "the message key travels in this property and may not contain bytes 0x01 or 0x02 (RocketMQ property separators)"}
		}
		props[primitive.PropertyKeys] = msg.Key
		props[primitive.PropertyShardingKey] = msg.Key
	}
	n := 0
	for k, v := range props {
		n += len(k) + len(v) + 2
	}
	if n > maxPropertiesLen-clientProperties {
		return nil, 0, fmt.Errorf("key and headers take %d bytes as RocketMQ properties; it allows %d: %w", n, maxPropertiesLen-clientProperties, broker.ErrTooLarge)
	}
	if tag != "" {
		props[primitive.PropertyTags] = tag
		n += len(primitive.PropertyTags) + len(tag) + 2
	}
	// Not primitive.NewMessage, which makes a properties map that
	// WithProperties would replace at once. WithProperties, not
	// WithProperty: the latter drops empty values.
	m := &primitive.Message{Topic: topic, Body: msg.Body}
	m.WithProperties(props)
	return m, n, nil
}

// fromRocket rebuilds the msgmesh message: topic as the consumer was asked
// for, Key from KEYS, headers from the user properties sorted by key, and
// the tag (TAGS) as header broker.HeaderTag, first.
func fromRocket(m *primitive.MessageExt, topic string) broker.Message {
	props := m.GetProperties()
	out := broker.Message{Topic: topic, Key: props[primitive.PropertyKeys], Body: m.Body}
	// Up to 8 user keys (most messages) sorted on the stack.
	var keyArr [8]string
	keys := keyArr[:0]
	for k := range props {
		if !broker.RocketMQReserved(k) {
			keys = append(keys, k)
		}
	}
	tag := props[primitive.PropertyTags]
	if len(keys) == 0 && tag == "" {
		return out
	}
	slices.Sort(keys)
	out.Headers = make([]broker.Header, 0, len(keys)+1)
	if tag != "" {
		out.Headers = append(out.Headers, broker.Header{Key: broker.HeaderTag, Value: tag})
	}
	for _, k := range keys {
		out.Headers = append(out.Headers, broker.Header{Key: k, Value: props[k]})
	}
	return out
}

// messageID is the id of a delivered message that stays the same across
// redeliveries: ORIGIN_MESSAGE_ID, which the broker sets on a retry copy,
// else the message's own id (the producer's unique id, UNIQ_KEY, which is
// also PublishResult.MessageID; or the broker's offset id for messages
// from producers that set none).
func messageID(m *primitive.MessageExt) string {
	if id := m.GetProperty(primitive.PropertyOriginMessageId); id != "" {
		return id
	}
	return m.MsgId
}

// storedAt is when the broker stored the message. A retry copy was stored
// again, so its store time is the retry's; for it the born time (when the
// producer sent the original, which the broker keeps on retries) is used.
func storedAt(m *primitive.MessageExt) time.Time {
	ms := m.StoreTimestamp
	if m.GetProperty(primitive.PropertyRetryTopic) != "" || ms <= 0 {
		ms = m.BornTimestamp
	}
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// delayLevels are RocketMQ's default message delay levels (level n is
// index n-1), which retries use.
var delayLevels = []time.Duration{
	time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 3 * time.Minute, 4 * time.Minute, 5 * time.Minute,
	6 * time.Minute, 7 * time.Minute, 8 * time.Minute, 9 * time.Minute, 10 * time.Minute,
	20 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour,
}

// delayLevel is the retry delay level for a Nack delay: the shortest level
// at least as long as delay (level 1, 1 s, for 0 or less; level 18, 2 h,
// at most).
func delayLevel(delay time.Duration) int {
	for i, d := range delayLevels {
		if delay <= d {
			return i + 1
		}
	}
	return len(delayLevels)
}
