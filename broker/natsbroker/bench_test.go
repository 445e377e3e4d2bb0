package natsbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
)

// BenchmarkPublish1KiB measures one synchronous publish (wait for the
// JetStream ack) of a 1 KiB message with a key and a header, over TCP to an
// embedded server on loopback with file storage.
func BenchmarkPublish1KiB(b *testing.B) {
	ev := newEnv(b, natsbroker.Config{})
	brokertest.BenchPublish(b, ev.b, brokertest.BenchMessage("bench.publish"))
}

// BenchmarkConsume1KiB measures Next + Ack of 1 KiB messages that are
// already stored, with the default prefetch.
func BenchmarkConsume1KiB(b *testing.B) {
	ev := newEnv(b, natsbroker.Config{})
	msg := &broker.Message{Topic: "bench.consume", Key: "key-1", Body: make([]byte, 1024)}
	ctx := context.Background()
	if _, err := ev.b.Publish(ctx, msg); err != nil { // create the stream
		b.Fatal(err)
	}
	// Fill the stream quickly with async publishes from an operator
	// connection; only consumption is measured. The server fsyncs every
	// message, so a full window waits for room (the default stall wait,
	// 200 ms, is too short for that and failed the fill).
	for i := 1; i < b.N; i++ {
		nm := nats.NewMsg(msg.Topic)
		nm.Header.Set(natsbroker.KeyHeader, msg.Key)
		nm.Data = msg.Body
		if _, err := ev.js.PublishMsgAsync(nm, jetstream.WithStallWait(brokertest.WaitLong)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-ev.js.PublishAsyncComplete():
	case <-time.After(brokertest.WaitLong):
		b.Fatal("async publishes not acknowledged")
	}
	c := brokertest.Consume(b, ev.b, broker.ConsumerSpec{Topic: "bench.consume", Group: "bench"})
	brokertest.BenchNextAck(b, c, len(msg.Body))
}

// BenchmarkPublish1KiBParallel is 32 publishers each publishing
// synchronously, as a sidecar's publish lanes do: what the adapter's
// window toward the server does under concurrency.
func BenchmarkPublish1KiBParallel(b *testing.B) {
	ev := newEnv(b, natsbroker.Config{})
	brokertest.BenchPublishParallel(b, ev.b, 32, func(int) *broker.Message {
		return &broker.Message{Topic: "bench.parallel", Body: make([]byte, 1024)}
	})
}
