package kafkabroker_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
)

// benchBroker is the Broker a benchmark measures. With
// KAFKABROKER_BENCH_BROKERS set (host:port,..., say of a kafkad process) it
// talks to that cluster, so that the process's CPU and syscalls
// (cpu-ns/op, reads/op, writes/op) are the adapter's and kafka-go's alone;
// otherwise to an in-process kfake cluster, whose work those figures then
// include. Each benchmark uses topics of its own run (a name with the
// process id), so that an external cluster's earlier data is not read.
func benchBroker(b *testing.B) *kafkabroker.Broker {
	addrs := os.Getenv("KAFKABROKER_BENCH_BROKERS")
	if addrs == "" {
		return newEnv(b, kafkabroker.Config{}).b
	}
	cfg := kafkabroker.Config{Brokers: strings.Split(addrs, ","), Logger: testLog}
	return brokertest.Open(b, func(ctx context.Context) (*kafkabroker.Broker, error) { return kafkabroker.New(ctx, cfg) })
}

// BenchmarkPublish1KiB measures Publish (acks=all, wait for the offset) of
// a 1 KiB message with a key and a header, over TCP to a kfake cluster
// (benchBroker). "serial" is one caller: its latency includes the Writer's
// 1 ms batch timeout. "parallel" is 128 concurrent callers (the sidecar's
// in-flight limit per app connection) on distinct keys: the Writer batches
// them into shared produce requests.
func BenchmarkPublish1KiB(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		brokertest.BenchPublish(b, benchBroker(b), brokertest.BenchMessage(brokertest.BenchTopic(b, "bench.publish")))
	})
	b.Run("parallel", func(b *testing.B) {
		br := benchBroker(b)
		topic := brokertest.BenchTopic(b, "bench.publish")
		brokertest.BenchPublishParallel(b, br, 128, func(i int) *broker.Message {
			msg := brokertest.BenchMessage(topic)
			msg.Key = fmt.Sprintf("key-%d", i)
			return msg
		})
	})
}

// BenchmarkConsume1KiB measures Next + Ack of 1 KiB messages without a
// key (as meshctl bench publishes them) that are already stored, with the
// default prefetch (commits run in the background, at most every 5 ms).
func BenchmarkConsume1KiB(b *testing.B) {
	br := benchBroker(b)
	topic := brokertest.BenchTopic(b, "bench.consume")
	ctx := context.Background()
	// Fill the topic from many goroutines; only consumption is measured.
	var wg sync.WaitGroup
	var left atomic.Int64
	left.Store(int64(b.N))
	for range 64 {
		wg.Go(func() {
			msg := brokertest.BenchMessage(topic)
			msg.Key = ""
			for left.Add(-1) >= 0 {
				if _, err := br.Publish(ctx, msg); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	c := brokertest.Consume(b, br, broker.ConsumerSpec{Topic: topic, Group: "bench"})
	brokertest.BenchNextAck(b, c, 1024)
}
