package core

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// logBuffer collects a logger's text lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.b.String()), "\n")
}

// summed adds up attr over the lines whose msg is msg.
func (l *logBuffer) summed(msg, attr string) int {
	re := regexp.MustCompile(`\b` + attr + `=(\d+)`)
	n := 0
	for _, line := range l.lines() {
		if !strings.Contains(line, "msg="+msg+" ") && !strings.Contains(line, `msg="`+msg+`"`) {
			continue
		}
		if m := re.FindStringSubmatch(line); m != nil {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
	}
	return n
}

// serveLogged runs a Server with an info-level logger into a buffer; the
// returned stop shuts it down and waits for Serve.
func serveLogged(t *testing.T, h ConnHandler, lim ConnLimit) (addr string, logs *logBuffer, srv *Server, stop func()) {
	t.Helper()
	logs = &logBuffer{}
	srv = NewServer(h, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	srv.LimitConns(lim)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if err := recvWithin(t, served, 10*time.Second, "Serve to return"); err != nil {
				t.Errorf("Serve = %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), logs, srv, stop
}

// TestServerSummaryFlood: a flood of connections, served and refused,
// logs a bounded number of lines at info: the summaries (here only the
// last one, when the Server stops) count every connection.
func TestServerSummaryFlood(t *testing.T) {
	const n = 600
	var started, returned atomic.Int32
	addr, logs, _, stop := serveLogged(t, echo(&started, &returned), ConnLimit{Max: 8, SummaryEvery: time.Hour})
	var wg sync.WaitGroup
	var refused atomic.Int32
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Error(err)
					return
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if echoOnce(c, "x") != nil {
					refused.Add(1) // over the limit: closed at once
				}
				_ = c.Close()
			}
		}()
	}
	wg.Wait()
	waitFor(t, 10*time.Second, "every handler to return", func() bool { return returned.Load() == started.Load() })
	stop()
	lines := logs.lines()
	if len(lines) > 4 {
		t.Fatalf("%d connections logged %d lines at info, want a handful:\n%s", n, len(lines), strings.Join(lines, "\n"))
	}
	served := int(started.Load())
	opened, closed, gotRefused := logs.summed("connections", "opened")+logs.summed("connections refused over the limit", "opened"),
		logs.summed("connections", "closed")+logs.summed("connections refused over the limit", "closed"),
		logs.summed("connections refused over the limit", "refused")
	if opened != served || closed != served || gotRefused != n-served || int(refused.Load()) != n-served {
		t.Fatalf("summaries say opened %d, closed %d, refused %d; served %d of %d (%d refused at the client):\n%s",
			opened, closed, gotRefused, served, n, refused.Load(), strings.Join(lines, "\n"))
	}
	t.Logf("%d connections (%d refused), %d lines at info:\n%s", n, n-served, len(lines), strings.Join(lines, "\n"))
}

// TestServerSummaryEvery: while the Server runs, a summary comes every
// SummaryEvery with what happened since the last one, and none when
// nothing did.
func TestServerSummaryEvery(t *testing.T) {
	var started, returned atomic.Int32
	addr, logs, srv, _ := serveLogged(t, echo(&started, &returned), ConnLimit{SummaryEvery: 20 * time.Millisecond})
	for range 5 {
		c := dial(t, addr)
		if err := echoOnce(c, "x"); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
	waitFor(t, 10*time.Second, "a summary of the five connections", func() bool {
		return logs.summed("connections", "opened") == 5 && logs.summed("connections", "closed") == 5
	})
	c := dial(t, addr)
	if err := echoOnce(c, "x"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a summary of the sixth, still open", func() bool {
		return logs.summed("connections", "opened") == 6 && strings.Contains(logs.lines()[len(logs.lines())-1], "current=1")
	})
	// A report with nothing new since the last one logs nothing.
	m := &summary{s: srv, addr: addr}
	m.report()
	before := len(logs.lines())
	m.report()
	if got := len(logs.lines()); got != before {
		t.Fatalf("a report with nothing new logged %d lines:\n%s", got-before, strings.Join(logs.lines(), "\n"))
	}
}
