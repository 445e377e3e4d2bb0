package brokertest

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/internal/procstat"
)

// BenchTopic is name made unique to this process and benchmark run, so
// that a benchmark pointed at an external broker does not read or count
// the data of an earlier run.
func BenchTopic(b *testing.B, name string) string {
	return fmt.Sprintf("%s.%d.%d", name, os.Getpid(), b.N)
}

// BenchMessage is the message the adapters' publish benchmarks send to
// topic: a 1 KiB body, a key and a W3C trace header, as an app's traced
// publish carries.
func BenchMessage(topic string) *broker.Message {
	return &broker.Message{
		Topic:   topic,
		Key:     "key-1",
		Headers: []broker.Header{{Key: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
		Body:    make([]byte, 1024),
	}
}

// BenchPublish measures br.Publish of msg by one caller, each waiting
// for the broker's acknowledgement. One publish before the timer starts
// creates the topic (or looks up its route). Besides ns/op it reports the
// process's CPU time and syscalls per publish (ReportCPU).
func BenchPublish(b *testing.B, br broker.Broker, msg *broker.Message) {
	ctx := context.Background()
	if _, err := br.Publish(ctx, msg); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg.Body)))
	b.ReportAllocs()
	defer ReportCPU(b)()
	b.ResetTimer()
	for b.Loop() {
		if _, err := br.Publish(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchPublishParallel measures br.Publish by callers concurrent callers
// (about: testing rounds it to a multiple of GOMAXPROCS), each waiting for
// the broker's acknowledgement of its message before it publishes the next,
// as the sidecar's publish lanes do. msg gives caller i (from 1) its
// message, say with a key of its own; one publish of msg(0) before the
// timer starts creates the topic. It reports what BenchPublish reports.
func BenchPublishParallel(b *testing.B, br broker.Broker, callers int, msg func(i int) *broker.Message) {
	ctx := context.Background()
	first := msg(0)
	if _, err := br.Publish(ctx, first); err != nil {
		b.Fatal(err)
	}
	var caller atomic.Int64
	b.SetBytes(int64(len(first.Body)))
	b.ReportAllocs()
	b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
	defer ReportCPU(b)()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		m := msg(int(caller.Add(1)))
		for pb.Next() {
			if _, err := br.Publish(ctx, m); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
}

// BenchNextAck measures Next and Ack of b.N messages of size bytes that
// c's topic already holds. Besides ns/op it reports the process's CPU
// time per message (cpu-ns/op, ReportCPU).
func BenchNextAck(b *testing.B, c broker.Consumer, size int) {
	ctx := context.Background()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	defer ReportCPU(b)()
	b.ResetTimer()
	for range b.N {
		d, err := c.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := d.Ack(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BrokerPIDEnv names the environment variable that gives ReportCPU the
// process id of an external broker (a natsd, kafkad or rmq-testbroker
// process the benchmark talks to): its CPU time and syscalls per message
// are then reported too (broker-cpu-ns/op, broker-reads/op,
// broker-writes/op), so that two clients of one broker can be compared by
// what they cost the broker as well as themselves.
const BrokerPIDEnv = "BENCH_BROKER_PID"

// ReportCPU starts counting the process's CPU time (user and system) and,
// where /proc has them, its read and write syscalls; the function it
// returns reports them per b.N as cpu-ns/op, reads/op and writes/op, and
// the same of the broker process BrokerPIDEnv names, if any. On a
// machine shared with other work ns/op moves with the others' load, the
// CPU time a benchmark's own process spent much less, so a change of a few
// hundred nanoseconds per message shows in it first, and the syscalls say
// whether work was batched. Call it after the setup the benchmark does not
// measure, and the function it returns once the measured loop is over.
func ReportCPU(b *testing.B) func() {
	cpu0 := CPUTime()
	st0, stErr := procstat.Read(os.Getpid())
	brokerPID, _ := strconv.Atoi(os.Getenv(BrokerPIDEnv))
	var br0 procstat.Stat
	if brokerPID > 0 {
		var err error
		if br0, err = procstat.Read(brokerPID); err != nil {
			b.Fatalf("%s=%d: %v", BrokerPIDEnv, brokerPID, err)
		}
	}
	return func() {
		n := float64(b.N)
		if cpu := CPUTime(); cpu0 >= 0 && cpu >= 0 {
			b.ReportMetric(float64((cpu-cpu0).Nanoseconds())/n, "cpu-ns/op")
		}
		if brokerPID > 0 {
			if br1, err := procstat.Read(brokerPID); err == nil {
				b.ReportMetric(float64((br1.CPU-br0.CPU).Nanoseconds())/n, "broker-cpu-ns/op")
				b.ReportMetric(float64(br1.ReadCalls-br0.ReadCalls)/n, "broker-reads/op")
				b.ReportMetric(float64(br1.WriteCalls-br0.WriteCalls)/n, "broker-writes/op")
			}
		}
		if stErr != nil {
			return
		}
		if st1, err := procstat.Read(os.Getpid()); err == nil {
			b.ReportMetric(float64(st1.ReadCalls-st0.ReadCalls)/n, "reads/op")
			b.ReportMetric(float64(st1.WriteCalls-st0.WriteCalls)/n, "writes/op")
		}
	}
}

// CPUTime returns the CPU time (user and system) the process used so
// far, or -1 if it cannot be read.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
