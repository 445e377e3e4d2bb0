package forward

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestServerMaxConns: past ServerConfig.MaxConns the forwarding listener
// closes a new connection before its TLS handshake, so strangers from
// other hosts cannot hold more than that many; a freed slot serves a
// sibling again.
func TestServerMaxConns(t *testing.T) {
	p := newPKI(t)
	app := newApp()
	s, err := NewServer(ServerConfig{Listen: "127.0.0.1:0", TLS: p.serverTLS(t, "orders"), App: "orders", Deliverer: app,
		Logger: testLogger(), MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	addr := s.Addr().String()

	// A stranger holds the only slot (until the handshake timeout).
	stranger, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	waitFor(t, 10*time.Second, "the stranger to take the slot", func() bool { return s.core.Conns() == 1 })
	over, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	_ = over.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
	if _, err := over.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection past the limit: read %v, want EOF before any handshake", err)
	}

	_ = stranger.Close()
	f := newForwarder(t, p)
	waitFor(t, 10*time.Second, "a sibling to forward through the freed slot", func() bool {
		return f.Forward(ctxTimeout(t, 2*time.Second), addr, "g", "t", newDelivery(1, nil)) == nil
	})
	tk := recvWithin(t, app.got, 5*time.Second, "the delivery")
	_ = tk.d.Ack(context.Background())
}
