package rocketmqbroker_test

import (
	"context"
	"sync"
	"testing"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
)

// BenchmarkPublish1KiB measures one synchronous publish (wait for SEND_OK)
// of a 1 KiB message with a key and a header, over TCP to the in-memory
// test broker on loopback.
func BenchmarkPublish1KiB(b *testing.B) {
	ev := newEnv(b, rocketmqbroker.Config{})
	msg := &broker.Message{
		Topic:   "bench.publish",
		Key:     "key-1",
		Headers: []broker.Header{{Key: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
		Body:    make([]byte, 1024),
	}
	brokertest.BenchPublish(b, ev.b, msg)
}

// BenchmarkConsume1KiB measures Next + Ack of 1 KiB messages that are
// already stored, spread over the topic's 4 queues.
func BenchmarkConsume1KiB(b *testing.B) {
	ev := newEnv(b, rocketmqbroker.Config{})
	const topic = "bench.consume"
	msg := &broker.Message{Topic: topic, Body: make([]byte, 1024)}
	ctx := context.Background()
	// Fill the topic with parallel publishes; only consumption is
	// measured.
	const workers = 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < b.N; i += workers {
				if _, err := ev.b.Publish(ctx, msg); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	c := ev.consume(b, broker.ConsumerSpec{Topic: topic, Group: "bench"})
	brokertest.BenchNextAck(b, c, len(msg.Body))
}
