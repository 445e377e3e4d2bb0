package kafkabroker

import (
	"cmp"
	"slices"
)

// The assignors this adapter offers, in order of preference: Kafka's
// built-in eager assignors, which librdkafka offers by default
// ("range,roundrobin") and the Java client too ([range,
// cooperative-sticky] since 3.0, range before that). The coordinator picks
// the first one every member supports, so a group mixed with those clients
// agrees on range. When this adapter leads the group it computes the
// assignment for every member, foreign ones included, exactly as Kafka's
// RangeAssignor and RoundRobinAssignor (and librdkafka's) do without rack
// information.
const (
	assignorRange      = "range"
	assignorRoundRobin = "roundrobin"
)

var assignors = []string{assignorRange, assignorRoundRobin}

// groupMemberSub is one member as the leader sees it: its ids and the
// topics it subscribes to.
type groupMemberSub struct {
	id         string
	instanceID string // static membership id; empty for dynamic members
	topics     []string
}

// compareMembers orders members as Kafka's assignors do: static members
// (group instance id) first, by instance id; then by member id.
func compareMembers(a, b *groupMemberSub) int {
	switch {
	case a.instanceID != "" && b.instanceID != "":
		return cmp.Compare(a.instanceID, b.instanceID)
	case a.instanceID != "":
		return -1
	case b.instanceID != "":
		return 1
	}
	return cmp.Compare(a.id, b.id)
}

// assign runs the named assignor. partitions maps each topic any member
// subscribes to onto its partition ids (a topic missing from it has
// none, like a topic that does not exist). The result has an entry,
// possibly empty, for every member.
func assign(name string, members []groupMemberSub, partitions map[string][]int32) map[string][]topicPartitions {
	sorted := make([]*groupMemberSub, len(members))
	for i := range members {
		sorted[i] = &members[i]
	}
	slices.SortFunc(sorted, compareMembers)
	out := make(map[string]map[string][]int32, len(members))
	for _, m := range sorted {
		out[m.id] = map[string][]int32{}
	}
	topics := make([]string, 0, len(partitions))
	for t := range partitions {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	subscribes := func(m *groupMemberSub, t string) bool { return slices.Contains(m.topics, t) }

	switch name {
	case assignorRoundRobin:
		// Every partition of every subscribed topic (topics by name,
		// partitions in order) goes to the next member, circularly, that
		// subscribes to its topic.
		next := 0
		for _, t := range topics {
			if !slices.ContainsFunc(sorted, func(m *groupMemberSub) bool { return subscribes(m, t) }) {
				continue
			}
			for _, p := range partitions[t] {
				for !subscribes(sorted[next%len(sorted)], t) {
					next++
				}
				m := sorted[next%len(sorted)]
				out[m.id][t] = append(out[m.id][t], p)
				next++
			}
		}
	default: // assignorRange
		// Per topic: the subscribers in order each take a consecutive
		// range; the first (partitions % subscribers) one more.
		for _, t := range topics {
			var subs []*groupMemberSub
			for _, m := range sorted {
				if subscribes(m, t) {
					subs = append(subs, m)
				}
			}
			if len(subs) == 0 {
				continue
			}
			ps := partitions[t]
			per, extra := len(ps)/len(subs), len(ps)%len(subs)
			for i, m := range subs {
				start := per*i + min(i, extra)
				n := per
				if i < extra {
					n++
				}
				if n > 0 {
					out[m.id][t] = append(out[m.id][t], ps[start:start+n]...)
				}
			}
		}
	}

	res := make(map[string][]topicPartitions, len(out))
	for id, byTopic := range out {
		tps := make([]topicPartitions, 0, len(byTopic))
		for _, t := range topics {
			if ps, ok := byTopic[t]; ok {
				tps = append(tps, topicPartitions{Topic: t, Partitions: ps})
			}
		}
		res[id] = tps
	}
	return res
}
