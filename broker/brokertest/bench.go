package brokertest

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// BenchPublish measures br.Publish of msg by one caller, each waiting
// for the broker's acknowledgement. One publish before the timer starts
// creates the topic (or looks up its route).
func BenchPublish(b *testing.B, br broker.Broker, msg *broker.Message) {
	ctx := context.Background()
	if _, err := br.Publish(ctx, msg); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg.Body)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := br.Publish(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
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

// ReportCPU starts counting the process's CPU time (user and system); the
// function it returns reports it per b.N as cpu-ns/op. On a machine
// shared with other work ns/op moves with the others' load, the CPU time
// a benchmark's own process spent much less, so a change of a few
// hundred nanoseconds per message shows in it first. Call it after the
// setup the benchmark does not measure, and the function it returns
// once the measured loop is over.
func ReportCPU(b *testing.B) func() {
	cpu0 := CPUTime()
	return func() {
		if cpu0 < 0 {
			return
		}
		if cpu := CPUTime(); cpu >= 0 {
			b.ReportMetric(float64((cpu-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
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
