package stream_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/codecs/meshrpc"
	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/rpcproxy/rpctest"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

// These tests drive stream.Cluster with the mesh RPC codec against real
// servers on loopback (rpctest), through the exported API only.

func rpcQuiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func rpcServer(t *testing.T, h rpctest.MeshHandler) *rpctest.MeshServer {
	t.Helper()
	s, err := rpctest.StartMesh("", h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func rpcCluster(t *testing.T, cfg stream.ClusterConfig) *stream.Cluster {
	t.Helper()
	if cfg.Codec == nil {
		cfg.Codec = meshrpc.Codec{}
	}
	cfg.Logger = rpcQuiet()
	c, err := stream.NewCluster(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// rpcCall calls service "svc" with body and returns the answer's body, or
// the error (a *stream.Error from the cluster, a *mesh.Error from the server).
func rpcCall(c *stream.Cluster, timeout time.Duration, body string) (string, error) {
	m := stream.NewMessage()
	defer m.Release()
	if err := meshrpc.NewRequest(m, "svc", "M", nil, []byte(body)); err != nil {
		return "", err
	}
	resp, err := c.RoundTrip(context.Background(), m, timeout, nil)
	if err != nil {
		return "", err
	}
	defer resp.Release()
	r, err := meshrpc.Answer(resp)
	if err != nil {
		return "", err
	}
	return string(r.Body), nil
}

// rpcStart is rpcCall through Cluster.Start, the proxy's way for a codec
// that queues its writes: no goroutine waits for the answer.
func rpcStart(c *stream.Cluster, timeout time.Duration, body string) (string, error) {
	m := stream.NewMessage()
	defer m.Release()
	if err := meshrpc.NewRequest(m, "svc", "M", nil, []byte(body)); err != nil {
		return "", err
	}
	d := make(doneChan, 1)
	c.Start(context.Background(), m, timeout, nil, d)
	r := <-d
	if r.Err != nil {
		return "", r.Err
	}
	defer r.Val.Release()
	a, err := meshrpc.Answer(r.Val)
	if err != nil {
		return "", err
	}
	return string(a.Body), nil
}

type doneChan chan core.Result[*stream.Message]

func (d doneChan) CallDone(resp *stream.Message, err error) {
	d <- core.Result[*stream.Message]{Val: resp, Err: err}
}

// callStyles are the two ways to make a call: waiting (RoundTrip) and
// handing the answer over (Start).
var callStyles = []struct {
	name string
	call func(c *stream.Cluster, timeout time.Duration, body string) (string, error)
}{{"RoundTrip", rpcCall}, {"Start", rpcStart}}

func rpcCode(t *testing.T, err error) stream.ErrorCode {
	t.Helper()
	var e *stream.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *stream.Error", err, err)
	}
	return e.Code
}

// deadAddr returns an address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestClusterWeightedRoundRobin(t *testing.T) {
	a, b := rpcServer(t, nil), rpcServer(t, nil)
	c := rpcCluster(t, stream.ClusterConfig{Name: "rr", Hosts: []stream.HostConfig{{Addr: a.Addr(), Weight: 1}, {Addr: b.Addr(), Weight: 3}}})
	for i := 0; i < 40; i++ {
		if _, err := rpcCall(c, 5*time.Second, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if a.Calls() != 10 || b.Calls() != 30 {
		t.Fatalf("weights 1:3 over 40 calls gave %d:%d, want 10:30", a.Calls(), b.Calls())
	}
}

func TestClusterLeastRequestAvoidsBusyHost(t *testing.T) {
	release := make(chan struct{})
	slow := rpcServer(t, func(ctx context.Context, req *mesh.Request) (*mesh.Response, *mesh.Error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &mesh.Response{Body: req.Body}, nil
	})
	fast := rpcServer(t, nil)
	c := rpcCluster(t, stream.ClusterConfig{Name: "lr", Policy: stream.LeastRequest, Hosts: []stream.HostConfig{{Addr: slow.Addr()}, {Addr: fast.Addr()}}})

	// Park one call on the slow host; from then on it is the busier one.
	var parked chan error
	for parked == nil {
		done := make(chan error, 1)
		go func() { _, err := rpcCall(c, 10*time.Second, "x"); done <- err }()
		// Either the call went to the fast host and is answered, or it is
		// parked on the slow one.
		waitForCalls(t, func() bool { return slow.Calls() > 0 || len(done) > 0 })
		if slow.Calls() > 0 {
			parked = done
		} else if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	before := fast.Calls()
	for i := 0; i < 50; i++ {
		if _, err := rpcCall(c, 5*time.Second, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if got := fast.Calls() - before; got != 50 {
		t.Fatalf("with the other host busy, least_request sent %d of 50 calls to the idle host", got)
	}
	close(release)
	if err := <-parked; err != nil {
		t.Fatalf("the parked call: %v", err)
	}
}

func waitForCalls(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for a call to arrive")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestClusterFailsOverOnRefusedConnect(t *testing.T) {
	live := rpcServer(t, nil)
	dead := deadAddr(t)
	for _, policy := range []stream.LBPolicy{stream.RoundRobin, stream.LeastRequest} {
		t.Run(policy.String(), func(t *testing.T) {
			c := rpcCluster(t, stream.ClusterConfig{Name: "fo", Policy: policy, Hosts: []stream.HostConfig{{Addr: dead}, {Addr: live.Addr()}}})
			for i := 0; i < 20; i++ {
				if body, err := rpcCall(c, 5*time.Second, "hi"); err != nil || body != "hi" {
					t.Fatalf("call %d: %q, %v", i, body, err)
				}
			}
			hs := c.Hosts()
			if !hs[0].Down || hs[1].Down {
				t.Fatalf("hosts after failover: %+v; want the refusing one down", hs)
			}
		})
	}
}

func TestClusterNoHealthyHost(t *testing.T) {
	c := rpcCluster(t, stream.ClusterConfig{Name: "none", Hosts: []stream.HostConfig{{Addr: deadAddr(t)}, {Addr: deadAddr(t)}}})
	_, err := rpcCall(c, 5*time.Second, "x")
	if rpcCode(t, err) != stream.ErrNoHealthyHost {
		t.Fatalf("error %v, want NO_HEALTHY_HOST", err)
	}
}

func TestClusterTimeoutKeepsConnection(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	s := rpcServer(t, func(ctx context.Context, req *mesh.Request) (*mesh.Response, *mesh.Error) {
		if string(req.Body) == "hang" {
			select {
			case <-hold:
			case <-ctx.Done():
			}
		}
		return &mesh.Response{Body: req.Body}, nil
	})
	c := rpcCluster(t, stream.ClusterConfig{Name: "to", ConnsPerHost: 1, Hosts: []stream.HostConfig{{Addr: s.Addr()}}})
	for _, st := range callStyles {
		t.Run(st.name, func(t *testing.T) {
			// Twice: Start's first call connects RoundTrip's way, its
			// second is queued on the open connection.
			for range 2 {
				start := time.Now()
				_, err := st.call(c, 50*time.Millisecond, "hang")
				if rpcCode(t, err) != stream.ErrTimeout {
					t.Fatalf("error %v, want TIMEOUT", err)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Fatalf("timeout of 50ms took %s", d)
				}
			}
			// A multiplexed connection outlives a timed-out call.
			if body, err := st.call(c, 5*time.Second, "ok"); err != nil || body != "ok" {
				t.Fatalf("call after a timeout: %q, %v", body, err)
			}
			if s.Accepted() != 1 {
				t.Fatalf("server accepted %d connections, want 1", s.Accepted())
			}
		})
	}
}

func TestClusterUpstreamDiesMidCall(t *testing.T) {
	for _, st := range callStyles {
		t.Run(st.name, func(t *testing.T) {
			s := rpcServer(t, func(ctx context.Context, req *mesh.Request) (*mesh.Response, *mesh.Error) {
				<-ctx.Done() // never answers; the server's Close ends it
				return nil, nil
			})
			c := rpcCluster(t, stream.ClusterConfig{Name: "reset", ConnsPerHost: 1, Hosts: []stream.HostConfig{{Addr: s.Addr()}}})
			// The first call connects; the second (with Start: queued
			// on that connection) is outstanding too when it dies.
			var dones []chan error
			for i, call := range []func(*stream.Cluster, time.Duration, string) (string, error){rpcCall, st.call} {
				done := make(chan error, 1)
				go func() { _, err := call(c, time.Minute, "x"); done <- err }()
				waitForCalls(t, func() bool { return s.Calls() == int64(i+1) })
				dones = append(dones, done)
			}
			s.Close()
			for _, done := range dones {
				select {
				case err := <-done:
					if rpcCode(t, err) != stream.ErrUpstreamReset {
						t.Fatalf("error %v, want UPSTREAM_RESET", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the call hangs after its upstream died")
				}
			}
		})
	}
}

func TestClusterCloseFailsOutstanding(t *testing.T) {
	s := rpcServer(t, func(ctx context.Context, req *mesh.Request) (*mesh.Response, *mesh.Error) {
		<-ctx.Done()
		return nil, nil
	})
	c, err := stream.NewCluster(stream.ClusterConfig{Name: "close", Codec: meshrpc.Codec{}, Logger: rpcQuiet(), Hosts: []stream.HostConfig{{Addr: s.Addr()}}})
	if err != nil {
		t.Fatal(err)
	}
	// One call of each style outstanding (Start's queued on the
	// connection the first made).
	var dones []chan error
	for i, st := range callStyles {
		done := make(chan error, 1)
		go func() { _, err := st.call(c, time.Minute, "x"); done <- err }()
		waitForCalls(t, func() bool { return s.Calls() == int64(i+1) })
		dones = append(dones, done)
	}
	c.Close()
	for i, done := range dones {
		if err := <-done; rpcCode(t, err) != stream.ErrShuttingDown {
			t.Fatalf("%s: error %v, want SHUTTING_DOWN", callStyles[i].name, err)
		}
	}
	for _, st := range callStyles {
		if _, err := st.call(c, time.Second, "x"); rpcCode(t, err) != stream.ErrShuttingDown {
			t.Fatalf("%s after Close: %v, want SHUTTING_DOWN", st.name, err)
		}
	}
	c.Close() // twice is fine
}

func TestClusterConfigErrors(t *testing.T) {
	for name, cfg := range map[string]stream.ClusterConfig{
		"no codec":        {Name: "x", Hosts: []stream.HostConfig{{Addr: "127.0.0.1:1"}}},
		"no hosts":        {Name: "x", Codec: meshrpc.Codec{}},
		"empty address":   {Name: "x", Codec: meshrpc.Codec{}, Hosts: []stream.HostConfig{{}}},
		"negative weight": {Name: "x", Codec: meshrpc.Codec{}, Hosts: []stream.HostConfig{{Addr: "127.0.0.1:1", Weight: -1}}},
		"bad policy":      {Name: "x", Codec: meshrpc.Codec{}, Policy: 9, Hosts: []stream.HostConfig{{Addr: "127.0.0.1:1"}}},
	} {
		if _, err := stream.NewCluster(cfg); err == nil {
			t.Errorf("%s: NewCluster accepted it", name)
		}
	}
	if _, err := stream.ParseLBPolicy("random"); err == nil {
		t.Error("ParseLBPolicy accepted random")
	}
}

// A host that refuses a second connection but keeps its first one serves
// every call on the first.
func TestClusterExtraConnectFailsUsesOpenConn(t *testing.T) {
	s := rpcServer(t, nil)
	c := rpcCluster(t, stream.ClusterConfig{Name: "one", ConnsPerHost: 3, Hosts: []stream.HostConfig{{Addr: s.Addr()}}})
	if _, err := rpcCall(c, 5*time.Second, "first"); err != nil {
		t.Fatal(err)
	}
	s.StopAccepting()
	for i := 0; i < 10; i++ {
		if body, err := rpcCall(c, 5*time.Second, "x"); err != nil || body != "x" {
			t.Fatalf("call %d: %q, %v", i, body, err)
		}
	}
	if s.Accepted() != 1 {
		t.Fatalf("%d connections accepted, want 1", s.Accepted())
	}
}

// onceDone fails the test if its call ends twice.
type onceDone struct {
	t     *testing.T
	ended atomic.Bool
	wg    *sync.WaitGroup
	req   *stream.Message
	ok    *atomic.Int64
}

func (d *onceDone) CallDone(resp *stream.Message, err error) {
	if d.ended.Swap(true) {
		d.t.Error("a call ended twice")
		return
	}
	if err == nil {
		d.ok.Add(1)
		resp.Release()
	} else if code := stream.AsError(err).Code; code != stream.ErrTimeout {
		d.t.Errorf("call failed with %v, want an answer or TIMEOUT", err)
	}
	d.req.Release()
	d.wg.Done()
}

// Calls started with Start whose deadlines pass just as their answers
// come each end exactly once, with the answer or TIMEOUT (run it with
// -race: the sweeper, the read loop and Start race for the same calls).
func TestClusterStartRacesTimeouts(t *testing.T) {
	s := rpcServer(t, func(ctx context.Context, req *mesh.Request) (*mesh.Response, *mesh.Error) {
		time.Sleep(time.Duration(len(req.Body)%4) * time.Millisecond)
		return &mesh.Response{Body: req.Body}, nil
	})
	c := rpcCluster(t, stream.ClusterConfig{Name: "race", ConnsPerHost: 2, Hosts: []stream.HostConfig{{Addr: s.Addr()}}})
	if _, err := rpcCall(c, 5*time.Second, "warm"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var ok atomic.Int64
	const calls = 2000
	for i := range calls {
		m := stream.NewMessage()
		if err := meshrpc.NewRequest(m, "svc", "M", nil, []byte(strings.Repeat("x", i%7))); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		c.Start(context.Background(), m, time.Duration(1+i%3)*time.Millisecond, nil, &onceDone{t: t, wg: &wg, req: m, ok: &ok})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("calls started with Start never ended")
	}
	t.Logf("%d of %d answered in time", ok.Load(), calls)
}
