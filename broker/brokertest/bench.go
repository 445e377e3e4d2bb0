package brokertest

import (
	"context"
	"testing"

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
// c's topic already holds.
func BenchNextAck(b *testing.B, c broker.Consumer, size int) {
	ctx := context.Background()
	b.SetBytes(int64(size))
	b.ReportAllocs()
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
