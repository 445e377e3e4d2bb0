package kafkabroker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// The Kafka consumer protocol: the bytes that members of a group of
// protocol type "consumer" put in JoinGroup (their subscription, one per
// assignor they offer) and that the leader puts in SyncGroup (each
// member's assignment). Kafka's own schema is
// clients/src/main/resources/common/message/ConsumerProtocolSubscription.json
// and ConsumerProtocolAssignment.json; every field is big-endian, strings
// are int16-length-prefixed, arrays and bytes int32-length-prefixed (-1:
// null):
//
//	Subscription  Version int16, Topics [string], UserData nullable bytes,
//	              v1+ OwnedPartitions [Topic string, Partitions [int32]],
//	              v2+ GenerationId int32 (default -1),
//	              v3+ RackId nullable string
//	Assignment    Version int16, AssignedPartitions [Topic string,
//	              Partitions [int32]], UserData nullable bytes
//
// Readers accept any version ≥ 0 and ignore what follows the fields they
// know, as Kafka's Java client does, so a newer member's subscription can
// still be read. Writers write the subscription as version 1 (with
// OwnedPartitions, which librdkafka requires from version 1 on: kafka-go's
// own ConsumerGroup omits it, which is why this adapter speaks the protocol
// itself) and the assignment as version 0, as librdkafka does; both are
// read by every Kafka client since 0.9.

// consumerProtocolType is the protocol type of Kafka consumer groups.
const consumerProtocolType = "consumer"

// subscriptionVersion and assignmentVersion are the versions written.
const (
	subscriptionVersion = 1
	assignmentVersion   = 0
)

// errProtocol marks consumer-protocol bytes that cannot be read.
var errProtocol = errors.New("malformed consumer protocol data")

// topicPartitions is one topic's partitions in a subscription's
// OwnedPartitions or in an assignment.
type topicPartitions struct {
	Topic      string
	Partitions []int32
}

// subscription is a member's JoinGroup metadata for one assignor.
type subscription struct {
	Version         int16
	Topics          []string
	UserData        []byte
	OwnedPartitions []topicPartitions
	GenerationID    int32 // -1 when absent (versions below 2)
	RackID          string
}

// assignment is what the leader gives one member in SyncGroup.
type assignment struct {
	Version    int16
	Partitions []topicPartitions
	UserData   []byte
}

// appendSubscription encodes s as version subscriptionVersion (s.Version
// is ignored).
func appendSubscription(b []byte, s *subscription) []byte {
	b = binary.BigEndian.AppendUint16(b, subscriptionVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.Topics)))
	for _, t := range s.Topics {
		b = appendString(b, t)
	}
	b = appendBytes(b, s.UserData)
	return appendTopicPartitions(b, s.OwnedPartitions)
}

// appendAssignment encodes a as version assignmentVersion (a.Version is
// ignored).
func appendAssignment(b []byte, a *assignment) []byte {
	b = binary.BigEndian.AppendUint16(b, assignmentVersion)
	b = appendTopicPartitions(b, a.Partitions)
	return appendBytes(b, a.UserData)
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendBytes writes p as non-null bytes (empty when p is empty): Kafka
// 0.9 brokers and Java clients of that age cannot read null user data.
func appendBytes(b, p []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	return append(b, p...)
}

func appendTopicPartitions(b []byte, tps []topicPartitions) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(tps)))
	for _, tp := range tps {
		b = appendString(b, tp.Topic)
		b = binary.BigEndian.AppendUint32(b, uint32(len(tp.Partitions)))
		for _, p := range tp.Partitions {
			b = binary.BigEndian.AppendUint32(b, uint32(p))
		}
	}
	return b
}

// parseSubscription decodes a member's subscription. Errors wrap
// errProtocol.
func parseSubscription(data []byte) (*subscription, error) {
	r := protoReader{b: data}
	s := &subscription{Version: r.int16(), GenerationID: -1}
	if r.err == nil && s.Version < 0 {
		return nil, fmt.Errorf("%w: subscription version %d", errProtocol, s.Version)
	}
	n := r.count(2)
	for i := 0; i < n && r.err == nil; i++ {
		s.Topics = append(s.Topics, r.string())
	}
	s.UserData = r.bytes()
	if s.Version >= 1 {
		s.OwnedPartitions = r.topicPartitions()
	}
	if s.Version >= 2 {
		s.GenerationID = r.int32()
	}
	if s.Version >= 3 {
		s.RackID = r.nullableString()
	}
	if r.err != nil {
		return nil, fmt.Errorf("subscription version %d: %w", s.Version, r.err)
	}
	return s, nil
}

// parseAssignment decodes an assignment. Empty data is an empty
// assignment (what Kafka sends a member the leader gave nothing to).
// Errors wrap errProtocol.
func parseAssignment(data []byte) (*assignment, error) {
	if len(data) == 0 {
		return &assignment{}, nil
	}
	r := protoReader{b: data}
	a := &assignment{Version: r.int16()}
	if r.err == nil && a.Version < 0 {
		return nil, fmt.Errorf("%w: assignment version %d", errProtocol, a.Version)
	}
	a.Partitions = r.topicPartitions()
	a.UserData = r.bytes()
	if r.err != nil {
		return nil, fmt.Errorf("assignment version %d: %w", a.Version, r.err)
	}
	return a, nil
}

// partitionsOf returns the partitions of topic in tps, sorted, without
// duplicates.
func partitionsOf(tps []topicPartitions, topic string) []int32 {
	var ps []int32
	for _, tp := range tps {
		if tp.Topic == topic {
			ps = append(ps, tp.Partitions...)
		}
	}
	slices.Sort(ps)
	return slices.Compact(ps)
}

// protoReader reads the consumer protocol's primitives; the first error
// sticks and later reads return zero values.
type protoReader struct {
	b   []byte
	err error
}

func (r *protoReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errProtocol, what)
	}
	r.b = nil
}

func (r *protoReader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.fail("truncated " + what)
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *protoReader) int16() int16 {
	p := r.take(2, "int16")
	if p == nil {
		return 0
	}
	return int16(binary.BigEndian.Uint16(p))
}

func (r *protoReader) int32() int32 {
	p := r.take(4, "int32")
	if p == nil {
		return 0
	}
	return int32(binary.BigEndian.Uint32(p))
}

// count reads an array length and checks that the rest of the data can
// hold that many elements of at least minSize bytes each, so that a
// corrupt length cannot make a reader allocate without bound.
func (r *protoReader) count(minSize int) int {
	n := int(r.int32())
	if r.err != nil {
		return 0
	}
	if n < 0 || n > len(r.b)/minSize {
		r.fail(fmt.Sprintf("array length %d", n))
		return 0
	}
	return n
}

func (r *protoReader) string() string {
	n := int(r.int16())
	if r.err == nil && n < 0 {
		r.fail("null string")
		return ""
	}
	return string(r.take(n, "string"))
}

func (r *protoReader) nullableString() string {
	n := int(r.int16())
	if n < 0 {
		return ""
	}
	return string(r.take(n, "string"))
}

func (r *protoReader) bytes() []byte {
	n := int(r.int32())
	if r.err != nil || n < 0 {
		return nil
	}
	return slices.Clone(r.take(n, "bytes"))
}

func (r *protoReader) topicPartitions() []topicPartitions {
	n := r.count(6)
	var tps []topicPartitions
	for i := 0; i < n && r.err == nil; i++ {
		tp := topicPartitions{Topic: r.string()}
		m := r.count(4)
		for j := 0; j < m && r.err == nil; j++ {
			tp.Partitions = append(tp.Partitions, r.int32())
		}
		tps = append(tps, tp)
	}
	return tps
}
