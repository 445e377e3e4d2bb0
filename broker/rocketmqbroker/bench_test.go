package rocketmqbroker_test

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
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
)

// benchBroker is the Broker a publish benchmark measures. With
// ROCKETMQBROKER_BENCH_NAMESRV set (host:port of a name server, say of an
// rmq-testbroker process) it talks to that cluster, so that the process's
// CPU and syscalls (cpu-ns/op, reads/op, writes/op) are the adapter's and
// rocketmq-client-go's alone; otherwise to an in-process test broker,
// whose work those figures then include.
func benchBroker(b *testing.B) *rocketmqbroker.Broker {
	ns := os.Getenv("ROCKETMQBROKER_BENCH_NAMESRV")
	if ns == "" {
		return newEnv(b, rocketmqbroker.Config{}).b
	}
	cfg := rocketmqbroker.Config{NameServers: strings.Split(ns, ","), Logger: quietLog}
	return brokertest.Open(b, func(ctx context.Context) (*rocketmqbroker.Broker, error) { return rocketmqbroker.New(ctx, cfg) })
}

// BenchmarkPublish1KiB measures one synchronous publish (wait for SEND_OK)
// of a 1 KiB message with a key and a header, over TCP to the broker of
// benchBroker on loopback. "serial" is one caller; "parallel" is 32
// concurrent callers on distinct keys (the sidecar's publish lanes, meshctl
// bench's sync×32), whose requests share the client's connection.
func BenchmarkPublish1KiB(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		brokertest.BenchPublish(b, benchBroker(b), brokertest.BenchMessage(brokertest.BenchTopic(b, "bench.publish")))
	})
	b.Run("parallel", func(b *testing.B) {
		br := benchBroker(b)
		topic := brokertest.BenchTopic(b, "bench.publish")
		brokertest.BenchPublishParallel(b, br, 32, func(i int) *broker.Message {
			msg := brokertest.BenchMessage(topic)
			msg.Key = fmt.Sprintf("key-%d", i)
			return msg
		})
	})
}

// consumeRuns numbers the runs of BenchmarkConsume1KiB in this process.
var consumeRuns atomic.Int64

// BenchmarkConsume1KiB measures Next + Ack of 1 KiB messages that are
// already stored, spread over the topic's 4 queues. With
// ROCKETMQBROKER_BENCH_NAMESRV set it consumes from that cluster (see
// benchBroker), a topic of its own per run, so that cpu-ns/op is the
// adapter's and the client's alone.
func BenchmarkConsume1KiB(b *testing.B) {
	var (
		br      broker.Broker
		consume func(spec broker.ConsumerSpec) broker.Consumer
		topic   = "bench.consume"
	)
	if os.Getenv("ROCKETMQBROKER_BENCH_NAMESRV") == "" {
		ev := newEnv(b, rocketmqbroker.Config{})
		br = ev.b
		consume = func(spec broker.ConsumerSpec) broker.Consumer { return ev.consume(b, spec) }
	} else {
		br = benchBroker(b)
		// BenchTopic names a topic by pid and b.N, which -count repeats.
		topic = fmt.Sprintf("%s.%d", brokertest.BenchTopic(b, topic), consumeRuns.Add(1))
		consume = func(spec broker.ConsumerSpec) broker.Consumer { return brokertest.Consume(b, br, spec) }
	}
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
				if _, err := br.Publish(ctx, msg); err != nil {
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
	c := consume(broker.ConsumerSpec{Topic: topic, Group: "bench"})
	brokertest.BenchNextAck(b, c, len(msg.Body))
}
