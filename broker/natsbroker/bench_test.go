package natsbroker_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
)

// BenchmarkPublish1KiB measures one synchronous publish (wait for the
// JetStream ack) of a 1 KiB message with a key and a header, over TCP to an
// embedded server on loopback with file storage.
func BenchmarkPublish1KiB(b *testing.B) {
	ev := newEnv(b, natsbroker.Config{})
	brokertest.BenchPublish(b, ev.b, brokertest.BenchMessage("bench.publish"))
}

// BenchURLEnv names the environment variable that points the consume
// benchmarks at a NATS server of their own (nats://host:port, say of a
// natsd process): the process's CPU and syscalls are then the client's
// alone, and with brokertest.BrokerPIDEnv the server's are reported too.
// Unset: an embedded server in the benchmark's process.
const benchURLEnv = "NATSBROKER_BENCH_URL"

// consumeRuns numbers the consume benchmarks' runs in this process, so
// that each has a topic of its own on an external server.
var consumeRuns atomic.Int64

// fillConsume stores n 1 KiB messages with a key on a topic of their own
// and returns the server's URL, the topic and a Broker on it. The first
// is published by the Broker, which creates the stream as the sidecar
// would; the rest by async publishes on an operator connection, quickly:
// only consumption is measured.
func fillConsume(b *testing.B, n int) (string, string, *natsbroker.Broker) {
	url := os.Getenv(benchURLEnv)
	if url == "" {
		url = natstest.Start(b).ClientURL()
	}
	br := brokertest.Open(b, func(ctx context.Context) (*natsbroker.Broker, error) {
		return natsbroker.New(ctx, natsbroker.Config{URL: url, Logger: quietLog})
	})
	topic := fmt.Sprintf("%s.%d", brokertest.BenchTopic(b, "bench.consume"), consumeRuns.Add(1))
	msg := &broker.Message{Topic: topic, Key: "key-1", Body: make([]byte, 1024)}
	if _, err := br.Publish(context.Background(), msg); err != nil {
		b.Fatal(err)
	}
	js := connect(b, url)
	// A server that fsyncs every message makes a full window wait for
	// room (the default stall wait, 200 ms, is too short for that and
	// failed the fill).
	for i := 1; i < n; i++ {
		nm := nats.NewMsg(msg.Topic)
		nm.Header.Set(natsbroker.KeyHeader, msg.Key)
		nm.Data = msg.Body
		if _, err := js.PublishMsgAsync(nm, jetstream.WithStallWait(brokertest.WaitLong)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(brokertest.WaitLong):
		b.Fatal("async publishes not acknowledged")
	}
	return url, topic, br
}

// connect returns JetStream on a TCP connection of its own to url.
func connect(b *testing.B, url string) jetstream.JetStream {
	nc, err := nats.Connect(url)
	return jetStreamOn(b, nc, err)
}

// BenchmarkConsume1KiB measures Next + Ack of 1 KiB messages that are
// already stored, with the default prefetch.
func BenchmarkConsume1KiB(b *testing.B) {
	_, topic, br := fillConsume(b, b.N)
	c := brokertest.Consume(b, br, broker.ConsumerSpec{Topic: topic, Group: "bench"})
	brokertest.BenchNextAck(b, c, 1024)
}

// BenchmarkConsume1KiBDirect is BenchmarkConsume1KiB's baseline: the same
// messages read with nats.go's own pull iterator (Consumer.Messages, a
// window of 1,024 refilled at half, as meshctl bench's direct client
// reads) and acked one by one, on a durable consumer configured as the
// adapter's. Against an external server (benchURLEnv) with
// brokertest.BrokerPIDEnv, the two say what the adapter's bounded pull
// requests cost the server beside the iterator's.
func BenchmarkConsume1KiBDirect(b *testing.B) {
	url, topic, _ := fillConsume(b, b.N)
	ctx := context.Background()
	js := connect(b, url)
	stream, err := js.StreamNameBySubject(ctx, topic)
	if err != nil {
		b.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: "direct", FilterSubject: topic, AckPolicy: jetstream.AckExplicitPolicy,
		MaxDeliver: -1, MaxAckPending: natsbroker.DefaultMaxAckPending,
	})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	b.SetBytes(1024)
	b.ReportAllocs()
	defer brokertest.ReportCPU(b)()
	b.ResetTimer()
	for range b.N {
		m, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Ack(); err != nil {
			b.Fatal(err)
		}
	}
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
