package msgmesh_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// TestFreezeAdoptHTTPMidRequest moves an HTTP API keep-alive connection to
// a successor sidecar while it is idle, while its client has sent half of
// a request head, and while the handler waits for the second half of a
// body. The successor answers the request from the bytes the predecessor
// read and the client's rest; the old process answered nothing of it, and
// the message is published once. The connection then serves one more
// request.
func TestFreezeAdoptHTTPMidRequest(t *testing.T) {
	body := "0123456789abcdef"
	head := func(id string) string {
		return fmt.Sprintf("POST /v1/publish/%s HTTP/1.1\r\nHost: localhost\r\nMsgmesh-App: orders\r\n"+
			"Content-Type: application/octet-stream\r\nContent-Length: %d\r\nX-Test: %s\r\n\r\n", topic, len(body)+len(id), id)
	}
	for _, tc := range []struct {
		name   string
		cut    func(req string) int // bytes sent before the handoff
		inBody bool                 // the handler waits for its body then
	}{
		{"idle", func(string) int { return 0 }, false},
		{"mid head", func(req string) int { return strings.Index(req, "Msgmesh-App") + 4 }, false},
		{"mid body", func(req string) int { return len(req) - len(body)/2 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := sidecartest.NATSCluster(t)
			dataDir := t.TempDir()
			sc := startOn(t, c, dataDir, nil)
			if status, b := sidecartest.Register(t, sc.HTTPAddr().String(), "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != 201 {
				t.Fatalf("register: %d %s", status, b)
			}
			http.DefaultClient.CloseIdleConnections() // the test's connection is the only one
			conn, err := net.Dial("tcp", sc.HTTPAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(sidecartest.Scaled(60 * time.Second)))
			br := bufio.NewReader(conn)
			roundTrip := func(id string) {
				t.Helper()
				if _, err := io.WriteString(conn, head(id)+body+id); err != nil {
					t.Fatal(err)
				}
				readAnswer(t, br, id)
			}
			roundTrip("first") // the connection is a kept-alive one

			req := head("moved") + body + "moved"
			cut := tc.cut(req)
			if _, err := io.WriteString(conn, req[:cut]); err != nil {
				t.Fatal(err)
			}
			sidecartest.WaitFor(t, 10*time.Second, "the partial request to be read", func() bool {
				read, inBody := sc.HTTPConnsRead()
				return len(read) == 1 && read[0] == cut && (!tc.inBody || inBody[0])
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			st, err := sc.Handoff(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if len(st.HTTPConns) != 1 || string(st.HTTPConns[0].Buffered) != req[:cut] {
				t.Fatalf("handoff carried %d HTTP connections (%+v), want 1 carrying %q", len(st.HTTPConns), st.HTTPConns, req[:cut])
			}
			// Nothing was answered to the partial request.
			_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, err := br.Peek(1); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the old process answered the partial request: %q, %v", n, err)
			}
			_ = conn.SetDeadline(time.Now().Add(sidecartest.Scaled(60 * time.Second)))

			sc = startOn(t, c, dataDir, st)
			if _, err := io.WriteString(conn, req[cut:]); err != nil {
				t.Fatal(err)
			}
			readAnswer(t, br, "moved")
			roundTrip("after")

			got := make(chan string, 16)
			sub := sidecartest.Dial(t, sc.Addr().String())
			if _, err := sub.Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
				got <- string(d.Body)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			var bodies []string
			for len(bodies) < 3 {
				select {
				case b := <-got:
					bodies = append(bodies, b)
				case <-time.After(sidecartest.Scaled(30 * time.Second)):
					t.Fatalf("consumed %q, want the 3 published", bodies)
				}
			}
			select {
			case b := <-got:
				t.Fatalf("consumed %q after %q: published twice", b, bodies)
			case <-time.After(200 * time.Millisecond):
			}
			slices.Sort(bodies)
			if want := []string{body + "after", body + "first", body + "moved"}; !slices.Equal(bodies, want) {
				t.Fatalf("consumed %q, want %q", bodies, want)
			}
		})
	}
}

// readAnswer reads one answer from br and fails t unless it is a 2xx to
// a keep-alive request.
func readAnswer(t *testing.T, br *bufio.Reader, id string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("request %s: %v", id, err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 || resp.Close {
		t.Fatalf("request %s: %d (close %v) %s", id, resp.StatusCode, resp.Close, b)
	}
}
