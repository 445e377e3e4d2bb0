package kafkabroker_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
)

// publishAll publishes bodies from..from+n-1 to topic from n goroutines
// released together, and returns each one's result and error.
func publishAll(t *testing.T, b *kafkabroker.Broker, topic string, from, n int) ([]broker.PublishResult, []error) {
	t.Helper()
	res := make([]broker.PublishResult, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			res[i], errs[i] = b.Publish(brokertest.Ctx(t), &broker.Message{Topic: topic, Body: brokertest.Body(from + i)})
		})
	}
	close(start)
	wg.Wait()
	return res, errs
}

// TestPublishRoundsAllAcked: concurrent Publish calls share the publish
// queue's rounds (one WriteMessages for several messages), and each one
// returns its own message's partition and offset: every message is stored
// once, where its Publish said.
func TestPublishRoundsAllAcked(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{})
	const topic, goroutines, each = "rounds", 64, 8
	brokertest.PublishN(t, ev.b, topic, 0, 1) // creates the topic
	rounds0, _ := kafkabroker.PublishRounds(ev.b)
	where := map[string]string{} // MessageID → body
	for r := range each {
		res, errs := publishAll(t, ev.b, topic, 1+r*goroutines, goroutines)
		for i, err := range errs {
			if err != nil {
				t.Fatalf("publish %d: %v", 1+r*goroutines+i, err)
			}
			if prev, dup := where[res[i].MessageID]; dup {
				t.Fatalf("%s given to two publishes (%s and %s)", res[i].MessageID, prev, brokertest.Body(1+r*goroutines+i))
			}
			where[res[i].MessageID] = string(brokertest.Body(1 + r*goroutines + i))
		}
	}
	n := goroutines * each
	rounds, givenBack := kafkabroker.PublishRounds(ev.b)
	rounds -= rounds0
	t.Logf("%d messages in %d rounds", n, rounds)
	if rounds >= int64(n) {
		t.Fatalf("%d messages took %d rounds: no round was shared", n, rounds)
	}
	if givenBack != 0 {
		t.Fatalf("%d messages given back to be written alone, want 0", givenBack)
	}
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: topic, Group: "g"})
	ds := brokertest.Collect(t, c, brokertest.Bodies(0, n+1))
	brokertest.ExactlyOnce(t, brokertest.Counts(ds))
	brokertest.ExpectNothing(t, c, 300*time.Millisecond)
	for _, d := range ds {
		if body, ok := where[d.MessageID()]; ok && body != string(d.Message().Body) {
			t.Fatalf("%s holds %q, its Publish sent %q", d.MessageID(), d.Message().Body, body)
		}
	}
}

// TestPublishRoundRefusedFailsAlone: a message the Writer refuses (here
// too large, let into the rounds on purpose) fails its own Publish with
// the adapter's error, and the messages that shared its refused round are
// written alone and acked, each stored once. Publishers keep the queue
// busy while oversized messages are published one after another, until
// one shared its round.
func TestPublishRoundRefusedFailsAlone(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, kafkabroker.Config{})
	kafkabroker.RoundsOversized(ev.b)
	const topic, publishers, tries = "refused", 16, 200
	brokertest.PublishN(t, ev.b, topic, 0, 1) // creates the topic
	var next atomic.Int64                     // bodies 1.. of the good messages
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := int(next.Add(1))
				if _, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: topic, Body: brokertest.Body(i)}); err != nil {
					t.Errorf("publish %d beside refused ones: %v", i, err)
					return
				}
			}
		})
	}
	shared := false
	for try := 1; try <= tries && !shared && !t.Failed(); try++ {
		_, err := ev.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: topic, Body: make([]byte, 2<<20)})
		if !errors.Is(err, broker.ErrTooLarge) || errors.Is(err, broker.ErrOutcomeUnknown) {
			t.Errorf("oversized publish: %v, want ErrTooLarge (not stored)", err)
		}
		// Each oversized message is given back; more means a
		// neighbour shared its round.
		if _, givenBack := kafkabroker.PublishRounds(ev.b); givenBack > int64(try) {
			t.Logf("%d messages given back for %d oversized ones", givenBack, try)
			shared = true
		}
	}
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	if !shared {
		t.Fatalf("no oversized message shared a round in %d tries: the fallback was not exercised", tries)
	}
	c := brokertest.Consume(t, ev.b, broker.ConsumerSpec{Topic: topic, Group: "g"})
	// Each body taken from next was published (and acked): all are
	// stored, once.
	ds := brokertest.Collect(t, c, brokertest.Bodies(0, int(next.Load())+1))
	brokertest.ExactlyOnce(t, brokertest.Counts(ds))
	brokertest.ExpectNothing(t, c, 300*time.Millisecond)
}
