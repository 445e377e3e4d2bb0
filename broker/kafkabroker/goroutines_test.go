package kafkabroker_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
)

// ours returns the stacks of goroutines running kafka-go or this package's
// code (not the tests').
func ours() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var gs []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/segmentio/kafka-go") || strings.Contains(g, "kafkabroker.(*") {
			gs = append(gs, g)
		}
	}
	return gs
}

// TestCloseStopsGoroutines: after Broker.Close no goroutine of kafka-go or
// of the adapter is left (consumers left open are closed by Broker.Close).
// Not parallel: it looks at every goroutine of the process.
func TestCloseStopsGoroutines(t *testing.T) {
	c := kafkatest.Start(t)
	b, err := kafkabroker.New(brokertest.Ctx(t), kafkabroker.Config{Brokers: kafkatest.Addrs(c), Logger: testLog})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.PublishN(t, b, "t", 0, 50)
	c1, err := b.Consume(brokertest.Ctx(t), broker.ConsumerSpec{Topic: "t", Group: "g1"})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Collect(t, c1, brokertest.Bodies(0, 50))
	d := next2(t, b)
	if err := d.Nack(brokertest.Ctx(t), time.Hour); err != nil { // a queued redelivery
		t.Fatal(err)
	}
	if len(ours()) == 0 {
		t.Fatal("no kafka-go goroutines while running: the check is broken")
	}
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Broker.Close with two open consumers took %v", time.Since(start))
	deadline := time.Now().Add(brokertest.WaitLong)
	for {
		left := ours()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// next2 starts a second consumer (group g2) and returns its first delivery.
func next2(t *testing.T, b *kafkabroker.Broker) broker.Delivery {
	t.Helper()
	c, err := b.Consume(brokertest.Ctx(t), broker.ConsumerSpec{Topic: "t", Group: "g2"})
	if err != nil {
		t.Fatal(err)
	}
	return brokertest.Next(t, c)
}
