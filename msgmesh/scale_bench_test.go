package msgmesh_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// BenchmarkManyConns runs the real msgmesh binary (embedded JetStream) with
// one app registered for 100 consumer groups on one topic, and 10,000 app
// connections from this process, each declaring one of the groups (100
// per group) and acking what it is pushed. It checks that the sidecar
// keeps exactly one upstream consumer per (group, topic), 100, and that
// every group receives every message; it reports the sidecar's resident
// memory and descriptors per connection, and the publish latency of
// another app connection before the 10,000 connected (p50, p99) and while
// they consume (each message then makes 100 deliveries), with the ratio.
//
//	go test -run '^$' -bench ManyConns -benchtime 1x ./msgmesh/
//
// The connections are raw sockets with a 512-byte read buffer and one
// goroutine each, so that the benchmark's own process stays small.
func BenchmarkManyConns(b *testing.B) {
	const (
		conns  = 10000
		groups = 100
		msgs   = 300 // published before the connections, and again while they consume
	)
	if limit, ok := core.FileLimit(); ok && limit < conns+2000 {
		b.Skipf("the open-file limit is %d; the benchmark needs %d (ulimit -n)", limit, conns+2000)
	}
	bin, err := sidecartest.Build()
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		meshAddr, httpAddr := freePort(b), freePort(b)
		p := sidecartest.StartProc(b, bin, "--data-dir", b.TempDir(), "--listen", meshAddr, "--http", httpAddr,
			"--max-conns", strconv.Itoa(conns+100), "--log-level", "warn")
		sidecartest.WaitHealthy(b, p, httpAddr)
		consume := make([]string, groups)
		for g := range groups {
			consume[g] = fmt.Sprintf("g%d:%s", g, topic)
		}
		if status, body := sidecartest.Register(b, httpAddr, "fleet", []string{"p1:" + topic}, consume); status != http.StatusCreated {
			b.Fatalf("register: %d %s", status, body)
		}
		pub := sidecartest.Dial(b, meshAddr, client.WithApp("fleet"))
		tally := newGroupTally(groups, 2*msgs)
		publish := func(from int, lat *latencies) {
			for i := from; i < from+msgs; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
				start := time.Now()
				_, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: []byte(strconv.Itoa(i))})
				cancel()
				if err != nil {
					b.Fatalf("publish %d: %v", i, err)
				}
				lat.add(time.Since(start))
			}
		}
		var quiet, loaded latencies
		publish(0, &quiet)
		rss0, fds0 := procStats(b, p.Cmd.Process.Pid)

		fleet := dialFleet(b, meshAddr, conns, groups, tally)
		sidecartest.WaitFor(b, 5*time.Minute, "every group to receive the messages published before", func() bool { return tally.complete(msgs) })
		rss1, fds1 := procStats(b, p.Cmd.Process.Pid)

		ups := upstreamsAt(b, httpAddr)
		running := 0
		for g := range groups {
			if ups[fmt.Sprintf("g%d:%s", g, topic)] {
				running++
			}
		}
		if len(ups) != groups || running != groups {
			b.Fatalf("%d upstream consumers, %d of the %d groups running; want exactly one per group: %v", len(ups), running, groups, ups)
		}

		publish(msgs, &loaded)
		sidecartest.WaitFor(b, 5*time.Minute, "every group to receive every message", func() bool { return tally.complete(2 * msgs) })
		if n := fleet.failed.Load(); n > 0 {
			b.Fatalf("%d connections failed: %v", n, fleet.firstErr())
		}
		fleet.close()

		b.ReportMetric(float64(rss1-rss0)/conns, "RSS-KiB/conn")
		b.ReportMetric(float64(fds1-fds0)/conns, "fds/conn")
		b.ReportMetric(ms(quiet.quantile(0.5)), "pub-p50-ms-before")
		b.ReportMetric(ms(quiet.quantile(0.99)), "pub-p99-ms-before")
		b.ReportMetric(ms(loaded.quantile(0.5)), "pub-p50-ms-10k")
		b.ReportMetric(ms(loaded.quantile(0.99)), "pub-p99-ms-10k")
		b.ReportMetric(float64(loaded.quantile(0.99))/float64(max(quiet.quantile(0.99), 1)), "p99-ratio")
		b.ReportMetric(float64(tally.deliveries.Load()), "deliveries")
		b.ReportMetric(float64(groups), "upstreams")
		b.Logf("sidecar RSS %.1f MiB before the connections, %.1f MiB with them; fds %d -> %d",
			float64(rss0)/1024, float64(rss1)/1024, fds0, fds1)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// groupTally records which messages (bodies 0..n-1) each group received.
type groupTally struct {
	seen       [][]atomic.Bool
	distinct   []atomic.Int64
	deliveries atomic.Int64
}

func newGroupTally(groups, n int) *groupTally {
	t := &groupTally{seen: make([][]atomic.Bool, groups), distinct: make([]atomic.Int64, groups)}
	for g := range t.seen {
		t.seen[g] = make([]atomic.Bool, n)
	}
	return t
}

func (t *groupTally) add(group int, body []byte) error {
	t.deliveries.Add(1)
	i, err := strconv.Atoi(string(body))
	if err != nil || i < 0 || i >= len(t.seen[group]) {
		return fmt.Errorf("group %d got an unexpected body %q", group, body)
	}
	if !t.seen[group][i].Swap(true) {
		t.distinct[group].Add(1)
	}
	return nil
}

// complete reports whether every group has messages 0..n-1.
func (t *groupTally) complete(n int) bool {
	for g := range t.distinct {
		if t.distinct[g].Load() < int64(n) {
			return false
		}
		for i := range n {
			if !t.seen[g][i].Load() {
				return false
			}
		}
	}
	return true
}

// fleet is many raw app connections, each declaring one group and acking
// every delivery.
type fleet struct {
	conns  []net.Conn
	wg     sync.WaitGroup
	failed atomic.Int64
	mu     sync.Mutex
	err    error
}

func (f *fleet) fail(err error) {
	f.failed.Add(1)
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *fleet) firstErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *fleet) close() {
	for _, c := range f.conns {
		_ = c.Close()
	}
	f.wg.Wait()
}

// dialFleet opens n connections as app "fleet", connection i declaring
// group g(i mod groups) in push mode, and returns once each has its
// DECLARE answered. Each connection's goroutine acks its deliveries and
// records them in tally until the connection closes.
func dialFleet(b *testing.B, addr string, n, groups int, tally *groupTally) *fleet {
	f := &fleet{conns: make([]net.Conn, n)}
	b.Cleanup(f.close)
	hello, err := mesh.AppendFrame(nil, 0, mesh.KindHello, 0, 1, &mesh.Hello{App: "fleet"})
	if err != nil {
		b.Fatal(err)
	}
	var declared sync.WaitGroup
	declared.Add(n)
	dialers := make(chan int)
	var dwg sync.WaitGroup
	for range 32 {
		dwg.Go(func() {
			for i := range dialers {
				c, err := net.DialTimeout("tcp", addr, sidecartest.Scaled(10*time.Second))
				if err != nil {
					f.fail(fmt.Errorf("dial %d: %w", i, err))
					declared.Done()
					continue
				}
				f.conns[i] = c
				g := i % groups
				decl, err := mesh.AppendFrame(append([]byte(nil), hello...), 0, mesh.KindDeclare, 0, 2,
					&mesh.Declare{Subs: []mesh.Subscription{{Group: fmt.Sprintf("g%d", g), Topic: topic, Mode: mesh.ModePush}}})
				if err == nil {
					_, err = c.Write(decl)
				}
				if err != nil {
					f.fail(fmt.Errorf("conn %d: %w", i, err))
					declared.Done()
					continue
				}
				f.wg.Go(func() { f.serve(c, g, tally, declared.Done) })
			}
		})
	}
	for i := range n {
		dialers <- i
	}
	close(dialers)
	dwg.Wait()
	done := make(chan struct{})
	go func() { declared.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(sidecartest.Scaled(2 * time.Minute)):
		b.Fatal("the connections' DECLAREs were not all answered")
	}
	if n := f.failed.Load(); n > 0 {
		b.Fatalf("%d of the connections failed: %v", n, f.firstErr())
	}
	return f
}

// serve reads c's frames: the OKs to HELLO and DECLARE (then declared is
// called), and deliveries, each recorded and acked.
func (f *fleet) serve(c net.Conn, group int, tally *groupTally, declared func()) {
	r := mesh.NewReader(bufio.NewReaderSize(c, 512), 0)
	oks := 0
	var ack []byte
	for {
		fr, err := r.ReadFrame()
		if err != nil {
			if oks < 2 {
				f.fail(fmt.Errorf("before DECLARE was answered: %w", err))
				declared()
			} else if !errors.Is(err, net.ErrClosed) {
				f.fail(err)
			}
			return
		}
		switch fr.Kind {
		case mesh.KindOK:
			if oks++; oks == 2 {
				declared()
			}
		case mesh.KindDeliver:
			var m mesh.Message
			if err := m.Decode(fr.Payload); err != nil {
				f.fail(err)
				return
			}
			if err := tally.add(group, m.Body); err != nil {
				f.fail(err)
			}
			ack, _ = mesh.AppendFrame(ack[:0], 0, mesh.KindAck, mesh.FlagResponse, fr.ID, nil)
			if _, err := c.Write(ack); err != nil {
				f.fail(err)
				return
			}
		case mesh.KindError:
			f.fail(fmt.Errorf("ERROR frame %d: %x", fr.ID, fr.Payload))
			if oks < 2 {
				declared()
			}
			return
		}
	}
}
