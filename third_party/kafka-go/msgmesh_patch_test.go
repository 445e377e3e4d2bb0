package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go/protocol"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"
)

// fakeCluster is a RoundTripper that answers metadata requests from a
// fixed topic → partition count table (counting them per topic) and
// acknowledges every produce request. msgmesh's test of patch 1
// (PATCHES.md); the module's own tests need a Kafka broker.
type fakeCluster struct {
	partitions map[string]int

	mu       sync.Mutex
	lookups  map[string]int
	produces int
}

func (f *fakeCluster) RoundTrip(_ context.Context, _ net.Addr, req Request) (protocol.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r := req.(type) {
	case *metadataAPI.Request:
		res := &metadataAPI.Response{}
		for _, name := range r.TopicNames {
			f.lookups[name]++
			t := metadataAPI.ResponseTopic{Name: name}
			n, ok := f.partitions[name]
			if !ok {
				t.ErrorCode = int16(UnknownTopicOrPartition)
			}
			for p := range n {
				t.Partitions = append(t.Partitions, metadataAPI.ResponsePartition{PartitionIndex: int32(p)})
			}
			res.Topics = append(res.Topics, t)
		}
		return res, nil
	case *produceAPI.Request:
		f.produces++
		res := &produceAPI.Response{}
		for _, t := range r.Topics {
			rt := produceAPI.ResponseTopic{Topic: t.Topic}
			for _, p := range t.Partitions {
				rt.Partitions = append(rt.Partitions, produceAPI.ResponsePartition{Partition: p.Partition})
			}
			res.Topics = append(res.Topics, rt)
		}
		return res, nil
	}
	return nil, fmt.Errorf("fakeCluster: unexpected request %T", req)
}

// TestWriteMessagesLooksUpEachRunOfATopic: WriteMessages reads a topic's
// partition count once for each run of consecutive messages to it, and
// each message is balanced over its own topic's partitions.
func TestWriteMessagesLooksUpEachRunOfATopic(t *testing.T) {
	f := &fakeCluster{partitions: map[string]int{"one": 1, "four": 4}, lookups: map[string]int{}}
	var mu sync.Mutex
	used := map[string]map[int]bool{}
	w := &Writer{
		Addr:         TCP("fake:9092"),
		Transport:    f,
		Balancer:     &RoundRobin{},
		BatchTimeout: time.Millisecond,
		RequiredAcks: RequireAll,
		Completion: func(msgs []Message, err error) {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range msgs {
				if used[m.Topic] == nil {
					used[m.Topic] = map[int]bool{}
				}
				used[m.Topic][m.Partition] = true
			}
		},
	}
	defer w.Close()
	var msgs []Message
	for range 8 {
		msgs = append(msgs, Message{Topic: "four"})
	}
	for range 3 {
		msgs = append(msgs, Message{Topic: "one"})
	}
	msgs = append(msgs, Message{Topic: "four"})
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	if f.lookups["four"] != 2 || f.lookups["one"] != 1 {
		t.Fatalf("partition lookups %v, want four:2 one:1 (one per run)", f.lookups)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(used["one"]) != 1 || !used["one"][0] {
		t.Fatalf("topic one (1 partition) written to partitions %v", used["one"])
	}
	if len(used["four"]) != 4 {
		t.Fatalf("topic four (4 partitions) written to partitions %v, want 0-3", used["four"])
	}
}

// TestWriteMessagesUnknownTopicQueuesNothing: a message to an unknown
// topic fails the whole call before any message joins a batch (msgmesh's
// adapter relies on this to write a refused call's messages one by one).
func TestWriteMessagesUnknownTopicQueuesNothing(t *testing.T) {
	f := &fakeCluster{partitions: map[string]int{"known": 2}, lookups: map[string]int{}}
	w := &Writer{Addr: TCP("fake:9092"), Transport: f, BatchTimeout: time.Millisecond, Async: true}
	err := w.WriteMessages(context.Background(), Message{Topic: "known"}, Message{Topic: "gone"}, Message{Topic: "known"})
	if !errors.Is(err, UnknownTopicOrPartition) {
		t.Fatalf("WriteMessages: %v, want UnknownTopicOrPartition", err)
	}
	if err := w.Close(); err != nil { // flushes whatever was queued
		t.Fatal(err)
	}
	if f.produces != 0 {
		t.Fatalf("%d produce requests after a refused call, want 0", f.produces)
	}
}
