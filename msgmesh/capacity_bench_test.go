package msgmesh_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
)

// Memory per idle connection and per upstream consumer, for sizing
// max_conns and max_upstreams (docs/benchmarks.md, "Capacity"). Everything
// runs in this process: the sidecar, an embedded JetStream server and the
// clients, so the figures are Go heap (live, after GC) plus goroutine
// stacks, measured before and after opening n of a thing, divided by n.
// Each is put beside the direct path in the same run: an idle client
// connection to nats-server, a JetStream consumer held by nats.go.
//
//	go test -run '^$' -bench 'IdleConnMemory|UpstreamMemory' -benchtime 1x ./msgmesh/

// liveMemory returns the live heap plus goroutine stacks after GC, and the
// goroutine count.
func liveMemory() (bytes float64, goroutines int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc + m.StackInuse), runtime.NumGoroutine()
}

// cost measures what open adds per unit, once the units are up; closeAll
// releases them and waits until their goroutines are gone.
func cost(b *testing.B, n int, open func(i int), closeAll func()) (bytesPer, goroutinesPer float64) {
	b.Helper()
	m0, g0 := liveMemory()
	for i := range n {
		open(i)
	}
	m1, g1 := liveMemory()
	closeAll()
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > g0+5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling until the units are gone
	}
	return (m1 - m0) / float64(n), float64(g1-g0) / float64(n)
}

// BenchmarkIdleConnMemory: an app connection that said HELLO and waits,
// against an idle client connection to nats-server (CONNECT, PING/PONG).
// Reports B/conn and goroutines/conn for the sidecar, B/nats-conn for
// nats-server, and their ratio.
func BenchmarkIdleConnMemory(b *testing.B) {
	const n = 1000
	e := newEnv(b, func(c *msgmesh.Config) { c.MaxConns = 4 * n; c.HelloTimeout = time.Hour })
	e.register("orders", []string{"p1:" + topic}, nil)
	emb := natstest.Start(b)
	natsAddr := strings.TrimPrefix(emb.ClientURL(), "nats://")

	hello, err := mesh.AppendFrame(nil, 0, mesh.KindHello, 0, 1, &mesh.Hello{App: "orders"})
	if err != nil {
		b.Fatal(err)
	}
	var conns []net.Conn
	dial := func(addr string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		conns = append(conns, c)
		return c
	}
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
		conns = conns[:0]
	}
	openSidecar := func(int) {
		c := dial(e.addr)
		if _, err := c.Write(hello); err != nil {
			b.Fatal(err)
		}
		// The OK answer is a bare header; read it without a frame reader,
		// whose buffer would count against the sidecar.
		ok := make([]byte, mesh.HeaderSize)
		if _, err := io.ReadFull(c, ok); err != nil || mesh.Kind(ok[5]) != mesh.KindOK {
			b.Fatalf("HELLO: % x, %v", ok, err)
		}
	}
	openNATS := func(int) {
		c := dial(natsAddr)
		r := bufio.NewReaderSize(c, 16)
		if _, err := r.ReadString('\n'); err != nil { // INFO
			b.Fatal(err)
		}
		if _, err := io.WriteString(c, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n"); err != nil {
			b.Fatal(err)
		}
		if l, err := r.ReadString('\n'); err != nil || l != "PONG\r\n" {
			b.Fatalf("nats handshake: %q %v", l, err)
		}
	}
	var side, direct, goroutines float64
	for range b.N {
		s, g := cost(b, n, openSidecar, closeAll)
		d, _ := cost(b, n, openNATS, closeAll)
		side, direct, goroutines = side+s, direct+d, goroutines+g
	}
	N := float64(b.N)
	b.ReportMetric(side/N, "B/conn")
	b.ReportMetric(goroutines/N, "goroutines/conn")
	b.ReportMetric(direct/N, "B/nats-conn")
	b.ReportMetric(side/direct, "x-nats")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkUpstreamMemory: one upstream consumer, as one registration of
// an app consuming one group makes it on the embedded JetStream server,
// against a durable JetStream pull consumer with a message iterator held
// by nats.go directly (what the adapter creates, without the sidecar).
// Both sides include nats-server's state for the consumer. Reports
// B/upstream and goroutines/upstream for the sidecar, B/js-consumer for the
// direct path, and their ratio.
func BenchmarkUpstreamMemory(b *testing.B) {
	const n = 200
	c := sidecartest.NATSCluster(b)
	e := newEnvOn(b, c, func(c *msgmesh.Config) { c.MaxRegistrations, c.MaxUpstreams = 100*n, 100*n })
	e.register("warmup", nil, []string{"warm:" + topic}) // the stream exists before measuring

	nc, err := nats.Connect(c.Endpoints[0])
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const directSubject = "bench.direct"
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH_DIRECT", Subjects: []string{directSubject}})
	if err != nil {
		b.Fatal(err)
	}
	var apps []string
	var iters []jetstream.MessagesContext
	round := 0
	openUpstream := func(i int) {
		app := fmt.Sprintf("app-%d-%d", round, i)
		e.register(app, nil, []string{fmt.Sprintf("g-%d-%d:%s", round, i, topic)})
		apps = append(apps, app)
	}
	closeUpstreams := func() {
		for _, app := range apps {
			if err := e.sc.Deregister(ctx, app, ""); err != nil {
				b.Fatal(err)
			}
		}
		apps = apps[:0]
	}
	openDirect := func(i int) {
		cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("d-%d-%d", round, i), FilterSubject: directSubject,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute,
		})
		if err != nil {
			b.Fatal(err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(natsbroker.DefaultPrefetch), jetstream.WithMessagesErrOnMissingHeartbeat(false))
		if err != nil {
			b.Fatal(err)
		}
		iters = append(iters, it)
	}
	closeDirect := func() {
		for _, it := range iters {
			it.Stop()
		}
		iters = iters[:0]
	}
	var side, direct, goroutines float64
	for range b.N {
		s, g := cost(b, n, openUpstream, closeUpstreams)
		d, _ := cost(b, n, openDirect, closeDirect)
		side, direct, goroutines = side+s, direct+d, goroutines+g
		round++
	}
	N := float64(b.N)
	b.ReportMetric(side/N, "B/upstream")
	b.ReportMetric(goroutines/N, "goroutines/upstream")
	b.ReportMetric(direct/N, "B/js-consumer")
	b.ReportMetric(side/direct, "x-direct")
	b.ReportMetric(0, "ns/op")
}
