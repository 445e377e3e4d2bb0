package natsbroker

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// maxNameLen bounds the stream and consumer names the adapter derives. NATS
// uses them as file names, so they stay well under common file-name limits.
const maxNameLen = 200

// sanitize maps s to a string that is valid in a NATS stream or consumer
// name: every byte outside [A-Za-z0-9_-] becomes '_'. It reports whether
// anything changed.
func sanitize(s string) (string, bool) {
	changed := false
	b := []byte(s)
	for i, c := range b {
		if !nameByte(c) {
			b[i] = '_'
			changed = true
		}
	}
	return string(b), changed
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// validName reports whether s may be used as (part of) a stream or consumer
// name as it is.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return false
		}
	}
	return true
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

// bound shortens name to maxNameLen, replacing the tail with a hash of the
// whole name so that two long names stay distinct.
func bound(name string) string {
	if len(name) <= maxNameLen {
		return name
	}
	return name[:maxNameLen-9] + "_" + shortHash(name)
}

// streamName is the name of the stream the adapter creates for topic:
// prefix + topic with dots turned into '_' ("orders.created" →
// "MESH_orders_created"). Two topics can sanitize to the same name
// ("a.b" and "a_b"); hashed is then set to pick the collision-free
// alternative prefix + sanitized + "_" + hash(topic). Which stream serves a
// topic is always looked up by subject, so the name only has to be unique
// and readable, not predictable.
func streamName(prefix, topic string, hashed bool) string {
	s, _ := sanitize(topic)
	name := prefix + s
	if hashed {
		name += "_" + shortHash(topic)
	}
	return bound(name)
}

// consumerName is the durable consumer name of group on topic:
// sanitize(group) + "__" + sanitize(topic), readable by an operator
// ("billing__orders_created"). A hash of (group, topic) is appended when
// the plain form could be ambiguous: when sanitizing changed either part,
// or when the group contains "__" or ends in '_' (so the first "__" no
// longer marks where the group ends). Without the hash the mapping is
// injective, so two topics of one group never share a consumer in an
// operator's stream that captures both.
func consumerName(group, topic string) string {
	g, gc := sanitize(group)
	t, tc := sanitize(topic)
	name := g + "__" + t
	if gc || tc || strings.Contains(group, "__") || strings.HasSuffix(group, "_") {
		name += "_" + shortHash(group, topic)
	}
	return bound(name)
}

// CheckBrokerGroup refuses a broker group (ConsumerSpec.BrokerGroup)
// that cannot be a durable consumer name as it is: NATS forbids '.' (and
// '*', '>', '/', '\', whitespace) there, and the adapter keeps names to
// maxNameLen bytes.
func (b *Broker) CheckBrokerGroup(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty broker group")
	case len(name) > maxNameLen:
		return fmt.Errorf("broker group %q is %d bytes long; durable consumer names here are at most %d", name, len(name), maxNameLen)
	case !validName(name):
		return fmt.Errorf("broker group %q cannot be a NATS durable consumer name: allowed are letters, digits, '_' and '-' ('.' is a subject separator in NATS)", name)
	}
	return nil
}
