package msgmesh_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// answer is what a producer was told about one message id.
type answer uint8

const (
	// answerAck: PUBLISH_ACK, the broker stored the message.
	answerAck answer = iota + 1
	// answerUnknown: TIMEOUT, the connection to the sidecar lost with the
	// publish outstanding, or the producer's own deadline: the message
	// may or may not be stored (client package doc).
	answerUnknown
	// answerNotStored: any other ERROR. The sidecar promises that the
	// message was not stored, so a retry cannot duplicate it.
	answerNotStored
)

// answerOf places the outcome of one Publish, with a label for the counts.
func answerOf(err error) (answer, string) {
	switch {
	case err == nil:
		return answerAck, "ack"
	case errors.Is(err, client.ErrConnectionLost):
		return answerUnknown, "connection lost"
	case errors.Is(err, context.DeadlineExceeded):
		return answerUnknown, "producer deadline"
	}
	switch code := client.CodeOf(err); code {
	case 0:
		return answerUnknown, "local error"
	case mesh.CodeTimeout:
		return answerUnknown, code.String()
	default:
		return answerNotStored, code.String()
	}
}

// ledger records, by message id, what the producer was told and what the
// consumer got. Ids are the message bodies.
type ledger struct {
	mu         sync.Mutex
	answers    map[string]answer
	labels     map[answer]map[string]int // answers by class and label: "TIMEOUT", "UNAVAILABLE", ...
	firstErr   map[string]string
	delivered  map[string]int // deliveries per id
	deliveries int
}

func newLedger() *ledger {
	return &ledger{answers: map[string]answer{}, labels: map[answer]map[string]int{answerAck: {}, answerUnknown: {}, answerNotStored: {}},
		firstErr: map[string]string{}, delivered: map[string]int{}}
}

func (l *ledger) answered(id string, err error) {
	a, label := answerOf(err)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.answers[id] = a
	l.labels[a][label]++
	if err != nil && l.firstErr[label] == "" {
		l.firstErr[label] = err.Error()
	}
}

func (l *ledger) got(id string) {
	l.mu.Lock()
	l.delivered[id]++
	l.deliveries++
	l.mu.Unlock()
}

// count is how many ids got answer a.
func (l *ledger) count(a answer) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, x := range l.answers {
		if x == a {
			n++
		}
	}
	return n
}

// errorsSoFar counts the answers that were not PUBLISH_ACK.
func (l *ledger) errorsSoFar() int { return l.count(answerUnknown) + l.count(answerNotStored) }

// waitCount waits until at least n ids got answer a, or within passes;
// it reports whether they did.
func (l *ledger) waitCount(a answer, n int, within time.Duration) bool {
	return sidecartest.WaitUntil(within, func() bool { return l.count(a) >= n })
}

// ackedDelivered reports whether every acked id has been delivered.
func (l *ledger) ackedDelivered() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, a := range l.answers {
		if a == answerAck && l.delivered[id] == 0 {
			return false
		}
	}
	return true
}

// figures are what a counted run reports.
type figures struct {
	published, acked, unknown, notStored int
	// delivered counts distinct ids delivered; unknownDelivered those of
	// them whose publish had an unknown outcome.
	delivered, unknownDelivered int
	deliveries, duplicates      int
	// lost: acked but never delivered. wrong: answered "not stored" but
	// delivered. Both must be zero.
	lost, wrong int
	// labels count the unknown and not-stored answers by what they were.
	unknownLabels, notStoredLabels map[string]int
}

func (l *ledger) figures() figures {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := figures{published: len(l.answers), delivered: len(l.delivered), deliveries: l.deliveries,
		unknownLabels: maps.Clone(l.labels[answerUnknown]), notStoredLabels: maps.Clone(l.labels[answerNotStored])}
	f.duplicates = f.deliveries - f.delivered
	for id, a := range l.answers {
		got := l.delivered[id] > 0
		switch a {
		case answerAck:
			f.acked++
			if !got {
				f.lost++
			}
		case answerUnknown:
			f.unknown++
			if got {
				f.unknownDelivered++
			}
		case answerNotStored:
			f.notStored++
			if got {
				f.wrong++
			}
		}
	}
	return f
}

func (f figures) String() string {
	return fmt.Sprintf("published %d: acked %d, unknown %d%s, not stored %d%s; delivered %d ids (%d of the unknown ones) in %d deliveries; lost %d, duplicates %d, delivered though answered not stored %d",
		f.published, f.acked, f.unknown, countsOf(f.unknownLabels), f.notStored, countsOf(f.notStoredLabels),
		f.delivered, f.unknownDelivered, f.deliveries, f.lost, f.duplicates, f.wrong)
}

// countsOf formats counts by label: " (TIMEOUT 16, connection lost 2)".
func countsOf(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// countedRun describes one counted fault run (runCounted).
type countedRun struct {
	// meshAddr is the sidecar's mesh listener; it stays the same across
	// restarts.
	meshAddr string
	// n messages are published, each once (no retries: every answer is
	// checked against the deliveries).
	n int
	// fault strikes once a third of the messages are acked and returns
	// when the system is running again (the producer keeps publishing
	// meanwhile).
	fault func(t *testing.T, l *ledger)
	// caughtUp, when set, reports whether the group has consumed
	// everything the broker holds on the topic, asked of the broker
	// itself. The drain waits for it, so that a message stored late (a
	// publish answered before the broker stored it) is delivered before
	// the answers are checked. Without it the drain waits for the acked
	// ids only.
	caughtUp func(t testing.TB) bool
}

// The producer of a counted run: how many publishes it keeps in flight,
// and its deadline for each.
const (
	producerWorkers = 16
	producerTimeout = 10 * time.Second
)

// runCounted is the one counting harness of every crash and fault test:
// a consumer (group g1) and a producer connect to the sidecar at
// r.meshAddr, where topic is registered; the producer publishes r.n
// messages with unique ids, each once, while r.fault strikes; then the
// consumer drains. It fails the test if an acked message is lost or a
// message answered "not stored" was delivered, logs the figures and
// returns them.
func runCounted(t *testing.T, name string, r countedRun) figures {
	t.Helper()
	l := newLedger()
	sub := sidecartest.Dial(t, r.meshAddr)
	if _, err := sub.Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		l.got(string(d.Body))
		return nil
	}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	pub := sidecartest.Dial(t, r.meshAddr)
	ids := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < producerWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				id := fmt.Sprintf("m-%d", i)
				ctx, cancel := context.WithTimeout(context.Background(), producerTimeout)
				_, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: []byte(id)})
				cancel()
				l.answered(id, err)
			}
		}()
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); wg.Wait() })
	go func() {
		defer close(ids)
		for i := 0; i < r.n; i++ {
			select {
			case ids <- i:
			case <-stop:
				return
			}
		}
	}()

	sidecartest.WaitFor(t, 60*time.Second, "a third of the messages to be acked", func() bool { return l.count(answerAck) >= r.n/3 })
	r.fault(t, l)
	sidecartest.WaitFor(t, 120*time.Second, "every message to be answered", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.answers) == r.n
	})
	drained := sidecartest.WaitUntil(90*time.Second, func() bool {
		return l.ackedDelivered() && (r.caughtUp == nil || r.caughtUp(t))
	})
	f := l.figures()
	t.Logf("%s: %s", name, f)
	if !drained {
		t.Errorf("%s: the consumer did not drain the topic in time", name)
	}
	if f.lost != 0 {
		t.Errorf("%s: %d acked messages were never delivered", name, f.lost)
	}
	if f.wrong != 0 {
		l.mu.Lock()
		t.Errorf("%s: %d messages answered with a retry-safe \"not stored\" code were delivered (first such answers: %v)", name, f.wrong, l.firstErr)
		l.mu.Unlock()
	}
	return f
}
