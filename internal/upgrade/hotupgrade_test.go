package upgrade_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// topic is the one topic the apps of these tests publish to and consume
// from (through registrations p1 and g1).
const topic = "orders.created"

// gapWatch records the longest stretch without a delivery: the pause window
// an upgrade causes.
type gapWatch struct {
	mu   sync.Mutex
	last time.Time
	max  time.Duration
}

func (g *gapWatch) tick() {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if !g.last.IsZero() && now.Sub(g.last) > g.max {
		g.max = now.Sub(g.last)
	}
	g.last = now
}

// TestHotUpgrade replaces the running msgmesh binary three times in a row
// by starting a new one on the same data directory with --upgrade, while
// apps publish and consume. No app connection breaks, every acknowledged publish is
// consumed, and none is delivered twice. It runs on the embedded broker and
// on each broker kit through --config.
func TestHotUpgrade(t *testing.T) {
	sidecartest.ForBinaryKits(t, hotUpgrade)
}

func hotUpgrade(t *testing.T, kit *sidecartest.BrokerKit) {
	bin, args, meshAddr, httpAddr := sidecartest.UpgradeSetup(t, kit)
	old := sidecartest.StartProc(t, bin, args...)
	sidecartest.WaitHealthy(t, old, httpAddr)
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	tr := sidecartest.StartTraffic(t, meshAddr, "g1", topic)
	var gaps gapWatch
	var redelivered atomic.Int32
	sub := sidecartest.Dial(t, meshAddr)
	if _, err := sub.Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		gaps.tick()
		if d.Redelivered > 0 {
			redelivered.Add(1)
		}
		tr.Consumed.Add("sub2", string(d.Body))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		before := tr.AckedCount()
		sidecartest.WaitFor(t, 30*time.Second, "traffic to flow", func() bool { return tr.AckedCount() > before+300 })
		var gone time.Duration
		old, gone = sidecartest.UpgradeFrom(t, bin, args, old, httpAddr)
		t.Logf("upgrade %d: old process gone %s after the new one started", round, gone.Round(time.Millisecond))
	}
	tr.Finish(t)
	t.Logf("longest stretch without a delivery: %s", gaps.max.Round(time.Millisecond))
	// The apps never nack, so a redelivery count comes from the upgrades:
	// on NATS a message the server picked for the old process's pull
	// request as it stopped, offered again after the ack wait (seen in
	// about half of the runs before the consumer stopped with no request
	// open; natsbroker's fetcher); on any broker a message fetched as the
	// pause began and handed back with a nack (now broker.Returner).
	if n := redelivered.Load(); n > 0 {
		t.Errorf("%d deliveries came redelivered because of the upgrades", n)
	}
}

// TestHotUpgradeBacklog: an app 1,024 deliveries behind (32 workers, 30 ms
// of work each) does not hold up a hot upgrade, on every broker (embedded
// NATS, external NATS, Kafka, RocketMQ): its unanswered deliveries move
// with its connection and the new process settles them. Three upgrades in
// a row; counted by message id, nothing lost or doubled, no delivery the
// app saw comes again, no reconnect. The log gives each handoff's time
// (new process started → old one exited) and how many held deliveries
// moved; no timed assertion.
func TestHotUpgradeBacklog(t *testing.T) {
	sidecartest.ForBinaryKits(t, hotUpgradeBacklog)
}

// heldRe reads the old process's "handed off" log line.
var heldRe = regexp.MustCompile(`"handed off".* held_deliveries=(\d+) settle=(\S+) total=(\S+)`)

func hotUpgradeBacklog(t *testing.T, kit *sidecartest.BrokerKit) {
	bin, args, meshAddr, httpAddr := sidecartest.UpgradeSetup(t, kit)
	args = withFlag(args, "--delivery-timeout", "60s") // the app is slow, not stuck
	old := sidecartest.StartProc(t, bin, args...)
	sidecartest.WaitHealthy(t, old, httpAddr)
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	// The backlog is topped up before each upgrade, so that the app is
	// behind at every one of them however slowly the processes start
	// (under -race a start takes seconds, long enough for the app to
	// work through a fixed backlog before the last upgrade). The app's
	// work waits while a top-up publishes: on a loaded machine publishing
	// a batch took as long as the app took to work through it, and the
	// wait for progress after the top-up then waited for messages that
	// did not exist (the app had them all).
	const batch = 2000
	pub := sidecartest.Dial(t, meshAddr)
	backlog := 0
	var working sync.RWMutex // the app's work holds it shared; a top-up, alone
	topUp := func() {
		working.Lock()
		defer working.Unlock()
		t0 := time.Now()
		from := backlog
		sidecartest.PublishEach(t, pub, batch, 256, func(i int) *client.Message {
			return &client.Message{Topic: topic, Body: []byte(fmt.Sprintf("b--%d", from+i))}
		})
		backlog += batch
		t.Logf("published %d more (%d in all) in %s", batch, backlog, time.Since(t0).Round(time.Millisecond))
	}
	topUp()

	var dials sidecartest.CountingDialer
	got := sidecartest.NewTally()
	var redelivered atomic.Int32
	sub := sidecartest.Dial(t, meshAddr, client.WithDialer(dials.Dial), client.WithMaxInflight(1024))
	if _, err := sub.Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		if d.Redelivered > 0 {
			redelivered.Add(1)
		}
		working.RLock()
		time.Sleep(30 * time.Millisecond) // the app's work
		working.RUnlock()
		got.Add("sub", string(d.Body))
		return nil
	}, client.WithConcurrency(32)); err != nil {
		t.Fatal(err)
	}
	var moved int
	for round := 0; round < 3; round++ {
		if backlog-got.Distinct() < batch {
			topUp()
		}
		before := got.Count()
		sidecartest.WaitFor(t, 60*time.Second, "the app to work through some backlog", func() bool { return got.Count() > before+300 })
		start := time.Now()
		next := sidecartest.StartProc(t, bin, slices.Concat(args, []string{"--upgrade"})...)
		select {
		case <-old.Done:
		case <-time.After(sidecartest.Scaled(90 * time.Second)):
			t.Fatalf("upgrade %d: the old process did not hand over and exit", round)
		}
		took := time.Since(start)
		if code := old.Cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("upgrade %d: old process exited %d", round, code)
		}
		m := heldRe.FindStringSubmatch(old.Output())
		if m == nil {
			t.Fatalf("upgrade %d: the old process did not log its handoff:\n%s", round, old.Output())
		}
		n, _ := strconv.Atoi(m[1])
		moved += n
		t.Logf("upgrade %d: handoff %s (new process started → old exited); %s held deliveries moved; old process settle %s, total %s; the app %d deliveries in",
			round, took.Round(time.Millisecond), m[1], m[2], m[3], got.Count())
		sidecartest.WaitHealthy(t, next, httpAddr)
		old = next
	}
	t0 := time.Now()
	sidecartest.WaitFor(t, 120*time.Second, "the whole backlog to be processed", func() bool { return got.Distinct() == backlog })
	t.Logf("the rest of the backlog took %s", time.Since(t0).Round(time.Millisecond))
	got.ExactlyOnce(t, "b-", backlog) // no loss, no duplicate
	// A redelivery count on a message no app saw before (ExactlyOnce)
	// would come from the broker's own count of a hand-back at the pause.
	t.Logf("%d deliveries carried a redelivery count; %d held deliveries moved in all", redelivered.Load(), moved)
	// None on any broker. Held deliveries move uncounted; the message the
	// upstream loop had fetched just as the pause began, which nobody
	// took, goes back to its consumer as the same attempt (broker.Returner;
	// on Kafka and RocketMQ it went back with a nack before, which those
	// adapters count: at most one per upgrade); on NATS the consumer stops
	// with no pull request open at the server (natsbroker's fetcher), so
	// nothing the server picked for the old process is dropped and offered
	// again after the ack wait (up to 57 in a run under -race before). A
	// successor that sent an app more than its in-flight limit right after
	// adopting its connection (the SDK handed the excess back) was another
	// cause, now fixed.
	if n := redelivered.Load(); n > 0 {
		t.Errorf("%d deliveries came redelivered because of the upgrades", n)
	}
	if moved == 0 {
		t.Errorf("no held delivery moved: the old processes waited for the app")
	}
	if d := dials.Count(); d != 1 {
		t.Errorf("the app dialled %d times; its connection broke", d)
	}
}

// TestHotUpgradeSuccessorDies: the new process is SIGKILLed before it says
// ready; the old one resumes on its own handed-over state (taking back the
// deliveries it held, on Kafka and RocketMQ through its adapters' Adopt as
// a successor would), and then upgrades for real. On every broker, with an
// app holding a backlog, counted by id:
//
//   - killed right after it received the sockets;
//   - killed right after it adopted everything (opened its brokers, took
//     over the held deliveries, built its sessions and listeners from the
//     handed-over state), the last point before it says ready: it reads no
//     app connection and starts no consumer before ready;
//
// either way: nothing lost, doubled, or disconnected.
func TestHotUpgradeSuccessorDies(t *testing.T) {
	for _, when := range []string{"received", "adopted"} {
		t.Run(when, func(t *testing.T) {
			sidecartest.ForBinaryKits(t, func(t *testing.T, kit *sidecartest.BrokerKit) { hotUpgradeSuccessorDies(t, kit, when) })
		})
	}
}

func hotUpgradeSuccessorDies(t *testing.T, kit *sidecartest.BrokerKit, when string) {
	bin, args, meshAddr, httpAddr := sidecartest.UpgradeSetup(t, kit)
	args = withFlag(args, "--delivery-timeout", "60s") // the app is slow, not stuck
	old := sidecartest.StartProc(t, bin, args...)
	sidecartest.WaitHealthy(t, old, httpAddr)
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	const backlog = 2000
	sidecartest.PublishN(t, sidecartest.Dial(t, meshAddr), topic, "b-", backlog, 256)
	var dials sidecartest.CountingDialer
	got := sidecartest.NewTally()
	// The app's work waits while the doomed successor runs, so that the app
	// still has backlog when the old process resumes (under -race a start
	// takes seconds, in which the app could otherwise finish it).
	var working sync.RWMutex // the app's work holds it shared
	sub := sidecartest.Dial(t, meshAddr, client.WithDialer(dials.Dial), client.WithMaxInflight(1024))
	if _, err := sub.Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		working.RLock()
		time.Sleep(30 * time.Millisecond) // the app's work
		working.RUnlock()
		got.Add("sub", string(d.Body))
		return nil
	}, client.WithConcurrency(32)); err != nil {
		t.Fatal(err)
	}
	sidecartest.WaitFor(t, 60*time.Second, "the app to work through some backlog", func() bool { return got.Count() > 300 })
	working.Lock()
	resume := sync.OnceFunc(working.Unlock)
	defer resume() // a test that fails before lets the app go on
	env := "MSGMESH_TEST_KILL_AFTER_RECEIVE=1"
	if when == "adopted" {
		env = "MSGMESH_TEST_KILL_AFTER_RECEIVE=adopted"
	}
	doomed := sidecartest.StartProcEnv(t, []string{env}, bin, slices.Concat(args, []string{"--upgrade"})...)
	<-doomed.Done
	select {
	case <-old.Done:
		t.Fatalf("the old process exited after its successor died:\n%s", old.Output())
	default:
	}
	before := got.Count()
	resume()
	sidecartest.WaitFor(t, 60*time.Second, "deliveries to flow again through the old process", func() bool { return got.Count() > before+300 })
	m := heldRe.FindStringSubmatch(old.Output())
	if m == nil {
		t.Fatalf("the old process did not log its handoff:\n%s", old.Output())
	}
	t.Logf("the old process resumed; it had handed over %s held deliveries", m[1])
	sidecartest.UpgradeFrom(t, bin, args, old, httpAddr)
	sidecartest.WaitFor(t, 120*time.Second, "the whole backlog to be processed", func() bool { return got.Distinct() == backlog })
	got.ExactlyOnce(t, "b-", backlog) // no loss, no duplicate
	if d := dials.Count(); d != 1 {
		t.Errorf("the app dialled %d times; its connection broke", d)
	}
}

// withFlag returns args with flag's value replaced (args holds it once).
func withFlag(args []string, flag, value string) []string {
	out := slices.Clone(args)
	i := slices.Index(out, flag)
	out[i+1] = value
	return out
}

// TestTakeoverIsDeliberate: a second msgmesh on the data directory of a
// running one does not take it over unless started with --upgrade, and
// with --upgrade not when its listener flags name other addresses than it
// would inherit. Each refusal exits non-zero and names the running
// process (pid, listeners) or each differing flag; the running sidecar
// serves on throughout, without losing, doubling or disconnecting
// anything. Then --upgrade with the same flags takes over. The first
// process itself runs with --upgrade and nothing to upgrade: it starts
// fresh.
func TestTakeoverIsDeliberate(t *testing.T) {
	bin, args, meshAddr, httpAddr := sidecartest.UpgradeSetup(t, nil)
	old := sidecartest.StartProc(t, bin, slices.Concat(args, []string{"--upgrade"})...)
	sidecartest.WaitHealthy(t, old, httpAddr)
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	tr := sidecartest.StartTraffic(t, meshAddr, "g1", topic)
	otherMesh, otherHTTP := brokertest.FreeAddr(t), brokertest.FreeAddr(t)
	moved := withFlag(withFlag(args, "--listen", otherMesh), "--http", otherHTTP)
	pid := fmt.Sprintf("pid %d", old.Cmd.Process.Pid)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"same flags, no --upgrade", args, []string{
			"data directory in use by a running msgmesh", pid, "mesh " + meshAddr, "http " + httpAddr, "start this one with --upgrade", "its own --data-dir"}},
		{"other listeners, no --upgrade", moved, []string{
			"data directory in use by a running msgmesh", pid, "mesh " + meshAddr, "http " + httpAddr, "start this one with --upgrade"}},
		{"other listeners, --upgrade", slices.Concat(moved, []string{"--upgrade"}), []string{
			"--upgrade: listener flags differ from the running msgmesh's (" + pid + ")",
			"--listen " + otherMesh + " (the running msgmesh's mesh listener is " + meshAddr + ")",
			"--http " + otherHTTP + " (the running msgmesh's http listener is " + httpAddr + ")",
			"The running msgmesh goes on unchanged"}},
		{"one other listener, --upgrade", slices.Concat(withFlag(args, "--http", otherHTTP), []string{"--upgrade"}), []string{
			"--http " + otherHTTP + " (the running msgmesh's http listener is " + httpAddr + ")"}},
	} {
		before := tr.AckedCount()
		p := sidecartest.StartProc(t, bin, tc.args...)
		select {
		case <-p.Done:
		case <-time.After(sidecartest.Scaled(30 * time.Second)):
			t.Fatalf("%s: the second process neither refused nor exited", tc.name)
		}
		out := p.Output()
		if code := p.Cmd.ProcessState.ExitCode(); code == 0 {
			t.Fatalf("%s: the second process exited 0:\n%s", tc.name, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: its error does not say %q:\n%s", tc.name, w, out)
			}
		}
		if tc.name == "one other listener, --upgrade" && strings.Contains(out, "--listen") {
			t.Errorf("%s: names --listen, which is the same:\n%s", tc.name, out)
		}
		t.Logf("%s: %s", tc.name, strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]))
		select {
		case <-old.Done:
			t.Fatalf("%s: the running sidecar exited:\n%s", tc.name, old.Output())
		default:
		}
		sidecartest.WaitFor(t, 30*time.Second, "traffic to flow through the running sidecar", func() bool { return tr.AckedCount() > before+100 })
	}
	if strings.Contains(old.Output(), "handed over") {
		t.Fatalf("the running sidecar handed over to a refused process:\n%s", old.Output())
	}

	sidecartest.UpgradeFrom(t, bin, args, old, httpAddr)
	tr.Finish(t)
}
