package upgrade_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// httpMovedRe reads how many HTTP API connections a handoff moved.
var httpMovedRe = regexp.MustCompile(`"handed off".* http_connections=(\d+) http_mid_request=(\d+)`)

// httpPublisher publishes over the HTTP API from one net/http client with
// keep-alive, one request at a time, counting its dials and checking that
// every request after the first reuses the first connection.
type httpPublisher struct {
	id     int
	pause  time.Duration // between the two halves of each body: a slow client
	hc     *http.Client
	dials  atomic.Int32
	local  string // the connection's local address, from its first request
	failed []string
	reused int           // requests sent on the first connection again
	slow   time.Duration // the longest request
}

func newHTTPPublisher(id int) *httpPublisher {
	p := &httpPublisher{id: id}
	var d net.Dialer
	p.hc = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			p.dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 1,
	}}
	return p
}

// publish sends body to topic and says whether it was acknowledged.
func (p *httpPublisher) publish(httpAddr, body string) bool {
	var local string
	var reused bool
	trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
		local, reused = ci.Conn.LocalAddr().String(), ci.Reused
	}}
	ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(context.Background(), trace), 30*time.Second)
	defer cancel()
	var r io.Reader = bytes.NewReader([]byte(body))
	if p.pause > 0 {
		half := len(body) / 2
		r = io.MultiReader(strings.NewReader(body[:half]), pauseReader(p.pause), strings.NewReader(body[half:]))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+httpAddr+"/v1/publish/"+topic, r)
	if err != nil {
		p.failed = append(p.failed, err.Error())
		return false
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Msgmesh-App", "orders")
	start := time.Now()
	resp, err := p.hc.Do(req)
	p.slow = max(p.slow, time.Since(start))
	if err != nil {
		p.failed = append(p.failed, err.Error())
		return false
	}
	answer, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	switch {
	case p.local == "":
		p.local = local
	case local != p.local || !reused:
		p.failed = append(p.failed, fmt.Sprintf("request %s on connection %s (reused %v), not on the first one, %s", body, local, reused, p.local))
		p.local = local // report each change once
	default:
		p.reused++
	}
	if resp.StatusCode/100 != 2 {
		p.failed = append(p.failed, fmt.Sprintf("request %s: %d %s", body, resp.StatusCode, answer))
		return false
	}
	return true
}

// pauseReader reads nothing, after a pause: a client sending a body in
// two parts.
type pauseReader time.Duration

func (d pauseReader) Read([]byte) (int, error) {
	time.Sleep(time.Duration(d)) // the client's own pace
	return 0, io.EOF
}

// TestHTTPKeepAliveMovesAcrossUpgrades: net/http clients with keep-alive
// publish over the HTTP API without pause while the sidecar binary is
// upgraded three times and then reloaded twice (msgmesh reload, the same
// freeze/adopt path in one process), on NATS. Their connections move to
// each successor (the old process answers what it read and hands each
// connection over between two requests, or in the middle of one): no
// request fails, no client dials again, every request goes out on its
// first connection (same local port, reused), and every acknowledged
// message is consumed once by a mesh subscriber, whose connection moves
// too. One client sends each body in two parts 20 ms apart, so that its
// connection is often taken in the middle of a request.
func TestHTTPKeepAliveMovesAcrossUpgrades(t *testing.T) {
	const clients = 5
	kits := sidecartest.BrokerKits()
	kit := &kits[slices.IndexFunc(kits, func(k sidecartest.BrokerKit) bool { return k.Name == "nats" })]
	bin, args, meshAddr, httpAddr := sidecartest.UpgradeSetup(t, kit) // --config: a file to reload
	dataDir := args[slices.Index(args, "--data-dir")+1]
	old := sidecartest.StartProc(t, bin, args...)
	sidecartest.WaitHealthy(t, old, httpAddr)
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	led := sidecartest.NewLedger()
	var subDial sidecartest.CountingDialer
	sub := sidecartest.Dial(t, meshAddr, client.WithDialer(subDial.Dial))
	sidecartest.Subscribe(t, sub, "g1", topic, "sub", led.Consumed)

	var (
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		sent    atomic.Int64
		pubs    = make([]*httpPublisher, clients)
		started = time.Now()
	)
	for i := range pubs {
		pubs[i] = newHTTPPublisher(i)
		if i == 0 {
			pubs[i].pause = 20 * time.Millisecond
		}
		wg.Add(1)
		go func(p *httpPublisher) {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf("h%d-%d", p.id, n)
				sent.Add(1)
				if p.publish(httpAddr, body) {
					led.Ack(body)
				}
			}
		}(pubs[i])
	}
	ackedNow := led.AckedCount
	for round := 0; round < 3; round++ {
		before := ackedNow()
		sidecartest.WaitFor(t, waitLong, "HTTP publishes to flow", func() bool { return ackedNow() > before+200 })
		var gone time.Duration
		prev := old
		old, gone = sidecartest.UpgradeFrom(t, bin, args, old, httpAddr)
		moved := httpMovedRe.FindStringSubmatch(prev.Output())
		if moved == nil {
			t.Fatalf("upgrade %d: the old process did not log its handoff:\n%s", round, prev.Output())
		}
		// The health checks' connections may move too, if still open.
		if n, _ := strconv.Atoi(moved[1]); n < clients {
			t.Errorf("upgrade %d moved %d HTTP connections, want at least the %d clients'", round, n, clients)
		}
		t.Logf("upgrade %d: old process gone %s after the new one started; %s HTTP connections moved, %s in the middle of a request; %d publishes acknowledged so far",
			round, gone.Round(time.Millisecond), moved[1], moved[2], ackedNow())
	}
	for round := 0; round < 2; round++ {
		before := ackedNow()
		sidecartest.WaitFor(t, waitLong, "HTTP publishes to flow", func() bool { return ackedNow() > before+200 })
		start := time.Now()
		if out, err := exec.Command(bin, "reload", "--data-dir", dataDir).CombinedOutput(); err != nil {
			t.Fatalf("reload %d: %v\n%s", round, err, out)
		}
		took := time.Since(start)
		all := httpMovedRe.FindAllStringSubmatch(old.Output(), -1)
		if len(all) != round+1 {
			t.Fatalf("reload %d: the sidecar logged %d handoffs, want %d:\n%s", round, len(all), round+1, old.Output())
		}
		moved := all[round]
		if n, _ := strconv.Atoi(moved[1]); n < clients {
			t.Errorf("reload %d moved %d HTTP connections, want at least the %d clients'", round, n, clients)
		}
		t.Logf("reload %d: took %s; %s HTTP connections moved, %s in the middle of a request; %d publishes acknowledged so far",
			round, took.Round(time.Millisecond), moved[1], moved[2], ackedNow())
	}
	before := ackedNow()
	sidecartest.WaitFor(t, waitLong, "HTTP publishes to flow after the last reload", func() bool { return ackedNow() > before+100 })
	close(stop)
	wg.Wait()
	elapsed := time.Since(started)

	dials, reused, slow := 0, 0, time.Duration(0)
	for _, p := range pubs {
		dials += int(p.dials.Load())
		reused += p.reused
		slow = max(slow, p.slow)
		for _, f := range p.failed {
			t.Errorf("client %d: %s", p.id, f)
		}
	}
	if dials != clients {
		t.Errorf("the %d HTTP clients dialled %d connections, want one each", clients, dials)
	}
	if n := subDial.Count(); n != 1 {
		t.Errorf("the subscriber dialled %d connections, want 1", n)
	}
	led.WaitConsumed(t, waitLong)
	led.ConsumedOnce(t)
	t.Logf("%d HTTP publishes sent, %d acknowledged in %s, %d on a reused connection, the longest took %s; %d dials for %d clients; %d consumed",
		sent.Load(), led.AckedCount(), elapsed.Round(time.Millisecond), reused, slow.Round(time.Millisecond), dials, clients, led.Consumed.Count())
}
