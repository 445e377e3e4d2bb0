package kafkabroker_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
)

// TestRebalanceKeepsNacked: a message nacked before a rebalance is neither
// lost nor delivered twice. If its partition stays with the consumer, the
// consumer delivers it again (Redelivered 1) and nothing else of the
// partition is delivered again; if the partition moves, the new owner
// reads it (and the messages after it, whose commit it held back) from the
// last commit, and the old consumer forgets it. Either way every offset is
// committed in the end.
func TestRebalanceKeepsNacked(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{Partitions: 2})
	const topic, group = "nack-rebalance", "g"
	spec := broker.ConsumerSpec{Topic: topic, Group: group}
	brokertest.PublishN(t, ev.b, topic, 0, 10) // round robin: 5 per partition

	c1 := brokertest.Consume(t, ev.b, spec)
	var nacked broker.Delivery
	for range 10 {
		d := brokertest.Next(t, c1)
		if _, po := parseID(t, d.MessageID()); nacked == nil && po.offset == 2 {
			nacked = d
			// Due after the loop below has read the other nine.
			if err := d.Nack(brokertest.Ctx(t), 500*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			continue
		}
		brokertest.Ack(t, d)
	}
	_, np := parseID(t, nacked.MessageID())
	// c1's Next is not called until the group has rebalanced around c2.
	c2 := brokertest.Consume(t, ev.b, spec)
	waitFor(t, brokertest.WaitLong, "the partitions split between c1 and c2", func() bool {
		a1, a2 := kafkabroker.Assigned(c1), kafkabroker.Assigned(c2)
		return len(a1) == 1 && len(a2) == 1 && a1[0] != a2[0]
	}, func() string { return "" })
	stayed := slices.Contains(kafkabroker.Assigned(c1), int(np.partition))

	again := func(c broker.Consumer) []broker.Delivery {
		var got []broker.Delivery
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			d, err := c.Next(ctx)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				return got
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			got = append(got, d)
			brokertest.Ack(t, d)
		}
	}
	got1, got2 := again(c1), again(c2)
	ids := func(ds []broker.Delivery) (out []string) {
		for _, d := range ds {
			out = append(out, d.MessageID())
		}
		return out
	}
	t.Logf("nacked %s; partition stayed with c1: %v; after the rebalance c1 delivered %v, c2 %v", nacked.MessageID(), stayed, ids(got1), ids(got2))
	if stayed {
		if len(got1) != 1 || got1[0].MessageID() != nacked.MessageID() || got1[0].Redelivered() != 1 || len(got2) != 0 {
			t.Fatalf("partition kept: c1 delivered %v, c2 %v; want only the nacked %s again from c1 (Redelivered 1)", ids(got1), ids(got2), nacked.MessageID())
		}
	} else {
		if len(got1) != 0 {
			t.Fatalf("partition moved: c1 still delivered %v", ids(got1))
		}
		if len(got2) != 3 || got2[0].MessageID() != nacked.MessageID() {
			t.Fatalf("partition moved: c2 delivered %v; want the nacked %s and the two after it", ids(got2), nacked.MessageID())
		}
	}
	for p := range 2 {
		waitFor(t, brokertest.WaitLong, "every offset committed", func() bool {
			return kafkatest.Committed(t, ev.c, group, topic, p) == 5
		}, func() string { return "" })
	}
}
