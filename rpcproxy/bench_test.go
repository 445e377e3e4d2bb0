package rpcproxy

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/http1"
	"github.com/msgmesh/msgmesh/codecs/meshrpc"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

// The benchmarks below measure one call with 1 KiB request and answer, 64
// calls in flight over 8 client connections (the settings of meshctl bench
// rpc, rpcbench), on loopback, everything in this process: the client is a
// stream.Cluster of the codec, the server rpctest's echo. Besides ns/op
// and allocs/op (client, sidecars and server together) they report the
// process's CPU time per call (cpu-ns/op: on a machine shared with other
// work, ns/op moves with the others' load, CPU time much less) and its
// read and write syscalls per call (/proc/self/io), the figure the
// proxy's batching works on. Direct is the same client and server
// without the sidecars: the difference is the sidecars' cost.
//
//	go test -run '^$' -bench 'RPC' -benchmem -count 5 ./rpcproxy/

func BenchmarkRPCMeshDirect(b *testing.B) {
	app := startMeshEcho(b)
	benchCalls(b, meshrpc.Codec{}, app.Addr(), meshBenchReq)
}

func BenchmarkRPCMeshSidecars(b *testing.B) {
	app := startMeshEcho(b)
	egress, _ := sidecarPair(b, map[string]string{meshrpc.Name: app.Addr()})
	benchCalls(b, meshrpc.Codec{}, egress.EgressAddr().String(), meshBenchReq)
}

func BenchmarkRPCHTTPSidecars(b *testing.B) {
	app := startHTTPEcho(b)
	egress, _ := sidecarPair(b, map[string]string{http1.Name: app.Addr()})
	benchCalls(b, http1.Codec{}, egress.EgressAddr().String(), func(m *stream.Message, body []byte) error {
		return http1.NewRequest(m, "POST", "echo", "/echo", nil, body)
	})
}

func meshBenchReq(m *stream.Message, body []byte) error {
	return meshrpc.NewRequest(m, "echo", "Echo", nil, body)
}

func benchCalls(b *testing.B, codec stream.Codec, addr string, build func(*stream.Message, []byte) error) {
	cl, err := stream.NewCluster(stream.ClusterConfig{
		Name: "bench-client", Codec: codec, Hosts: []stream.HostConfig{{Addr: addr}},
		ConnsPerHost: 8, RoundRobinConns: true, MaxIdlePerHost: 64, Logger: testLog(),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	body := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz"), 40)[:1024]
	call := func() error {
		m := stream.NewMessage()
		defer m.Release()
		if err := build(m, body); err != nil {
			return err
		}
		resp, err := cl.RoundTrip(context.Background(), m, 10*time.Second, nil)
		if err != nil {
			return err
		}
		defer resp.Release()
		if resp.Status != 200 || resp.Size < len(body) {
			return stream.Errorf(stream.ErrInternal, "answer with status %d, %d bytes", resp.Status, resp.Size)
		}
		return nil
	}
	for range 200 { // connections, pools, stacks
		if err := call(); err != nil {
			b.Fatal(err)
		}
	}
	r0, w0 := syscalls()
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.SetParallelism(32) // 64 calls in flight on GOMAXPROCS 2
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := call(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	cpu := cpuTime() - cpu0
	r1, w1 := syscalls()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	if r0 >= 0 && r1 >= 0 {
		b.ReportMetric(float64(r1-r0)/float64(b.N), "reads/op")
		b.ReportMetric(float64(w1-w0)/float64(b.N), "writes/op")
	}
}

// cpuTime returns the CPU time (user and system) the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// syscalls returns the process's read and write syscalls so far, or -1
// where /proc/self/io cannot be read.
func syscalls() (reads, writes int64) {
	reads, writes = -1, -1
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte(": "))
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			continue
		}
		switch string(k) {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return
}
