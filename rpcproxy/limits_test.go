package rpcproxy

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// TestMaxConns: past Config.MaxConns a listener closes a new connection
// at once; the one it serves goes on, and a freed slot serves the next.
func TestMaxConns(t *testing.T) {
	egress := startProxy(t, Config{Ingress: IngressConfig{Listen: Off}, MaxConns: 1})
	addr := egress.EgressAddr().String()
	dialOK := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	// heartbeat reports whether the proxy answered a mesh HEARTBEAT on c
	// (the codec answers it itself) or closed c.
	heartbeat := func(c net.Conn) bool {
		t.Helper()
		b, _ := mesh.AppendFrame(nil, 0, mesh.KindHeartbeat, 0, 1, nil)
		if _, err := c.Write(b); err != nil {
			return false
		}
		f, err := mesh.NewReader(c, 0).ReadFrame()
		return err == nil && f.Kind == mesh.KindHeartbeat
	}

	first := dialOK()
	if !heartbeat(first) {
		t.Fatal("the first connection was not served")
	}
	second := dialOK()
	if _, err := second.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("second connection: read %v, want EOF (closed at once)", err)
	}
	if !heartbeat(first) {
		t.Fatal("the first connection stopped being served")
	}
	_ = first.Close()
	waitFor(t, 10*time.Second, "a freed slot to serve a new connection", func() bool { return heartbeat(dialOK()) })
}
