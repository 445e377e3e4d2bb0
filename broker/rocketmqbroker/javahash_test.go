package rocketmqbroker_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
)

// javaStyleSelector is what a Java producer does with
// SelectMessageQueueByHash and the key as its argument, written here
// independently of the adapter: Java's String.hashCode over UTF-16 code
// units with int32 overflow, Math.abs of the remainder, over the route's
// queues sorted by broker name and queue id.
type javaStyleSelector struct{}

func (javaStyleSelector) Select(msg *primitive.Message, mqs []*primitive.MessageQueue, _ string) *primitive.MessageQueue {
	var h int32
	for _, u := range utf16.Encode([]rune(msg.GetShardingKey())) {
		h = h*31 + int32(u)
	}
	v := h % int32(len(mqs))
	if v < 0 {
		v = -v
	}
	return mqs[v]
}

// TestKeysShareQueuesWithJavaProducers: a producer that picks queues as
// Java's SelectMessageQueueByHash does and the sidecar's adapter, sharing
// one topic, put every message of a key on the same queue, so a consumer
// group reads each key's messages in the order they were published
// (interleaved between the two producers). With the client's FNV-32a
// selector, which the adapter used before, most keys landed elsewhere.
func TestKeysShareQueuesWithJavaProducers(t *testing.T) {
	ev := newEnv(t, rocketmqbroker.Config{})
	const topic = "keys.shared"
	p, err := producer.NewDefaultProducer(
		producer.WithNameServer([]string{ev.tb.NameServer()}),
		producer.WithGroupName("JAVA_STYLE_PRODUCER"),
		producer.WithInstanceName("java-style"),
		producer.WithQueueSelector(javaStyleSelector{}),
		producer.WithRetry(0),
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })

	keys := []string{"order-1", "order-2", "customer-öß", "日本", "k😀", "polygenelubricants", "Aa", "BB", "x"}
	queueOf := map[string]int{}
	note := func(key string, q int, who string) {
		if first, ok := queueOf[key]; ok && first != q {
			t.Errorf("key %q: %s put it on queue %d, the other producer on %d", key, who, q, first)
		}
		queueOf[key] = q
	}
	const rounds = 6
	for i := range rounds {
		for _, key := range keys {
			body := fmt.Sprintf("%s|%d", key, i)
			if i%2 == 0 {
				m := primitive.NewMessage(strings.ReplaceAll(topic, ".", "|"), []byte(body))
				m.WithKeys([]string{key})
				m.WithShardingKey(key)
				res, err := p.SendSync(brokertest.Ctx(t), m)
				if err != nil {
					t.Fatalf("Java-style producer: %v", err)
				}
				note(key, res.MessageQueue.QueueId, "the Java-style producer")
				continue
			}
			res, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: topic, Key: key, Body: []byte(body)})
			if err != nil {
				t.Fatal(err)
			}
			note(key, int(res.Partition), "the sidecar's adapter")
		}
	}

	c := ev.consume(t, broker.ConsumerSpec{Topic: topic, Group: "ordered"})
	last := map[string]int{}
	for range rounds * len(keys) {
		d := brokertest.Next(t, c)
		key, seq, _ := strings.Cut(string(d.Message().Body), "|")
		n, _ := strconv.Atoi(seq)
		if d.Message().Key != key {
			t.Errorf("message %q arrived with key %q", d.Message().Body, d.Message().Key)
		}
		if prev, ok := last[key]; ok && n != prev+1 {
			t.Errorf("key %q: message %d came after %d", key, n, prev)
		}
		last[key] = n
		if err := d.Ack(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(brokertest.Ctx(t)); err != nil { // at a quiet moment (helpers_test.go)
		t.Errorf("Consumer.Close: %v", err)
	}
}
