package msgmesh_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/netfault"
	"github.com/msgmesh/msgmesh/internal/pki"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh/forward"
	"github.com/msgmesh/msgmesh/scheduler"
)

// cutPlan is a silent cut between two sibling sidecars under steady load
// (docs/forwarding.md §3.3 and §4): nodes 1 and 2 at weight 100, node 3 at
// weight 0, so node 3 forwards every broker delivery, half of them to node 2
// through a netfault.Relay that is cut silently and healed.
type cutPlan struct {
	rate  int             // publishes per second
	work  time.Duration   // each app's processing time per message
	node3 nodeOpts        // how node 3 (the forwarding node) is wired
	all   nodeOpts        // delivery timeout of every node
	lead  func()          // returns when the cut should start
	cut   func()          // returns when the cut should end
	tail  func()          // returns when publishing should stop
	ready func(*cutState) // called once the nodes are up, before any publish
}

// cutState is what the steps of a plan may look at.
type cutState struct {
	nodes []*meshNode
	relay *netfault.Relay
}

// cutResult are the counts of one run.
type cutResult struct {
	published     int
	deliveries    int           // deliveries to the three apps
	dups          int           // deliveries beyond the first of a message
	lost          int           // messages never delivered
	inflightAtCut int           // node 3's forwarded deliveries unanswered at the cut (both siblings)
	intakeGap     time.Duration // node 3's longest pause in taking broker deliveries during the cut
	maxLatency    time.Duration // publish to first delivery, worst message
	fallbacks     uint64        // node 3's failed forwards (delivered locally or to node 1)
}

// runCut runs plan and waits until every published message was delivered.
func runCut(tb testing.TB, plan cutPlan) cutResult {
	tb.Helper()
	c := sidecartest.NATSCluster(tb)
	ca, err := pki.NewCA()
	if err != nil {
		tb.Fatal(err)
	}
	n3opts := plan.node3
	n3opts.deliveryTimeout = plan.all.deliveryTimeout
	nodes := []*meshNode{startNode(tb, c, ca, plan.all), startNode(tb, c, ca, plan.all), startNode(tb, c, ca, n3opts)}
	relay, err := netfault.NewRelay(nodes[1].fwdAddr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = relay.Close() })
	st := &cutState{nodes: nodes, relay: relay}
	if plan.ready != nil {
		plan.ready(st)
	}
	direct := []scheduler.Instance{{ID: nodes[0].fwdAddr, Weight: 100}, {ID: nodes[1].fwdAddr, Weight: 100}, {ID: nodes[2].fwdAddr, Weight: 0}}
	nodes[0].sched.Update(direct)
	nodes[1].sched.Update(direct)
	nodes[2].sched.Update([]scheduler.Instance{{ID: nodes[0].fwdAddr, Weight: 100}, {ID: relay.Addr(), Weight: 100}, {ID: nodes[2].fwdAddr, Weight: 0}})

	// Each app records when it first got each message.
	var mu sync.Mutex
	first := map[int]time.Duration{} // message -> publish-to-delivery latency
	seen := map[int]int{}
	var deliveries atomic.Int64
	for i, n := range nodes {
		if status, body := sidecartest.Register(tb, n.http, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
			tb.Fatalf("register on node %d: %d %s", i, status, body)
		}
		if _, err := sidecartest.Dial(tb, n.addr).Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
			now := time.Now()
			if plan.work > 0 {
				time.Sleep(plan.work) // the app at work, not a synchronisation
			}
			parts := strings.Split(string(d.Body), "-") // c-<i>-<unix nanos>
			i, _ := strconv.Atoi(parts[1])
			ns, _ := strconv.ParseInt(parts[2], 10, 64)
			deliveries.Add(1)
			mu.Lock()
			seen[i]++
			if seen[i] == 1 {
				first[i] = now.Sub(time.Unix(0, ns))
			}
			mu.Unlock()
			return nil
		}); err != nil {
			tb.Fatal(err)
		}
	}

	// The publisher: plan.rate messages a second through node 1.
	pub := sidecartest.Dial(tb, nodes[0].addr)
	var published atomic.Int64
	var pubErr atomic.Value
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		var wg sync.WaitGroup
		defer wg.Wait()
		every := time.Second / time.Duration(plan.rate)
		start := time.Now()
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			case <-time.After(time.Until(start.Add(time.Duration(i) * every))):
			}
			wg.Add(1)
			body := fmt.Sprintf("c-%d-%d", i, time.Now().UnixNano())
			pub.PublishAsync(context.Background(), &client.Message{Topic: topic, Body: []byte(body)}, func(_ client.PublishAck, err error) {
				defer wg.Done()
				if err != nil {
					pubErr.CompareAndSwap(nil, err)
				}
			})
			published.Store(int64(i + 1))
		}
	}()

	// The sampler: node 3's intake, every 2 ms.
	var (
		gapMu     sync.Mutex
		measuring bool
		lastTake  time.Time
		gap       time.Duration
	)
	stopSample := make(chan struct{})
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		var last uint64
		for {
			select {
			case <-stopSample:
				return
			case <-t.C:
			}
			now := time.Now()
			got := nodes[2].sc.Stats().FromBroker
			gapMu.Lock()
			if measuring {
				gap = max(gap, now.Sub(lastTake))
			}
			if got != last {
				last, lastTake = got, now
			}
			gapMu.Unlock()
		}
	}()

	plan.lead()
	relay.Cut()
	gapMu.Lock()
	measuring, lastTake = true, time.Now()
	gapMu.Unlock()
	res := cutResult{inflightAtCut: nodes[2].fwd.Outstanding()}
	plan.cut()
	gapMu.Lock()
	measuring = false
	gapMu.Unlock()
	relay.Heal()
	plan.tail()
	close(stopPub)
	<-pubDone
	close(stopSample)
	<-sampleDone
	if err, _ := pubErr.Load().(error); err != nil {
		tb.Fatalf("publish: %v", err)
	}
	res.published = int(published.Load())
	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(first) >= res.published
	}
	if !sidecartest.WaitUntil(120*time.Second, done) {
		tb.Logf("not every message was delivered in time")
	}
	// Let redeliveries of what was handed back land before counting.
	_ = sidecartest.WaitUntil(5*time.Second, func() bool { return nodes[2].fwd.Outstanding() == 0 })
	mu.Lock()
	defer mu.Unlock()
	res.deliveries = int(deliveries.Load())
	for i := 0; i < res.published; i++ {
		switch n := seen[i]; {
		case n == 0:
			res.lost++
		default:
			res.dups += n - 1
			res.maxLatency = max(res.maxLatency, first[i])
		}
	}
	res.intakeGap = gap
	res.fallbacks = nodes[2].sc.Stats().Fallbacks
	return res
}

// BenchmarkSilentCut measures a 10 s silent cut between a forwarding node
// and one of its two siblings, and prints a table: node 3's longest pause
// in taking broker deliveries during the cut, the worst publish-to-delivery
// latency, duplicates and losses. Apps take 5 ms per message. Two rows: the
// production timeouts (30 s delivery timeout, the forwarder's Timeout a
// second above it) and short ones (3 s, as the other multi-sidecar tests
// use). It runs each scenario once whatever b.N is:
//
//	go test -run x -bench SilentCut -benchtime 1x ./msgmesh/
func BenchmarkSilentCut(b *testing.B) {
	const cutFor = 10 * time.Second
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "delivery timeout\tcut\tpublished\tdeliveries\tduplicates\tlost\tin flight at cut\tnode 3 intake gap\tworst latency\tnode 3 fallbacks\t\n")
	for _, dt := range []time.Duration{30 * time.Second, 3 * time.Second} {
		res := runCut(b, cutPlan{
			rate:  300,
			work:  5 * time.Millisecond,
			all:   nodeOpts{deliveryTimeout: dt},
			node3: nodeOpts{take: forward.DefaultTakeTimeout},
			lead:  func() { time.Sleep(3 * time.Second) },
			cut:   func() { time.Sleep(cutFor) },
			tail:  func() { time.Sleep(5 * time.Second) },
		})
		fmt.Fprintf(w, "%v\t%v\t%d\t%d\t%d\t%d\t%d\t%v\t%v\t%d\t\n", dt, cutFor, res.published, res.deliveries, res.dups, res.lost,
			res.inflightAtCut, res.intakeGap.Round(time.Millisecond), res.maxLatency.Round(time.Millisecond), res.fallbacks)
		b.ReportMetric(float64(res.intakeGap.Milliseconds()), fmt.Sprintf("gap-ms-%v", dt))
		b.ReportMetric(float64(res.dups), fmt.Sprintf("dups-%v", dt))
	}
	_ = w.Flush()
}
