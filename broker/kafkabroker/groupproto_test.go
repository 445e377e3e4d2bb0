package kafkabroker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// protoBytes builds consumer-protocol bytes from int16, int32, string
// (int16-prefixed) and []byte (int32-prefixed; nil: null) values, as
// another client would write them.
func protoBytes(vals ...any) []byte {
	var b []byte
	for _, v := range vals {
		switch v := v.(type) {
		case int16:
			b = binary.BigEndian.AppendUint16(b, uint16(v))
		case int32:
			b = binary.BigEndian.AppendUint32(b, uint32(v))
		case string:
			b = appendString(b, v)
		case []byte:
			if v == nil {
				b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			} else {
				b = appendBytes(b, v)
			}
		default:
			panic(v)
		}
	}
	return b
}

// TestParseSubscription reads subscriptions as the clients in a mixed
// group write them.
func TestParseSubscription(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want *subscription
		err  bool
	}{
		{"java v0 (before Kafka 2.4), null user data",
			protoBytes(int16(0), int32(2), "a", "b", []byte(nil)),
			&subscription{Version: 0, Topics: []string{"a", "b"}, GenerationID: -1}, false},
		{"librdkafka 2.0 v1: empty user data, owned partitions",
			protoBytes(int16(1), int32(1), "t", []byte{}, int32(1), "t", int32(2), int32(0), int32(3)),
			&subscription{Version: 1, Topics: []string{"t"}, UserData: []byte{}, OwnedPartitions: []topicPartitions{{"t", []int32{0, 3}}}, GenerationID: -1}, false},
		{"librdkafka 2.x / java 3.x v3: generation and rack",
			protoBytes(int16(3), int32(1), "t", []byte{}, int32(0), int32(7), "rack-a"),
			&subscription{Version: 3, Topics: []string{"t"}, UserData: []byte{}, GenerationID: 7, RackID: "rack-a"}, false},
		{"v3 with a null rack",
			protoBytes(int16(3), int32(1), "t", []byte{}, int32(0), int32(-1), int16(-1)),
			&subscription{Version: 3, Topics: []string{"t"}, UserData: []byte{}, GenerationID: -1}, false},
		{"a future version: known fields read, the rest ignored",
			append(protoBytes(int16(9), int32(1), "t", []byte("u"), int32(0), int32(2), "r"), 1, 2, 3),
			&subscription{Version: 9, Topics: []string{"t"}, UserData: []byte("u"), GenerationID: 2, RackID: "r"}, false},
		{"kafka-go ConsumerGroup v0.4.51: version 1 without owned partitions",
			protoBytes(int16(1), int32(1), "t", []byte{}), nil, true},
		{"negative version", protoBytes(int16(-1), int32(0), []byte{}), nil, true},
		{"huge topic count", protoBytes(int16(0), int32(1<<30)), nil, true},
		{"empty", nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSubscription(tt.data)
			if tt.err {
				if !errors.Is(err, errProtocol) {
					t.Fatalf("parseSubscription = %+v, %v; want an error wrapping errProtocol", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parseSubscription = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestSubscriptionBytes: what this member sends is exactly version 1 as
// librdkafka reads it (rd_kafka_group_MemberMetadata_consumer_read:
// version, topics, user data, then owned partitions from version 1 on).
func TestSubscriptionBytes(t *testing.T) {
	got := appendSubscription(nil, &subscription{Topics: []string{"orders"}, OwnedPartitions: []topicPartitions{{"orders", []int32{1, 2}}}})
	want := protoBytes(int16(1), int32(1), "orders", []byte{}, int32(1), "orders", int32(2), int32(1), int32(2))
	if !bytes.Equal(got, want) {
		t.Fatalf("subscription bytes\n got %x\nwant %x", got, want)
	}
	got = appendSubscription(nil, &subscription{Topics: []string{"orders"}})
	want = protoBytes(int16(1), int32(1), "orders", []byte{}, int32(0))
	if !bytes.Equal(got, want) {
		t.Fatalf("subscription without owned partitions\n got %x\nwant %x", got, want)
	}
}

// TestAssignmentBytes: the assignment is written as librdkafka writes it
// (version 0) and read back; an empty one (what the coordinator gives a
// member the leader left out) is an empty assignment.
func TestAssignmentBytes(t *testing.T) {
	a := &assignment{Partitions: []topicPartitions{{"a", []int32{0, 2}}, {"b", []int32{1}}}}
	got := appendAssignment(nil, a)
	want := protoBytes(int16(0), int32(2), "a", int32(2), int32(0), int32(2), "b", int32(1), int32(1), []byte{})
	if !bytes.Equal(got, want) {
		t.Fatalf("assignment bytes\n got %x\nwant %x", got, want)
	}
	back, err := parseAssignment(got)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Partitions, a.Partitions) {
		t.Fatalf("read back %+v, want %+v", back.Partitions, a.Partitions)
	}
	if ps := partitionsOf(back.Partitions, "a"); !reflect.DeepEqual(ps, []int32{0, 2}) {
		t.Fatalf("partitionsOf a = %v", ps)
	}
	// Java writes null user data.
	if _, err := parseAssignment(protoBytes(int16(1), int32(0), []byte(nil))); err != nil {
		t.Fatalf("java assignment with null user data: %v", err)
	}
	if e, err := parseAssignment(nil); err != nil || len(e.Partitions) != 0 {
		t.Fatalf("empty assignment: %+v, %v", e, err)
	}
	if _, err := parseAssignment(protoBytes(int16(0), int32(1), "a", int32(5), int32(0))); !errors.Is(err, errProtocol) {
		t.Fatalf("truncated assignment: %v, want errProtocol", err)
	}
}

// FuzzParseSubscription: any bytes give a subscription or an error wrapping
// errProtocol, never a panic; what is read survives re-encoding.
func FuzzParseSubscription(f *testing.F) {
	f.Add(protoBytes(int16(0), int32(2), "a", "b", []byte(nil)))
	f.Add(protoBytes(int16(1), int32(1), "t", []byte{}, int32(1), "t", int32(2), int32(0), int32(3)))
	f.Add(protoBytes(int16(3), int32(1), "t", []byte{}, int32(0), int32(7), "rack-a"))
	f.Add(protoBytes(int16(1), int32(1), "t", []byte{}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parseSubscription(data)
		if err != nil {
			if !errors.Is(err, errProtocol) {
				t.Fatalf("error %v does not wrap errProtocol", err)
			}
			return
		}
		back, err := parseSubscription(appendSubscription(nil, s))
		if err != nil {
			t.Fatalf("re-encoded subscription unreadable: %v", err)
		}
		if !reflect.DeepEqual(back.Topics, s.Topics) || !reflect.DeepEqual(back.OwnedPartitions, s.OwnedPartitions) {
			t.Fatalf("round trip changed %+v into %+v", s, back)
		}
	})
}

// FuzzParseAssignment: as FuzzParseSubscription, for assignments.
func FuzzParseAssignment(f *testing.F) {
	f.Add(protoBytes(int16(0), int32(2), "a", int32(2), int32(0), int32(2), "b", int32(1), int32(1), []byte{}))
	f.Add(protoBytes(int16(1), int32(0), []byte(nil)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := parseAssignment(data)
		if err != nil {
			if !errors.Is(err, errProtocol) {
				t.Fatalf("error %v does not wrap errProtocol", err)
			}
			return
		}
		back, err := parseAssignment(appendAssignment(nil, a))
		if err != nil {
			t.Fatalf("re-encoded assignment unreadable: %v", err)
		}
		if !reflect.DeepEqual(back.Partitions, a.Partitions) {
			t.Fatalf("round trip changed %+v into %+v", a, back)
		}
	})
}

// TestAssignors checks both assignors against the examples of Kafka's
// RangeAssignor and RoundRobinAssignor documentation, and the cases a
// mixed group meets (uneven counts, members subscribing to different
// topics, a topic that does not exist, a member without a subscription).
func TestAssignors(t *testing.T) {
	type tp = topicPartitions
	three := []int32{0, 1, 2}
	tests := []struct {
		name     string
		assignor string
		members  []groupMemberSub
		parts    map[string][]int32
		want     map[string][]tp
	}{
		{"range: kafka doc example", assignorRange,
			[]groupMemberSub{{id: "C1", topics: []string{"t0", "t1"}}, {id: "C0", topics: []string{"t0", "t1"}}},
			map[string][]int32{"t0": three, "t1": three},
			map[string][]tp{"C0": {{"t0", []int32{0, 1}}, {"t1", []int32{0, 1}}}, "C1": {{"t0", []int32{2}}, {"t1", []int32{2}}}}},
		{"range: 7 partitions over 3 members, the first get one more", assignorRange,
			[]groupMemberSub{{id: "a", topics: []string{"t"}}, {id: "b", topics: []string{"t"}}, {id: "c", topics: []string{"t"}}},
			map[string][]int32{"t": {0, 1, 2, 3, 4, 5, 6}},
			map[string][]tp{"a": {{"t", []int32{0, 1, 2}}}, "b": {{"t", []int32{3, 4}}}, "c": {{"t", []int32{5, 6}}}}},
		{"range: more members than partitions", assignorRange,
			[]groupMemberSub{{id: "a", topics: []string{"t"}}, {id: "b", topics: []string{"t"}}, {id: "c", topics: []string{"t"}}},
			map[string][]int32{"t": {0, 1}},
			map[string][]tp{"a": {{"t", []int32{0}}}, "b": {{"t", []int32{1}}}, "c": {}}},
		{"range: per topic, among its subscribers only; unknown topic and empty subscription", assignorRange,
			[]groupMemberSub{{id: "a", topics: []string{"t1"}}, {id: "b", topics: []string{"t1", "t2", "gone"}}, {id: "x"}},
			map[string][]int32{"t1": {0, 1}, "t2": three},
			map[string][]tp{"a": {{"t1", []int32{0}}}, "b": {{"t1", []int32{1}}, {"t2", three}}, "x": {}}},
		{"range: static members first, by instance id", assignorRange,
			[]groupMemberSub{{id: "a", topics: []string{"t"}}, {id: "z", instanceID: "i2", topics: []string{"t"}}, {id: "y", instanceID: "i1", topics: []string{"t"}}},
			map[string][]int32{"t": three},
			map[string][]tp{"y": {{"t", []int32{0}}}, "z": {{"t", []int32{1}}}, "a": {{"t", []int32{2}}}}},
		{"roundrobin: kafka doc example, same subscriptions", assignorRoundRobin,
			[]groupMemberSub{{id: "C0", topics: []string{"t0", "t1"}}, {id: "C1", topics: []string{"t0", "t1"}}},
			map[string][]int32{"t0": three, "t1": three},
			map[string][]tp{"C0": {{"t0", []int32{0, 2}}, {"t1", []int32{1}}}, "C1": {{"t0", []int32{1}}, {"t1", []int32{0, 2}}}}},
		{"roundrobin: kafka doc example, different subscriptions", assignorRoundRobin,
			[]groupMemberSub{{id: "C0", topics: []string{"t0"}}, {id: "C1", topics: []string{"t0", "t1"}}, {id: "C2", topics: []string{"t0", "t1", "t2"}}},
			map[string][]int32{"t0": {0}, "t1": {0, 1}, "t2": three},
			map[string][]tp{"C0": {{"t0", []int32{0}}}, "C1": {{"t1", []int32{0}}}, "C2": {{"t1", []int32{1}}, {"t2", three}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := assign(tt.assignor, tt.members, tt.parts)
			for id, w := range tt.want {
				if !reflect.DeepEqual(got[id], w) && !(len(got[id]) == 0 && len(w) == 0) {
					t.Errorf("member %s: got %v, want %v", id, got[id], w)
				}
			}
			if len(got) != len(tt.members) {
				t.Errorf("assignment for %d members, want %d: %v", len(got), len(tt.members), got)
			}
		})
	}
}
