package rocketmqbroker_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
	"github.com/msgmesh/msgmesh/internal/procstat"
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

// benchTopic is name made unique to this process and benchmark run, so
// that an external broker's earlier data does not matter.
func benchTopic(b *testing.B, name string) string {
	return fmt.Sprintf("%s.%d.%d", name, os.Getpid(), b.N)
}

func benchMessage(topic string) *broker.Message {
	return &broker.Message{
		Topic:   topic,
		Key:     "key-1",
		Headers: []broker.Header{{Key: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
		Body:    make([]byte, 1024),
	}
}

// procCost reports the process's CPU time and read and write syscalls per
// op between its call and the returned func's call.
func procCost(b *testing.B) (stop func()) {
	st0, err := procstat.Read(os.Getpid())
	if err != nil {
		return func() {}
	}
	return func() {
		st1, err := procstat.Read(os.Getpid())
		if err != nil {
			return
		}
		n := float64(b.N)
		b.ReportMetric(float64((st1.CPU-st0.CPU).Nanoseconds())/n, "cpu-ns/op")
		b.ReportMetric(float64(st1.ReadCalls-st0.ReadCalls)/n, "reads/op")
		b.ReportMetric(float64(st1.WriteCalls-st0.WriteCalls)/n, "writes/op")
	}
}

// BenchmarkPublish1KiB measures one synchronous publish (wait for SEND_OK)
// of a 1 KiB message with a key and a header, over TCP to the broker of
// benchBroker on loopback. "serial" is one caller; "parallel" is 32
// concurrent callers on distinct keys (the sidecar's publish lanes, meshctl
// bench's sync×32), whose requests share the client's connection.
func BenchmarkPublish1KiB(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		br := benchBroker(b)
		msg := benchMessage(benchTopic(b, "bench.publish"))
		if _, err := br.Publish(context.Background(), msg); err != nil {
			b.Fatal(err)
		}
		stop := procCost(b)
		brokertest.BenchPublish(b, br, msg)
		b.StopTimer()
		stop()
	})
	b.Run("parallel", func(b *testing.B) {
		br := benchBroker(b)
		topic := benchTopic(b, "bench.publish")
		ctx := context.Background()
		if _, err := br.Publish(ctx, benchMessage(topic)); err != nil {
			b.Fatal(err)
		}
		var worker atomic.Int64
		b.SetBytes(1024)
		b.ReportAllocs()
		b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
		stop := procCost(b)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			msg := benchMessage(topic)
			msg.Key = fmt.Sprintf("key-%d", worker.Add(1))
			for pb.Next() {
				if _, err := br.Publish(ctx, msg); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		stop()
	})
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
