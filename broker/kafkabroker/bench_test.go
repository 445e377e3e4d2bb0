package kafkabroker_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
)

func benchMessage(topic string) *broker.Message {
	return &broker.Message{
		Topic:   topic,
		Key:     "key-1",
		Headers: []broker.Header{{Key: "Trace-Id", Value: "0af7651916cd43dd8448eb211c80319c"}},
		Body:    make([]byte, 1024),
	}
}

// BenchmarkPublish1KiB measures Publish (acks=all, wait for the offset) of
// a 1 KiB message with a key and a header, over TCP to an in-process kfake
// cluster. "serial" is one caller: its latency includes the Writer's 1 ms
// batch timeout. "parallel" is 128 concurrent callers (the sidecar's
// in-flight limit per app connection) on distinct keys: the Writer batches
// them into shared produce requests.
func BenchmarkPublish1KiB(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		ev := newEnv(b, kafkabroker.Config{})
		brokertest.BenchPublish(b, ev.b, benchMessage("bench.publish"))
	})
	b.Run("parallel", func(b *testing.B) {
		ev := newEnv(b, kafkabroker.Config{})
		ctx := context.Background()
		if _, err := ev.b.Publish(ctx, benchMessage("bench.publish")); err != nil {
			b.Fatal(err)
		}
		var worker atomic.Int64
		b.SetBytes(1024)
		b.ReportAllocs()
		b.SetParallelism(max(1, 128/max(1, runtimeProcs())))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			msg := benchMessage("bench.publish")
			msg.Key = fmt.Sprintf("key-%d", worker.Add(1))
			for pb.Next() {
				if _, err := ev.b.Publish(ctx, msg); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkConsume1KiB measures Next + Ack of 1 KiB messages that are
// already stored, with the default prefetch (commits run in the
// background, at most every 5 ms).
func BenchmarkConsume1KiB(b *testing.B) {
	ev := newEnv(b, kafkabroker.Config{})
	const topic = "bench.consume"
	ctx := context.Background()
	// Fill the topic from many goroutines; only consumption is measured.
	var wg sync.WaitGroup
	var left atomic.Int64
	left.Store(int64(b.N))
	for range 64 {
		wg.Go(func() {
			msg := benchMessage(topic)
			msg.Key = ""
			for left.Add(-1) >= 0 {
				if _, err := ev.b.Publish(ctx, msg); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	c := brokertest.Consume(b, ev.b, broker.ConsumerSpec{Topic: topic, Group: "bench"})
	brokertest.BenchNextAck(b, c, 1024)
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
