package msgmesh_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
	"github.com/msgmesh/msgmesh/flowctl"
	"github.com/msgmesh/msgmesh/internal/rmqtest"
	"github.com/msgmesh/msgmesh/internal/rmqtest/testbroker"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/topology"
)

// Tests that every publish answer tells the truth about what the broker
// stored (issue 12, item 4): PUBLISH_ACK only for a stored message, a
// retry-safe "not stored" code (UNAVAILABLE, ...) only for a message that
// was not stored, TIMEOUT for everything in between. Each strikes a broker
// fault in the middle of a counted run (runCounted) and checks every
// answer against what the consumer got, by message id.

// faultPublishTimeout is the sidecar's publish timeout in these tests:
// short, so that publishes caught by a fault are answered quickly.
const faultPublishTimeout = time.Second

// faultTweaks configure a sidecar for a fault run: a short publish timeout,
// a short delivery timeout (so lost acks are redelivered soon), and no
// circuit breaker, so that every publish reaches the broker adapter during
// the fault (an open breaker answers UNAVAILABLE without sending anything,
// which is true but tests nothing).
func faultTweaks(t testing.TB) func(*msgmesh.Config) {
	return func(c *msgmesh.Config) {
		c.PublishTimeout = faultPublishTimeout
		c.DeliveryTimeout = 2 * time.Second
		flow, err := flowctl.New(flowctl.Config{Breaker: flowctl.BreakerConfig{Failures: -1}})
		if err != nil {
			t.Fatal(err)
		}
		c.Flow = flow
	}
}

// TestNATSBrokerKilledMidPublish kills an external NATS JetStream server
// (a process of its own) with SIGKILL while a producer publishes through
// the sidecar, keeps it down until publishes have failed, and restarts it
// on the same store. Publishes in flight at the kill may have been stored:
// they must not be answered with a retry-safe code. Before the fix they
// were answered "503 UNAVAILABLE ... context deadline exceeded" and were
// delivered after the server came back (nats.go had buffered them).
func TestNATSBrokerKilledMidPublish(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS server process and kills it")
	}
	addr, dir := freePort(t), t.TempDir()
	srv := startNATSProc(t, addr, dir)
	url := "nats://" + addr
	e := newEnvOn(t, topology.Cluster{Name: "nats", Kind: topology.KindNATS, Endpoints: []string{url}}, faultTweaks(t))
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	f := runCounted(t, "NATS (external) broker SIGKILL", countedRun{
		meshAddr: e.addr,
		n:        1500,
		fault: func(t *testing.T, l *ledger) {
			before := l.errorsSoFar()
			srv.kill(t)
			// Down until every producer has seen a publish fail (each
			// waits for the publish timeout), then back on the same
			// store and address.
			sidecartest.WaitUntil(10*time.Second, func() bool { return l.errorsSoFar() >= before+producerWorkers })
			srv = startNATSProc(t, addr, dir)
		},
		caughtUp: natsCaughtUp(t, url),
	})
	if f.acked == f.published {
		t.Errorf("every publish was acked: the kill did not hit a publish")
	}
}

// natsCaughtUp reports, asking the NATS server at url with a client of its
// own, whether every consumer of the topic's stream has no message pending
// and none waiting for an ack.
func natsCaughtUp(t testing.TB, url string) func(testing.TB) bool {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return func(t testing.TB) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		name, err := js.StreamNameBySubject(ctx, topic)
		if err != nil {
			return false
		}
		s, err := js.Stream(ctx, name)
		if err != nil {
			return false
		}
		list := s.ListConsumers(ctx)
		n := 0
		for ci := range list.Info() {
			n++
			if ci.NumPending != 0 || ci.NumAckPending != 0 {
				return false
			}
		}
		return n > 0 && list.Err() == nil
	}
}

// faultScript is a scripted broker fault (TestKafkaProduceFaults,
// TestRocketMQSendFaults): the broker's request hook asks it what to do
// with each produce or send request, and run walks it through its phases.
type faultScript struct {
	phase atomic.Int32
	cuts  atomic.Int32  // requests phaseCut cut
	held  chan struct{} // closed when requests held by phaseLate may go on
}

// Phases of a faultScript. Each request meets the phase current when it
// arrives.
const (
	phasePass int32 = iota
	// phaseLate: the request is held (hold) until the sidecar has
	// answered a publish TIMEOUT, then stored and answered: stored after
	// the sidecar gave up on it.
	phaseLate
	// phaseCut: the connection is closed under the request, unanswered
	// and not stored.
	phaseCut
	// phaseRefuse: the broker refuses the request with a retriable
	// error; nothing is stored.
	phaseRefuse
)

func newFaultScript() *faultScript { return &faultScript{held: make(chan struct{})} }

// hold blocks a request met by phaseLate until the script lets it go.
func (s *faultScript) hold() { <-s.held }

// run goes through the phases late, cut and refuse, each until what it is
// about has happened, and then lets requests pass again.
func (s *faultScript) run(t *testing.T, l *ledger) {
	t.Helper()
	unknown := l.count(answerUnknown)
	s.phase.Store(phaseLate)
	if !l.waitCount(answerUnknown, unknown+1, 10*time.Second) {
		t.Errorf("no publish was answered TIMEOUT while the broker held its answers back")
	}
	s.phase.Store(phaseCut)
	close(s.held)
	sidecartest.WaitUntil(10*time.Second, func() bool { return s.cuts.Load() >= 8 })
	notStored := l.count(answerNotStored)
	s.phase.Store(phaseRefuse)
	if !l.waitCount(answerNotStored, notStored+producerWorkers, 10*time.Second) {
		t.Errorf("publishes the broker refused were not answered with a \"not stored\" code")
	}
	s.phase.Store(phasePass)
}

// TestKafkaProduceFaults strikes Kafka produce requests (kfake's request
// controls) in the middle of a counted run: answers held back until the
// sidecar gave up (then stored), connections cut under requests, and
// retriable refusals (NOT_ENOUGH_REPLICAS) that outlast the publish
// timeout. The held-back ones were answered "503 UNAVAILABLE ... context
// deadline exceeded" before the fix, and delivered.
func TestKafkaProduceFaults(t *testing.T) {
	c := kafkatest.Start(t)
	fs := newFaultScript()
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		switch fs.phase.Load() {
		case phaseLate:
			c.SleepControl(fs.hold) // then handled as usual: stored, answered late
		case phaseCut:
			fs.cuts.Add(1)
			return nil, errors.New("injected fault: connection cut"), true
		case phaseRefuse:
			return kafkatest.RefuseProduce(req.(*kmsg.ProduceRequest), 19), nil, true // NOT_ENOUGH_REPLICAS
		}
		return nil, nil, false
	})
	addrs := kafkatest.Addrs(c)
	e := newEnvOn(t, topology.Cluster{Name: "kafka", Kind: topology.KindKafka, Endpoints: addrs}, faultTweaks(t))
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	runCounted(t, "Kafka produce faults", countedRun{
		meshAddr: e.addr,
		n:        1500,
		fault:    fs.run,
		caughtUp: kafkaCaughtUp(t, addrs),
	})
}

// kafkaCaughtUp reports, asking the cluster with a client of its own,
// whether group g1 has committed every partition of the topic up to its
// end.
func kafkaCaughtUp(t testing.TB, addrs []string) func(testing.TB) bool {
	tr := &kafka.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cl := &kafka.Client{Addr: kafka.TCP(addrs...), Transport: tr, Timeout: 2 * time.Second}
	return func(t testing.TB) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil || len(md.Topics) != 1 || md.Topics[0].Error != nil {
			return false
		}
		var parts []int
		var last []kafka.OffsetRequest
		for _, p := range md.Topics[0].Partitions {
			parts = append(parts, p.ID)
			last = append(last, kafka.LastOffsetOf(p.ID))
		}
		ends, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: last}})
		if err != nil {
			return false
		}
		commits, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: "g1", Topics: map[string][]int{topic: parts}})
		if err != nil || commits.Error != nil {
			return false
		}
		committed := map[int]int64{}
		for _, p := range commits.Topics[topic] {
			committed[p.Partition] = p.CommittedOffset
		}
		for _, p := range ends.Topics[topic] {
			if p.Error != nil || committed[p.Partition] < p.LastOffset {
				return false
			}
		}
		return len(ends.Topics[topic]) == len(parts)
	}
}

// TestRocketMQSendFaults strikes RocketMQ sends (the test broker's
// interceptor) in the middle of a counted run: answers held back until the
// sidecar gave up (then stored), sends stored with the connection cut
// before the answer, and refusals (SYSTEM_ERROR) that outlast the
// client's retries. The first two were answered "503 UNAVAILABLE" before
// the fix, and delivered.
func TestRocketMQSendFaults(t *testing.T) {
	tb := testbroker.Start(t, rmqtest.Config{})
	fs := newFaultScript()
	tb.Intercept(func(code int16, _ map[string]string) rmqtest.Action {
		if code != rmqtest.CodeSendMessage && code != rmqtest.CodeSendMessageV2 && code != rmqtest.CodeSendBatchMessage {
			return rmqtest.Pass
		}
		switch fs.phase.Load() {
		case phaseLate:
			fs.hold() // blocks this connection; then stored and answered late
		case phaseCut:
			fs.cuts.Add(1)
			return rmqtest.HandleThenDisconnect
		case phaseRefuse:
			return rmqtest.Fail
		}
		return rmqtest.Pass
	})
	e := newEnvOn(t, topology.Cluster{Name: "rocketmq", Kind: topology.KindRocketMQ, Endpoints: []string{tb.NameServer()}}, faultTweaks(t))
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	runCounted(t, "RocketMQ send faults", countedRun{
		meshAddr: e.addr,
		n:        1500,
		fault:    fs.run,
		caughtUp: rocketmqCaughtUp(tb),
	})
}

// rocketmqCaughtUp reports, asking the test broker, whether group g1 has
// committed every queue of the topic up to its end. The names are the
// adapter's (docs/brokers.md): topic "orders|created", group
// "MESH_g1__orders|created".
func rocketmqCaughtUp(tb *rmqtest.Broker) func(testing.TB) bool {
	const rtopic, group = "orders|created", "MESH_g1__orders|created"
	return func(testing.TB) bool {
		n := tb.Queues(rtopic)
		for q := 0; q < n; q++ {
			if off, _ := tb.ConsumerOffset(group, rtopic, q); off < tb.MaxOffset(rtopic, q) {
				return false
			}
		}
		return n > 0
	}
}

// caughtUpOf is natsCaughtUp or kafkaCaughtUp for the cluster c describes.
// It is nil for RocketMQ: its test broker's state is read through the Go
// handle (rocketmqCaughtUp), which a topology.Cluster does not carry.
func caughtUpOf(t testing.TB, c topology.Cluster) func(testing.TB) bool {
	switch c.Kind {
	case topology.KindNATS:
		return natsCaughtUp(t, c.Endpoints[0])
	case topology.KindKafka:
		return kafkaCaughtUp(t, c.Endpoints)
	}
	return nil
}
