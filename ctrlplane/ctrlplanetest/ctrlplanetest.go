// Package ctrlplanetest runs a real control plane (ctrlplane.Server over
// HTTP on 127.0.0.1, its state in a bbolt file in a temporary directory)
// for the tests of the packages that talk to one: meshctl, the sidecar.
// Only tests import it.
package ctrlplanetest

import (
	"net"
	"path/filepath"
	"testing"

	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
)

// Start serves a control plane with opts until the test ends and returns
// its base URL. A nil opts.Store is a fresh bbolt store in a temporary
// directory (closed after the server stops); opts.Token is required, as
// for ctrlplane.New.
func Start(tb testing.TB, opts ctrlplane.Options) string {
	tb.Helper()
	if opts.Store == nil {
		st, err := store.OpenBolt(filepath.Join(tb.TempDir(), store.BoltFile))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = st.Close() }) // runs after the server's cleanup below
		opts.Store = st
	}
	srv, err := ctrlplane.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	tb.Cleanup(func() { srv.Close(); <-done })
	return "http://" + ln.Addr().String()
}
