package core

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/internal/slowclient"
)

// refuseWith is a ConnLimit.Refuse that writes msg.
func refuseWith(msg string) func(net.Conn) {
	return func(c net.Conn) { _, _ = io.WriteString(c, msg) }
}

// readAll reads c until it ends and returns what came.
func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open; read %q", b)
	}
	return string(b)
}

func TestServerConnLimitRefusesPastMax(t *testing.T) {
	var started, returned atomic.Int32
	ts := startServer(t, echo(&started, &returned), ConnLimit{Max: 2, Refuse: refuseWith("full\n")})
	c1, c2 := dial(t, ts.addr), dial(t, ts.addr)
	roundTrip(t, c1, "one")
	roundTrip(t, c2, "two")

	// The third is told why and closed; the first two go on.
	c3 := dial(t, ts.addr)
	if got := readAll(t, c3); got != "full\n" {
		t.Fatalf("refused connection read %q, want the refusal and EOF", got)
	}
	roundTrip(t, c1, "one again")
	roundTrip(t, c2, "two again")
	if ts.Conns() != 2 || ts.Refused() != 1 || started.Load() != 2 {
		t.Fatalf("conns %d, refused %d, handlers %d; want 2, 1, 2", ts.Conns(), ts.Refused(), started.Load())
	}

	// A slot freed is a slot for the next connection.
	_ = c1.Close()
	waitFor(t, 5*time.Second, "the closed connection to leave its slot", func() bool { return ts.Conns() == 1 })
	c4 := dial(t, ts.addr)
	roundTrip(t, c4, "four")
}

func TestServerConnLimitBoundsRefusers(t *testing.T) {
	var started, returned atomic.Int32
	// Refuse holds its connection until the peer or the server ends it,
	// as a refusal that waits for a request would.
	hold := func(c net.Conn) {
		_, _ = io.WriteString(c, "full\n")
		_, _ = io.Copy(io.Discard, c)
	}
	ts := startServer(t, echo(&started, &returned), ConnLimit{Max: 1, Refuse: hold, MaxRefusing: 1, RefuseTimeout: time.Minute})
	roundTrip(t, dial(t, ts.addr), "served")

	held := dial(t, ts.addr)
	if line, err := bufio.NewReader(held).ReadString('\n'); err != nil || line != "full\n" {
		t.Fatalf("first refused connection: %q, %v", line, err)
	}
	// Every Refuse slot is busy: the next one is closed without a word.
	if got := readAll(t, dial(t, ts.addr)); got != "" {
		t.Fatalf("connection past MaxRefusing read %q, want a bare close", got)
	}
	if ts.Refused() != 2 {
		t.Fatalf("refused %d, want 2", ts.Refused())
	}
	// Shutdown (in cleanup) ends the held refusal at once, not after its
	// minute: the cleanup fails if it takes over 10 s.
}

func TestServerGoCountsAgainstLimit(t *testing.T) {
	var started, returned atomic.Int32
	ts := startServer(t, echo(&started, &returned), ConnLimit{Max: 1})
	adopted := make(chan struct{})
	if !ts.Go(func(ctx context.Context) { close(adopted); <-ctx.Done() }) {
		t.Fatal("Go refused before Shutdown")
	}
	<-adopted
	if ts.Conns() != 1 {
		t.Fatalf("conns %d with one adopted, want 1", ts.Conns())
	}
	if got := readAll(t, dial(t, ts.addr)); got != "" || started.Load() != 0 {
		t.Fatalf("a connection past the limit was served (read %q, %d handlers)", got, started.Load())
	}
}

// startHTTP serves h under lim on a loopback listener until the test ends.
func startHTTP(t *testing.T, lim HTTPLimits, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := lim.Server(h)
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(lim.Listener(ln)) }()
	t.Cleanup(func() { _ = hs.Close(); <-done })
	return ln.Addr().String()
}

// readBody is a handler that reads the whole body before answering.
var readBody = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if _, err := io.ReadAll(r.Body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
})

func TestHTTPLimitsCloseSlowAndIdleClients(t *testing.T) {
	lim := HTTPLimits{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 600 * time.Millisecond,
		WriteTimeout: 2 * time.Second, IdleTimeout: 300 * time.Millisecond, MaxHeaderBytes: 4096}
	addr := startHTTP(t, lim, readBody)
	// The bound is far above the limits: a bound, not a timing check.
	slowclient.Check(t, slowclient.Probes(addr, "/", "/", 100*time.Millisecond, 15*time.Second))
	t.Run("large headers", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		req.Header.Set("X-Big", strings.Repeat("x", 16<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("HTTP %d for 16 KiB of headers, want 431", resp.StatusCode)
		}
	})
}

func TestHTTPLimitsMaxConns(t *testing.T) {
	release := make(chan struct{})
	var entered atomic.Int32
	addr := startHTTP(t, HTTPLimits{MaxConns: 1}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if entered.Add(1) == 1 {
			<-release
		}
		w.Header().Set("Connection", "close")
	}))
	first := make(chan error, 1)
	go func() { first <- get(addr) }()
	waitFor(t, 5*time.Second, "the first request to be served", func() bool { return entered.Load() == 1 })
	second := make(chan error, 1)
	go func() { second <- get(addr) }()
	// The second connection waits in the listen queue while the first
	// holds the only slot.
	select {
	case err := <-second:
		t.Fatalf("second request answered while the first held the only connection: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if n := entered.Load(); n != 1 {
		t.Fatalf("%d handlers entered with MaxConns 1", n)
	}
	close(release)
	for _, ch := range []chan error{first, second} {
		if err := recvWithin(t, ch, 10*time.Second, "a request to finish"); err != nil {
			t.Fatal(err)
		}
	}
}

func get(addr string) error {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return err
	}
	return resp.Body.Close()
}
