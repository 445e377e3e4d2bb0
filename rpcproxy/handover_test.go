package rpcproxy

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// TestFreezeAdoptMidRequest: a caller's connection moves from a frozen
// proxy to a new one that adopts it, at a request boundary or in the middle
// of a request: the first call is answered by the old proxy, the second,
// whose first half the old proxy had read, by the new one, on the same
// connection. The callers never notice the move.
func TestFreezeAdoptMidRequest(t *testing.T) {
	app := map[string]string{"mesh": startMeshEcho(t).Addr(), "http1": startHTTPEcho(t).Addr()}
	_, ingress := sidecarPair(t, app)
	cfg := Config{
		Egress:   EgressConfig{Listen: "127.0.0.1:0"},
		Ingress:  IngressConfig{Listen: Off},
		Clusters: []ClusterConfig{{Name: "echo", Hosts: []HostConfig{{Address: ingress.IngressAddr().String()}}}},
		Routes:   []RouteConfig{{Service: "echo", Cluster: "echo"}, {Protocol: "http1", Cluster: "echo"}},
	}
	meshCall := func(id uint64, body string) []byte {
		b, err := mesh.AppendFrame(nil, 0, mesh.KindRequest, 0, id, &mesh.Request{Service: "echo", Method: "m", Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	meshAnswer := func(t *testing.T, rd *bufio.Reader, id uint64, body string) {
		f, err := mesh.NewReader(rd, 0).ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		var resp mesh.Response
		if f.Kind != mesh.KindResponse || f.ID != id || resp.Decode(f.Payload) != nil || string(resp.Body) != body {
			t.Fatalf("answer %s id %d %q, want RESPONSE id %d %q", f.Kind, f.ID, resp.Body, id, body)
		}
	}
	httpCall := func(body string) []byte {
		return []byte("POST /x HTTP/1.1\r\nHost: echo.local\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	}
	httpAnswer := func(t *testing.T, rd *bufio.Reader, body string) {
		resp, err := http.ReadResponse(rd, nil)
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		defer resp.Body.Close()
		got := make([]byte, len(body))
		if _, err := resp.Body.Read(got); resp.StatusCode != http.StatusOK || string(got) != body {
			t.Fatalf("answer %d %q (%v), want 200 %q", resp.StatusCode, got, err, body)
		}
	}
	for _, tc := range []struct {
		name   string
		first  []byte
		second []byte
		cut    int // bytes of second sent before the freeze
		answer func(t *testing.T, rd *bufio.Reader, first bool)
	}{
		{"mesh at a boundary", meshCall(1, "one"), meshCall(2, "two"), 0, func(t *testing.T, rd *bufio.Reader, first bool) {
			if first {
				meshAnswer(t, rd, 1, "one")
			} else {
				meshAnswer(t, rd, 2, "two")
			}
		}},
		{"mesh mid-frame", meshCall(1, "one"), meshCall(2, "two"), 9, func(t *testing.T, rd *bufio.Reader, first bool) {
			if first {
				meshAnswer(t, rd, 1, "one")
			} else {
				meshAnswer(t, rd, 2, "two")
			}
		}},
		{"http mid-head", httpCall("one"), httpCall("two"), 20, func(t *testing.T, rd *bufio.Reader, first bool) {
			if first {
				httpAnswer(t, rd, "one")
			} else {
				httpAnswer(t, rd, "two")
			}
		}},
		{"http mid-body", httpCall("one"), httpCall("second"), len(httpCall("second")) - 3, func(t *testing.T, rd *bufio.Reader, first bool) {
			if first {
				httpAnswer(t, rd, "one")
			} else {
				httpAnswer(t, rd, "second")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, err := New(cfg, testLog())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := old.Start(ctx); err != nil {
				t.Fatal(err)
			}
			conn, err := net.Dial("tcp", old.EgressAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			rd := bufio.NewReader(conn)
			if _, err := conn.Write(tc.first); err != nil {
				t.Fatal(err)
			}
			tc.answer(t, rd, true)
			if _, err := conn.Write(tc.second[:tc.cut]); err != nil {
				t.Fatal(err)
			}
			// The old proxy has read the cut bytes before it freezes.
			waitFor(t, 5*time.Second, "the proxy to read the first part", func() bool { return old.bytesRead() >= len(tc.first)+tc.cut })
			h, err := old.Freeze(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(h.Conns) != 1 || string(h.Conns[0].Buffered) != string(tc.second[:tc.cut]) {
				t.Fatalf("frozen connections %+v, want one with %q unread", h.Conns, tc.second[:tc.cut])
			}
			next, err := New(cfg, testLog())
			if err != nil {
				t.Fatal(err)
			}
			next.Adopt(h)
			if err := next.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = next.Shutdown(context.Background()) })
			if next.EgressAddr().String() != old.EgressAddr().String() {
				t.Fatalf("the new proxy listens on %s, not the inherited %s", next.EgressAddr(), old.EgressAddr())
			}
			if _, err := conn.Write(tc.second[tc.cut:]); err != nil {
				t.Fatal(err)
			}
			tc.answer(t, rd, false)
		})
	}
}

// bytesRead is how many bytes the proxy has read from its callers'
// connections that are open now.
func (p *Proxy) bytesRead() int {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	n := 0
	for _, tap := range p.conns {
		n += int(tap.read.Load())
	}
	return n
}
