// Package etcdtest runs a real single-member etcd server
// (go.etcd.io/etcd/server/v3/embed, the code of the etcd binary) inside a
// test process, on 127.0.0.1 with a random client port and its data in a
// temporary directory. Only tests import it, so the etcd server is linked
// into test binaries and never into ctrlplane.
package etcdtest

import (
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startTimeout bounds how long Start waits for the server to be ready.
const startTimeout = 30 * time.Second

// Server is a running etcd server.
type Server struct {
	etcd *embed.Etcd
}

// Start starts an etcd server and stops it when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = tb.TempDir()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	client, _ := url.Parse("http://127.0.0.1:0")
	peer, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		tb.Fatalf("etcdtest: start: %v", err)
	}
	tb.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		tb.Fatalf("etcdtest: %v", err)
	case <-time.After(startTimeout):
		tb.Fatalf("etcdtest: not ready after %s", startTimeout)
	}
	return &Server{etcd: e}
}

// Endpoint is host:port of the client listener.
func (s *Server) Endpoint() string { return s.etcd.Clients[0].Addr().String() }

// Spec is the ctrlplane --store value for this server with the given key
// prefix ("" for the default).
func (s *Server) Spec(prefix string) string {
	if prefix == "" {
		return "etcd://" + s.Endpoint()
	}
	return "etcd://" + s.Endpoint() + "/" + prefix
}
