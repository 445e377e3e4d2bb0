package rocketmqbroker

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// maxTopicLen is RocketMQ's topic length limit.
const maxTopicLen = 127

// maxGroupLen bounds derived consumer group names so that the group's
// retry topic, "%RETRY%" + group, is still a legal topic.
const maxGroupLen = maxTopicLen - len("%RETRY%")

// encodeName maps a msgmesh topic or group name ([A-Za-z0-9_.-]) to a
// RocketMQ name ([%|A-Za-z0-9_-]): '.' becomes '|'. The mapping is
// injective (msgmesh names have no '|'), so two msgmesh topics never share
// a RocketMQ topic; dot-free names are unchanged.
func encodeName(s string) string {
	return strings.ReplaceAll(s, ".", "|")
}

// rocketTopic is the RocketMQ topic of a msgmesh topic ("orders.created" →
// "orders|created").
func rocketTopic(topic string) string { return encodeName(topic) }

// checkTopic rejects what cannot be a RocketMQ topic after encodeName, and
// RocketMQ's own system topics.
func checkTopic(topic string) error {
	t := rocketTopic(topic)
	switch {
	case topic == "":
		return fmt.Errorf("empty topic")
	case len(t) > maxTopicLen:
		return fmt.Errorf("topic is %d bytes long; RocketMQ allows %d", len(t), maxTopicLen)
	case strings.ContainsAny(topic, "|%"):
		return fmt.Errorf("topic contains '|' or '%%'; allowed are letters, digits, '_', '-' and '.'")
	case t == "TBW102" || t == "SCHEDULE_TOPIC_XXXX" || strings.HasPrefix(t, "RMQ_SYS_") || strings.HasPrefix(t, "rmq_sys_"):
		return fmt.Errorf("topic %s is a RocketMQ system topic", t)
	}
	for i := 0; i < len(topic); i++ {
		if !nameByte(topic[i]) && topic[i] != '.' {
			return fmt.Errorf("topic has %q at byte %d; allowed are letters, digits, '_', '-' and '.'", topic[i], i)
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// checkGroup rejects group names the mapping cannot carry.
func checkGroup(group string) error {
	if group == "" {
		return fmt.Errorf("empty group")
	}
	for i := 0; i < len(group); i++ {
		if !nameByte(group[i]) && group[i] != '.' {
			return fmt.Errorf("group has %q at byte %d; allowed are letters, digits, '_', '-' and '.'", group[i], i)
		}
	}
	return nil
}

// consumerGroup is the RocketMQ consumer group of a msgmesh group on a
// topic: prefix + encodeName(group) + "__" + encodeName(topic)
// ("MESH_billing__orders|created").
//
// Why not the group alone: a RocketMQ group must subscribe the same topics
// on every member, because each member divides every subscribed topic's
// queues among all members of the group; a sidecar consuming (g, t1) and
// another consuming (g, t2) under one RocketMQ group would each leave
// part of a topic unread. One RocketMQ group per (group, topic) keeps the
// members of a group identical.
//
// A hash of (group, topic) is appended when the plain form could be
// ambiguous (the group contains "__" or ends in '_', so the first "__"
// would not mark where it ends) and when the name is too long (it is then
// cut to maxGroupLen). Without the hash the mapping is injective.
func consumerGroup(prefix, group, topic string) string {
	name := prefix + encodeName(group) + "__" + encodeName(topic)
	hashed := strings.Contains(group, "__") || strings.HasSuffix(group, "_")
	if hashed || len(name) > maxGroupLen {
		h := "_" + shortHash(group, topic)
		if len(name)+len(h) > maxGroupLen {
			name = name[:maxGroupLen-len(h)]
		}
		name += h
	}
	return name
}

// shortHash is 8 hex digits of FNV-1a over the parts, separated by a zero
// byte so that ("ab","c") and ("a","bc") differ.
func shortHash(parts ...string) string {
	h := fnv.New32a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return fmt.Sprintf("%08x", h.Sum32())
}

// CheckBrokerGroup refuses a broker group (ConsumerSpec.BrokerGroup)
// that cannot be a RocketMQ consumer group as it is: RocketMQ allows
// letters, digits, '_', '-' (and '%', '|', which msgmesh names do not
// have), and its retry topic "%RETRY%<group>" must stay a legal topic.
func (b *Broker) CheckBrokerGroup(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty broker group")
	case len(name) > maxGroupLen:
		return fmt.Errorf("broker group %q is %d bytes long; RocketMQ consumer groups are at most %d (so that %%RETRY%%<group> is a topic)", name, len(name), maxGroupLen)
	}
	for i := 0; i < len(name); i++ {
		if !nameByte(name[i]) {
			return fmt.Errorf("broker group %q has %q at byte %d; RocketMQ consumer groups allow letters, digits, '_' and '-'", name, name[i], i)
		}
	}
	return nil
}
