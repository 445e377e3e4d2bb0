package main_test

import (
	"errors"
	"flag"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/ctrlplane/store/etcdtest"
	"github.com/msgmesh/msgmesh/internal/procstat"
)

var fleetWatchers = flag.Int("fleet.watchers", 1000, "BenchmarkFleet: sidecars watching the control plane")

// BenchmarkFleet measures how fast an operator's weight change reaches a
// fleet of sidecars: -fleet.watchers config watchers (the sidecars' own
// ctrlclient.Watcher, each with its own HTTP connection and long poll, all
// in this process) on the real ctrlplane binary, run as a child process so
// that its CPU time and memory are its own. Each iteration sets a weight
// and waits until every watcher has received the config carrying it.
//
//	go test -run '^$' -bench Fleet -benchtime 20x ./cmd/ctrlplane
//
// Variants: the embedded bbolt store; etcd (a real etcd server in this
// process) with one control-plane replica; and etcd with two replicas
// sharing it, watchers split between them, where the first replica is
// SIGKILLed just before the first change, so that the first iteration
// includes every orphaned watcher failing over to the other replica.
// Reported: p50, p99 and max of the per-watcher delay from the operator's
// call to the watcher's onChange (and, for the kill, of the first change
// alone), the control planes' CPU time per change, and their RSS.
func BenchmarkFleet(b *testing.B) {
	for _, v := range []struct {
		name     string
		etcd     bool
		replicas int
		kill     bool
	}{
		{"bolt", false, 1, false},
		{"etcd", true, 1, false},
		{"etcd-replica-killed", true, 2, true},
	} {
		b.Run(v.name, func(b *testing.B) {
			storeArgs := []string{}
			if v.etcd {
				storeArgs = []string{"--store", etcdtest.Start(b).Spec("fleet-bench")}
			}
			runFleet(b, *fleetWatchers, v.replicas, v.kill, storeArgs)
		})
	}
}

func runFleet(b *testing.B, n, replicas int, kill bool, storeArgs []string) {
	ctx := b.Context()
	var procs []*proc
	var urls []string
	for range replicas {
		addr := brokertest.FreeAddr(b)
		args := append([]string{"--data-dir", b.TempDir(), "--listen", addr, "--log-level", "warn"}, storeArgs...)
		procs = append(procs, start(b, []string{"MSGMESH_CTRLPLANE_TOKEN=" + token}, args...))
		urls = append(urls, "http://"+addr)
	}
	op, err := ctrlclient.New(strings.Join(urls, ","), token)
	if err != nil {
		b.Fatal(err)
	}
	for _, u := range urls {
		c, err := ctrlclient.New(u, token)
		if err != nil {
			b.Fatal(err)
		}
		waitUntil(b, "ctrlplane "+u+" to answer /healthz", func() bool { return c.Health(ctx) == nil })
	}
	created, err := op.CreateApp(ctx, "fleet")
	if err != nil {
		b.Fatal(err)
	}
	w0 := 50
	if _, _, err := op.PutInstance(ctx, "fleet", api.InstanceSpec{Addr: "10.0.0.1:7602", Weight: &w0}); err != nil {
		b.Fatal(err)
	}

	// Each watcher reports the first config carrying the weight of the
	// change under way.
	var (
		target  atomic.Int64 // the weight being propagated
		started atomic.Int64 // UnixNano of the operator's call
		mu      sync.Mutex
		seen    = make([]int64, n) // last target each watcher reported
		delays  []time.Duration
		left    atomic.Int64
		allIn   = make(chan struct{}, 1)
		ready   atomic.Int64
	)
	target.Store(int64(w0))
	for i := range n {
		// Half the watchers list the replicas in the other order, so
		// that with two replicas each serves half of them.
		order := slices.Clone(urls)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		c, err := ctrlclient.New(strings.Join(order, ","), created.Credential)
		if err != nil {
			b.Fatal(err)
		}
		first := true
		w, err := c.Watch(ctx, "fleet", func(cfg api.AppConfig) {
			if first {
				first = false
				ready.Add(1)
			}
			in, ok := cfg.Instance("10.0.0.1:7602")
			want := target.Load()
			if !ok || int64(in.Weight) != want {
				return
			}
			d := time.Since(time.Unix(0, started.Load()))
			mu.Lock()
			if seen[i] == want {
				mu.Unlock()
				return
			}
			seen[i] = want
			delays = append(delays, d)
			mu.Unlock()
			if left.Add(-1) == 0 {
				allIn <- struct{}{}
			}
		}, ctrlclient.WithBackoff(50*time.Millisecond, time.Second))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(w.Stop)
	}
	waitUntil(b, "every watcher to have its first config", func() bool { return ready.Load() == int64(n) })
	mu.Lock()
	for i := range seen {
		seen[i] = int64(w0)
	}
	delays = delays[:0] // the first configs are not a change
	mu.Unlock()

	if kill {
		// SIGKILL, not a shutdown: the watchers' long polls on it die
		// with their connections, as when a host is lost.
		if err := procs[0].cmd.Process.Kill(); err != nil {
			b.Fatal(err)
		}
		<-procs[0].done
		procs = procs[1:]
	}
	cpu0 := cpuTime(b, procs)
	var firstDelays []time.Duration
	b.ResetTimer()
	for r := range b.N {
		w := 1 + r%99
		if w == w0 {
			w++
		}
		w0 = w
		left.Store(int64(n))
		target.Store(int64(w))
		started.Store(time.Now().UnixNano())
		if _, err := op.SetWeight(ctx, "fleet", "10.0.0.1:7602", w); err != nil {
			b.Fatalf("change %d: %v", r, err)
		}
		select {
		case <-allIn:
		case <-time.After(time.Minute):
			b.Fatalf("change %d reached %d of %d watchers in a minute", r, int64(n)-left.Load(), n)
		}
		if r == 0 {
			mu.Lock()
			firstDelays = slices.Clone(delays)
			mu.Unlock()
		}
	}
	b.StopTimer()
	cpu := cpuTime(b, procs) - cpu0
	mu.Lock()
	all := slices.Clone(delays)
	mu.Unlock()
	if len(all) != n*b.N {
		b.Fatalf("%d deliveries of %d changes to %d watchers, want %d", len(all), b.N, n, n*b.N)
	}
	p50, p99, maxd := percentiles(all)
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(ms(maxd), "max-ms")
	if kill {
		_, kp99, kmax := percentiles(firstDelays)
		b.ReportMetric(ms(kp99), "kill-p99-ms")
		b.ReportMetric(ms(kmax), "kill-max-ms")
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cp-cpu-ms/change")
	b.ReportMetric(float64(rssKiB(b, procs))/1024, "cp-rss-MiB")
}

func percentiles(d []time.Duration) (p50, p99, maxd time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2], s[(len(s)*99)/100], s[len(s)-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cpuTime is the user plus system CPU time of the processes so far.
func cpuTime(b *testing.B, procs []*proc) time.Duration {
	var total time.Duration
	for _, p := range procs {
		total += readStat(b, p).CPU
	}
	return total
}

// rssKiB is the resident set size of the processes.
func rssKiB(b *testing.B, procs []*proc) int64 {
	var total int64
	for _, p := range procs {
		total += int64(readStat(b, p).RSSKiB)
	}
	return total
}

func readStat(b *testing.B, p *proc) procstat.Stat {
	st, err := procstat.Read(p.cmd.Process.Pid)
	if errors.Is(err, procstat.ErrUnsupported) {
		b.Skip("needs /proc")
	}
	if err != nil {
		b.Fatal(err)
	}
	return st
}
