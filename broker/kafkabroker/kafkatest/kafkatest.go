// Package kafkatest starts an in-process Kafka cluster for tests of any
// msgmesh package. The cluster is github.com/twmb/franz-go/pkg/kfake: it
// speaks the real Kafka wire protocol over real TCP sockets, so the real
// client (kafka-go, in kafkabroker) runs unchanged against it. It keeps its
// data in memory.
package kafkatest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Start runs a kfake cluster whose brokers (three by default, see
// kfake.NumBrokers) listen on 127.0.0.1 random ports, closed by t.Cleanup.
// Their host:port addresses are c.ListenAddrs() (or Addrs(c)); any one of
// them bootstraps a client. opts are passed to kfake.NewCluster after the
// defaults, so they win.
func Start(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("kafkatest: start kfake cluster: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// Addrs returns the cluster's broker addresses (host:port), for
// kafkabroker.Config.Brokers.
func Addrs(c *kfake.Cluster) []string {
	return c.ListenAddrs()
}

// Committed reads the offset group has committed on topic/partition from
// cluster c, as an operator would (OffsetFetch with a client of its own);
// -1 when the group has committed none there.
func Committed(t testing.TB, c *kfake.Cluster, group, topic string, partition int) int64 {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(Addrs(c)...), Transport: tr, Timeout: 10 * time.Second}
	res, err := cl.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{
		GroupID: group,
		Topics:  map[string][]int{topic: {partition}},
	})
	if err != nil {
		t.Fatalf("kafkatest: OffsetFetch: %v", err)
	}
	if errors.Is(res.Error, kafka.GroupIdNotFound) {
		return -1 // a cluster that does not know the group (kfake) has no commit of it
	}
	if res.Error != nil {
		t.Fatalf("kafkatest: OffsetFetch: %v", res.Error)
	}
	for _, p := range res.Topics[topic] {
		if p.Partition == partition {
			if p.Error != nil {
				t.Fatalf("kafkatest: OffsetFetch: %v", p.Error)
			}
			return p.CommittedOffset
		}
	}
	t.Fatalf("kafkatest: OffsetFetch: no answer for %s/%d", topic, partition)
	return 0
}

// RefuseProduce is the answer of a broker that refuses every partition of
// a produce request with the Kafka error code: for kfake's request
// controls (kfake.Cluster.ControlKey with kmsg.Produce), to inject a
// broker's refusal without storing anything.
func RefuseProduce(req *kmsg.ProduceRequest, code int16) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	resp.Version = req.Version
	for _, rt := range req.Topics {
		t := kmsg.NewProduceResponseTopic()
		t.Topic, t.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			p := kmsg.NewProduceResponseTopicPartition()
			p.Partition, p.ErrorCode = rp.Partition, code
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}
