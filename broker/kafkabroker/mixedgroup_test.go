package kafkabroker_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
)

// These tests put the adapter's consumers in one Kafka consumer group with
// consumers of independent clients built on librdkafka: Debian's
// python3-confluent-kafka (testdata/rdkafka_consumer.py) and kcat. They
// skip, naming the package, where one is not installed.

const mixedPartitions = 6

// ledger counts every message of a test by body, with who consumed it.
type ledger struct {
	mu  sync.Mutex
	got map[string][]string // body → members that consumed it, in order
	by  map[string]map[int]int
}

func newLedger() *ledger {
	return &ledger{got: map[string][]string{}, by: map[string]map[int]int{}}
}

func (l *ledger) record(member string, partition int, body string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got[body] = append(l.got[body], member)
	if l.by[member] == nil {
		l.by[member] = map[int]int{}
	}
	l.by[member][partition]++
}

// missing lists the bodies of want not consumed yet.
func (l *ledger) missing(want map[string]bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for b := range want {
		if len(l.got[b]) == 0 {
			out = append(out, b)
		}
	}
	sort.Strings(out)
	return out
}

// summary returns, for the bodies of want, how many each member consumed,
// the duplicates (deliveries beyond the first) and the lost ones.
func (l *ledger) summary(want map[string]bool) (perMember map[string]int, dups, lost int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	perMember = map[string]int{}
	for b := range want {
		ms := l.got[b]
		if len(ms) == 0 {
			lost++
			continue
		}
		dups += len(ms) - 1
		for _, m := range ms {
			perMember[m]++
		}
	}
	return perMember, dups, lost
}

// partitionsOf returns the partitions member consumed from.
func (l *ledger) partitionsOf(member string) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ps []int
	for p := range l.by[member] {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// waitAll waits until every body of want was consumed.
func (l *ledger) waitAll(t *testing.T, want map[string]bool, what string) {
	t.Helper()
	waitFor(t, brokertest.WaitLong*2, what, func() bool { return len(l.missing(want)) == 0 }, func() string {
		m := l.missing(want)
		return fmt.Sprintf("%d messages never consumed, first %v", len(m), m[:min(len(m), 10)])
	})
}

// waitFor polls cond until it holds or d passes; then it fails with
// what and detail().
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool, detail func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v: %s", what, d, detail())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// sidecarMember is an adapter consumer that acks everything it gets.
type sidecarMember struct {
	name string
	c    broker.Consumer
	stop context.CancelFunc
	done chan struct{}
}

func startSidecarMember(t *testing.T, b *kafkabroker.Broker, name, topic, group string, l *ledger) *sidecarMember {
	t.Helper()
	c, err := b.Consume(brokertest.Ctx(t), broker.ConsumerSpec{Topic: topic, Group: group})
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &sidecarMember{name: name, c: c, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			d, err := c.Next(ctx)
			if err != nil {
				return
			}
			_, po := parseID(t, d.MessageID())
			l.record(name, int(po.partition), string(d.Message().Body))
			if err := d.Ack(context.Background()); err != nil {
				t.Errorf("%s: Ack: %v", name, err)
			}
		}
	}()
	t.Cleanup(func() { s.leave(t) })
	return s
}

// leave stops consuming and closes the consumer (final commit, LeaveGroup).
func (s *sidecarMember) leave(t *testing.T) {
	s.stop()
	<-s.done
	if err := s.c.Close(context.Background()); err != nil {
		t.Errorf("%s: Close: %v", s.name, err)
	}
}

func (s *sidecarMember) assigned() []int { return kafkabroker.Assigned(s.c) }

// extMember is a consumer process of another client in the group.
type extMember struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	// stop ends the process gracefully (the client commits and leaves).
	stop func() error
	done chan struct{}

	mu       sync.Mutex
	assigned []int
	nAssigns int
	output   []string
}

func (e *extMember) current() ([]int, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.assigned), e.nAssigns
}

func (e *extMember) log() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.output[max(0, len(e.output)-30):], "\n")
}

// leave stops the process gracefully and waits for it.
func (e *extMember) leave(t *testing.T) {
	t.Helper()
	if err := e.stop(); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Logf("%s: stop: %v", e.name, err)
	}
	select {
	case <-e.done:
	case <-time.After(brokertest.WaitLong):
		e.cmd.Process.Kill()
		<-e.done
		t.Errorf("%s did not stop within %v; killed. Last output:\n%s", e.name, brokertest.WaitLong, e.log())
	}
}

// startExt runs cmd, parsing each line of its output with parse, which
// returns a message (partition, body) or an assignment.
func startExt(t *testing.T, name string, cmd *exec.Cmd, l *ledger, parse func(line string) (msg bool, partition int, body string, assigned []int, isAssign bool)) *extMember {
	t.Helper()
	e := &extMember{name: name, cmd: cmd, done: make(chan struct{})}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	e.stdin = stdin
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		cmd.Wait()
		pw.Close()
	}()
	go func() {
		defer close(e.done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			e.mu.Lock()
			e.output = append(e.output, line)
			e.mu.Unlock()
			isMsg, p, body, asg, isAssign := parse(line)
			switch {
			case isMsg:
				l.record(name, p, body)
			case isAssign:
				e.mu.Lock()
				e.assigned, e.nAssigns = asg, e.nAssigns+1
				e.mu.Unlock()
			}
		}
		io.Copy(io.Discard, pr)
	}()
	t.Cleanup(func() {
		select {
		case <-e.done:
		default:
			e.leave(t)
		}
	})
	return e
}

// rdkafkaPython finds a python3 that can import confluent_kafka (Debian's
// python3-confluent-kafka installs it for /usr/bin/python3, which another
// python3 earlier on PATH may hide).
func rdkafkaPython(t *testing.T) string {
	t.Helper()
	cands := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		cands = append(cands, p)
	}
	for _, p := range cands {
		if exec.Command(p, "-c", "import confluent_kafka").Run() == nil {
			return p
		}
	}
	t.Skip("python3-confluent-kafka is not installed (apt-get install python3-confluent-kafka): no librdkafka consumer to share the group with")
	return ""
}

func startPython(t *testing.T, py, name, bootstrap, group, topic string, l *ledger) *extMember {
	t.Helper()
	script, err := filepath.Abs("testdata/rdkafka_consumer.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, script, bootstrap, group, topic)
	e := startExt(t, name, cmd, l, func(line string) (bool, int, string, []int, bool) {
		if rest, ok := strings.CutPrefix(line, "MSG "); ok {
			f := strings.SplitN(rest, " ", 3)
			if len(f) == 3 {
				p, _ := strconv.Atoi(f[0])
				return true, p, f[2], nil, false
			}
		}
		if rest, ok := strings.CutPrefix(line, "ASSIGNED "); ok {
			return false, 0, "", parseInts(rest, ","), true
		}
		return false, 0, "", nil, false
	})
	e.stop = func() error { return e.stdin.Close() }
	return e
}

func kcatPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not installed (apt-get install kcat): no librdkafka consumer to share the group with")
	}
	return p
}

// kcatAssigned matches kcat's rebalance line, e.g. "% Group g rebalanced
// (memberid rdkafka-...): assigned: t [0], t [3]".
var kcatAssigned = regexp.MustCompile(`rebalanced \(memberid [^)]*\): assigned: ?(.*)$`)
var kcatPartition = regexp.MustCompile(`\[(\d+)\]`)

func startKcat(t *testing.T, kcat, name, bootstrap, group, topic string, l *ledger) *extMember {
	t.Helper()
	cmd := exec.Command(kcat, "-b", bootstrap, "-G", group, "-u",
		"-X", "client.id=kcat-test", "-X", "auto.offset.reset=earliest",
		"-X", "session.timeout.ms=10000", "-X", "heartbeat.interval.ms=500",
		"-X", "auto.commit.interval.ms=100",
		"-f", "MSG %p %o %s\n", topic)
	e := startExt(t, name, cmd, l, func(line string) (bool, int, string, []int, bool) {
		if rest, ok := strings.CutPrefix(line, "MSG "); ok {
			f := strings.SplitN(rest, " ", 3)
			if len(f) == 3 {
				p, _ := strconv.Atoi(f[0])
				return true, p, f[2], nil, false
			}
		}
		if m := kcatAssigned.FindStringSubmatch(line); m != nil {
			var ps []int
			for _, pm := range kcatPartition.FindAllStringSubmatch(m[1], -1) {
				p, _ := strconv.Atoi(pm[1])
				ps = append(ps, p)
			}
			slices.Sort(ps)
			return false, 0, "", ps, true
		}
		return false, 0, "", nil, false
	})
	e.stop = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	return e
}

func parseInts(s, sep string) []int {
	var out []int
	for _, f := range strings.Split(strings.TrimSpace(s), sep) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// splitOK reports whether the assignments are disjoint, each non-empty,
// and together cover every partition.
func splitOK(assignments ...[]int) bool {
	seen := map[int]bool{}
	for _, a := range assignments {
		if len(a) == 0 {
			return false
		}
		for _, p := range a {
			if seen[p] {
				return false
			}
			seen[p] = true
		}
	}
	return len(seen) == mixedPartitions
}

func publishBodies(t *testing.T, b *kafkabroker.Broker, topic string, from, n int) map[string]bool {
	t.Helper()
	brokertest.PublishN(t, b, topic, from, n)
	return brokertest.Bodies(from, n)
}

// TestMixedGroupPython and TestMixedGroupKcat run runMixedGroup with each
// librdkafka client in both join orders.
func TestMixedGroupPython(t *testing.T) {
	py := rdkafkaPython(t)
	for _, order := range []string{"sidecar-first", "librdkafka-first"} {
		t.Run(order, func(t *testing.T) {
			runMixedGroup(t, order, func(t *testing.T, name, bootstrap, group, topic string, l *ledger) *extMember {
				return startPython(t, py, name, bootstrap, group, topic, l)
			})
		})
	}
}

func TestMixedGroupKcat(t *testing.T) {
	kcat := kcatPath(t)
	for _, order := range []string{"sidecar-first", "librdkafka-first"} {
		t.Run(order, func(t *testing.T) {
			runMixedGroup(t, order, func(t *testing.T, name, bootstrap, group, topic string, l *ledger) *extMember {
				return startKcat(t, kcat, name, bootstrap, group, topic, l)
			})
		})
	}
}

// runMixedGroup shares one consumer group between the adapter and a
// librdkafka client, joined in the given order (the first member to join
// leads the group):
//
//  1. Steady state: with both members assigned, the partitions are split
//     between them (disjoint, together all), 300 messages are each
//     consumed exactly once, by the member owning their partition.
//  2. Members come and go mid-stream: the librdkafka member leaves, a
//     second sidecar member joins, a second librdkafka member joins, the
//     first sidecar member leaves, with messages published between each
//     step. Every message is consumed at least once; duplicates (messages
//     in flight when their partition moved) are counted and reported.
func runMixedGroup(t *testing.T, order string, startExt func(t *testing.T, name, bootstrap, group, topic string, l *ledger) *extMember) {
	const topic, group = "mixed", "g-mixed"
	cl := kafkatest.Start(t, kfake.SeedTopics(mixedPartitions, topic))
	bootstrap := strings.Join(kafkatest.Addrs(cl), ",")
	b1 := newBroker(t, cl, kafkabroker.Config{})
	l := newLedger()

	var s1 *sidecarMember
	var x1 *extMember
	waitAlone := func(what string, assigned func() []int) {
		waitFor(t, brokertest.WaitLong, what+" owns every partition", func() bool { return len(assigned()) == mixedPartitions },
			func() string { return fmt.Sprint(assigned()) })
	}
	if order == "sidecar-first" {
		s1 = startSidecarMember(t, b1, "sidecar1", topic, group, l)
		waitAlone("sidecar1", s1.assigned)
		x1 = startExt(t, "librdkafka1", bootstrap, group, topic, l)
	} else {
		x1 = startExt(t, "librdkafka1", bootstrap, group, topic, l)
		waitAlone("librdkafka1", func() []int { a, _ := x1.current(); return a })
		s1 = startSidecarMember(t, b1, "sidecar1", topic, group, l)
	}
	waitFor(t, brokertest.WaitLong*2, "partitions split between sidecar1 and librdkafka1", func() bool {
		a, _ := x1.current()
		return splitOK(s1.assigned(), a)
	}, func() string {
		a, _ := x1.current()
		return fmt.Sprintf("sidecar1 %v, librdkafka1 %v; librdkafka1 output:\n%s", s1.assigned(), a, x1.log())
	})
	if want := order == "sidecar-first"; kafkabroker.IsLeader(s1.c) != want {
		t.Fatalf("sidecar1 leader = %v, want %v (the first member to join leads)", !want, want)
	}
	xa, _ := x1.current()
	t.Logf("%s: sidecar1 (leader %v) has %v, librdkafka1 has %v", order, kafkabroker.IsLeader(s1.c), s1.assigned(), xa)

	// 1. Steady state: each message exactly once, by its partition's owner.
	want1 := publishBodies(t, b1, topic, 0, 300)
	l.waitAll(t, want1, "steady state")
	per, dups, lost := l.summary(want1)
	t.Logf("steady state: 300 messages, consumed per member %v, duplicates %d, lost %d", per, dups, lost)
	if dups != 0 || lost != 0 {
		t.Fatalf("steady state: %d duplicates, %d lost; want none", dups, lost)
	}
	if per["sidecar1"] == 0 || per["librdkafka1"] == 0 {
		t.Fatalf("steady state: consumed per member %v; want both to consume", per)
	}
	if got := l.partitionsOf("sidecar1"); !slices.Equal(got, s1.assigned()) {
		t.Fatalf("sidecar1 consumed partitions %v, assigned %v", got, s1.assigned())
	}
	if got := l.partitionsOf("librdkafka1"); !slices.Equal(got, xa) {
		t.Fatalf("librdkafka1 consumed partitions %v, assigned %v", got, xa)
	}

	// 2. Members come and go while messages keep coming.
	all := map[string]bool{}
	add := func(m map[string]bool) {
		for k := range m {
			all[k] = true
		}
	}
	add(want1)
	add(publishBodies(t, b1, topic, 300, 100))
	x1.leave(t)
	add(publishBodies(t, b1, topic, 400, 100))
	b2 := newBroker(t, cl, kafkabroker.Config{})
	s2 := startSidecarMember(t, b2, "sidecar2", topic, group, l)
	add(publishBodies(t, b1, topic, 500, 100))
	x2 := startExt(t, "librdkafka2", bootstrap, group, topic, l)
	add(publishBodies(t, b1, topic, 600, 100))
	waitFor(t, brokertest.WaitLong*2, "partitions split between sidecar1, sidecar2 and librdkafka2", func() bool {
		a, _ := x2.current()
		return splitOK(s1.assigned(), s2.assigned(), a)
	}, func() string {
		a, _ := x2.current()
		return fmt.Sprintf("sidecar1 %v, sidecar2 %v, librdkafka2 %v; librdkafka2 output:\n%s", s1.assigned(), s2.assigned(), a, x2.log())
	})
	add(publishBodies(t, b1, topic, 700, 100))
	s1.leave(t)
	add(publishBodies(t, b1, topic, 800, 100))
	l.waitAll(t, all, "after members came and went")
	per, dups, lost = l.summary(all)
	t.Logf("members came and went: %d messages, consumed per member %v, duplicates %d, lost %d", len(all), per, dups, lost)
	if lost != 0 {
		t.Fatalf("%d messages lost", lost)
	}
	if per["sidecar2"] == 0 || per["librdkafka2"] == 0 {
		t.Fatalf("consumed per member %v: the members that joined mid-stream consumed nothing", per)
	}
}
