package msgmesh_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/internal/pki"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/forward"
	"github.com/msgmesh/msgmesh/scheduler"
	"github.com/msgmesh/msgmesh/topology"
)

// meshNode is one sidecar of app "orders" with its forwarding listener,
// wired as the msgmesh binary wires them, with certificates from ca.
type meshNode struct {
	sc      *msgmesh.Sidecar
	sched   *scheduler.Scheduler
	fwdAddr string
	fwdSrv  *forward.Server
	fwd     *forward.Forwarder
	addr    string
	http    string
}

// tlsFor issues app a certificate from ca and returns the TLS configs of
// a forwarding listener and of a forwarder holding it.
func tlsFor(t testing.TB, ca *pki.CA, app string) (srv, cli *tls.Config) {
	t.Helper()
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(app)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Issue(csrPEM, app, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(app, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if srv, err = pki.ServerTLS(id, ca.CertPEM()); err != nil {
		t.Fatal(err)
	}
	if cli, err = pki.ClientTLS(id, ca.CertPEM()); err != nil {
		t.Fatal(err)
	}
	return srv, cli
}

// nodeOpts changes how startNode wires a node.
type nodeOpts struct {
	// take is the forwarder's TakeTimeout. Zero: 2s, race-scaled, so that
	// a loaded CI machine does not make a live sibling look silent.
	take time.Duration
	// deliveryTimeout is the sidecar's; the forwarder's Timeout is a
	// second above it. Zero: 3s.
	deliveryTimeout time.Duration
	// wrap, if set, stands between the sidecar and its forwarder (to count
	// Forward's outcomes).
	wrap func(msgmesh.Forwarder) msgmesh.Forwarder
}

func startNode(t testing.TB, c topology.Cluster, ca *pki.CA, opts ...nodeOpts) *meshNode {
	t.Helper()
	var o nodeOpts
	if len(opts) > 0 {
		o = opts[0]
	}
	srvTLS, cliTLS := tlsFor(t, ca, "orders")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &meshNode{fwdAddr: ln.Addr().String()}
	n.sched = scheduler.New(n.fwdAddr)
	// Short delivery timeout (the broker's ack wait is twice it), so what a
	// stopped node held comes back quickly; the forwarder waits a bit
	// longer than the sibling's delivery timeout, as docs/forwarding.md says.
	take := o.take
	if take == 0 {
		take = sidecartest.Scaled(2 * time.Second)
	}
	deliveryTimeout := 3 * time.Second
	if o.deliveryTimeout > 0 {
		deliveryTimeout = o.deliveryTimeout
	}
	if n.fwd, err = forward.NewForwarder(forward.ClientConfig{TLS: cliTLS, App: "orders", Name: n.fwdAddr,
		Timeout: deliveryTimeout + time.Second, TakeTimeout: take, Logger: sidecartest.Logger()}); err != nil {
		t.Fatal(err)
	}
	b, err := brokers.Open(context.Background(), c, sidecartest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	var fwd msgmesh.Forwarder = n.fwd
	if o.wrap != nil {
		fwd = o.wrap(fwd)
	}
	n.sc, err = msgmesh.New(msgmesh.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Broker: b, Logger: sidecartest.Logger(), DeliveryTimeout: deliveryTimeout,
		Forwarding: &msgmesh.Forwarding{App: "orders", Scheduler: n.sched, Forwarder: fwd}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.sc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n.fwdSrv, err = forward.NewServer(forward.ServerConfig{TLS: srvTLS, App: "orders", Deliverer: n.sc, Logger: sidecartest.Logger()}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.fwdSrv.Serve(ln) }()
	n.addr, n.http = n.sc.Addr().String(), n.sc.HTTPAddr().String()
	t.Cleanup(func() { n.stop(10 * time.Second); _ = b.Close() })
	return n
}

// stop shuts the node down, giving apps grace to answer what they hold.
func (n *meshNode) stop(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	_ = n.fwdSrv.Shutdown(ctx)
	_ = n.sc.Shutdown(ctx)
	_ = n.fwd.Close()
}

func setWeights(nodes []*meshNode, weights ...int) {
	var ins []scheduler.Instance
	for i, n := range nodes {
		ins = append(ins, scheduler.Instance{ID: n.fwdAddr, Weight: weights[i]})
	}
	for _, n := range nodes {
		n.sched.Update(ins)
	}
}

// TestWeightedForwarding is docs/design.md flows 7 and 8 with three sidecars of
// one app, each with its own consuming app, on one broker.
func TestWeightedForwarding(t *testing.T) {
	c := sidecartest.NATSCluster(t)
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	nodes := []*meshNode{startNode(t, c, ca), startNode(t, c, ca), startNode(t, c, ca)}
	apps := make([]*sidecartest.Tally, 3)
	for i, n := range nodes {
		if status, body := sidecartest.Register(t, n.http, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
			t.Fatalf("register on node %d: %d %s", i, status, body)
		}
		apps[i] = sidecartest.NewTally()
		subscribe(t, sidecartest.Dial(t, n.addr), "g1", fmt.Sprintf("node%d", i), apps[i])
	}
	pub := sidecartest.Dial(t, nodes[0].addr)
	total := func() (n int) {
		for _, a := range apps {
			n += a.Count()
		}
		return n
	}
	union := func() *sidecartest.Tally {
		u := sidecartest.NewTally()
		for _, a := range apps {
			for b, k := range a.Bodies() {
				for ; k > 0; k-- {
					u.Add("", b)
				}
			}
		}
		return u
	}

	t.Run("weights 100/100/30", func(t *testing.T) {
		const n = 10_000
		setWeights(nodes, 100, 100, 30)
		sidecartest.PublishN(t, pub, topic, "w", n, 256)
		sidecartest.WaitFor(t, 60*time.Second, "every message to be consumed", func() bool { return total() >= n })
		union().ExactlyOnce(t, "w", n)
		s3 := nodes[2].sc.Stats()
		kept := float64(s3.FromBroker-s3.Forwarded) / float64(s3.FromBroker)
		if math.Abs(kept-0.30) > 0.03 {
			t.Errorf("node 3 kept %.1f%% of the %d deliveries it took from the broker, want 30%% ± 3", 100*kept, s3.FromBroker)
		}
		s1, s2 := nodes[0].sc.Stats(), nodes[1].sc.Stats()
		if s1.Forwarded != 0 || s2.Forwarded != 0 {
			t.Errorf("weight-100 nodes forwarded %d and %d deliveries, want none", s1.Forwarded, s2.Forwarded)
		}
		if got := s1.FromSiblings + s2.FromSiblings; got != s3.Forwarded {
			t.Errorf("nodes 1 and 2 took %d forwarded deliveries, node 3 forwarded %d", got, s3.Forwarded)
		}
		if d := math.Abs(float64(s1.FromSiblings) - float64(s2.FromSiblings)); d > 0.05*float64(s3.Forwarded)+2 {
			t.Errorf("forwarded deliveries split %d / %d between nodes 1 and 2; want about even", s1.FromSiblings, s2.FromSiblings)
		}
		t.Logf("node 3 took %d from the broker, kept %.1f%%, forwarded %d (node 1 got %d, node 2 got %d)",
			s3.FromBroker, 100*kept, s3.Forwarded, s1.FromSiblings, s2.FromSiblings)
	})

	t.Run("weight 0 drains a node", func(t *testing.T) {
		const n = 1000
		setWeights(nodes, 100, 100, 0)
		before := apps[2].Count()
		beforeTotal := total()
		sidecartest.PublishN(t, pub, topic, "z", n, 128)
		sidecartest.WaitFor(t, 60*time.Second, "every message to be consumed", func() bool { return total() >= beforeTotal+n })
		if got := apps[2].Count() - before; got != 0 {
			t.Fatalf("the app of the weight-0 node received %d messages, want none", got)
		}
	})

	t.Run("unauthenticated peers are refused", func(t *testing.T) {
		// A TLS client without a certificate: the handshake fails before
		// a frame is read, so nothing can be injected.
		conn, err := tls.Dial("tcp", nodes[2].fwdAddr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		if err == nil {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil {
			t.Fatal("a peer without a certificate was accepted on the forwarding port")
		}
		// A certificate for the right app from another CA is refused too.
		other, _ := pki.NewCA()
		keyPEM, csrPEM, _ := pki.NewKeyAndCSR("orders")
		certPEM, _ := other.Issue(csrPEM, "orders", time.Hour)
		cert, _ := tls.X509KeyPair(certPEM, keyPEM)
		conn, err = tls.Dial("tcp", nodes[2].fwdAddr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}})
		if err == nil {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil {
			t.Fatal("a certificate from another CA was accepted on the forwarding port")
		}
	})

	t.Run("a sibling that goes down loses nothing", func(t *testing.T) {
		const n = 3000
		setWeights(nodes, 100, 100, 30)
		beforeTotal := total()
		stopped := make(chan struct{})
		go func() {
			// Stop node 2 without waiting for its app, once forwarding is
			// under way. This goroutine only polls; the test goroutine
			// publishes and asserts.
			defer close(stopped)
			for deadline := time.Now().Add(sidecartest.Scaled(30 * time.Second)); total() <= beforeTotal+n/4 && time.Now().Before(deadline); {
				time.Sleep(2 * time.Millisecond)
			}
			nodes[1].stop(0)
			// The control plane would now drop node 2 from the others' lists.
			ins := []scheduler.Instance{{ID: nodes[0].fwdAddr, Weight: 100}, {ID: nodes[2].fwdAddr, Weight: 30}}
			nodes[0].sched.Update(ins)
			nodes[2].sched.Update(ins)
		}()
		sidecartest.PublishN(t, pub, topic, "k", n, 128)
		<-stopped
		sidecartest.WaitFor(t, 90*time.Second, "every message published during the stop", func() bool {
			u := union()
			for i := 0; i < n; i++ {
				if u.Times(fmt.Sprintf("k-%d", i)) == 0 {
					return false
				}
			}
			return true
		})
	})
}
