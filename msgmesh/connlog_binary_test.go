package msgmesh_test

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// helloDeclare opens one mesh connection, says HELLO as app and declares
// (group, topic), then closes it.
func helloDeclare(addr, app, group, topic string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	rd := mesh.NewReader(c, 0)
	for id, req := range []struct {
		kind mesh.Kind
		p    mesh.Encoder
	}{
		{mesh.KindHello, &mesh.Hello{App: app, Client: "flood"}},
		{mesh.KindDeclare, &mesh.Declare{Subs: []mesh.Subscription{{Group: group, Topic: topic, Mode: mesh.ModePush}}}},
	} {
		b, err := mesh.AppendFrame(nil, 0, req.kind, 0, uint64(id+1), req.p)
		if err != nil {
			return err
		}
		if _, err := c.Write(b); err != nil {
			return err
		}
		f, err := rd.ReadFrame()
		if err != nil {
			return err
		}
		if f.Kind != mesh.KindOK {
			return fmt.Errorf("%s answered %s", req.kind, f.Kind)
		}
	}
	return nil
}

// sumAttr adds up attr=N over the log lines that contain every one of has.
func sumAttr(lines []string, attr string, has ...string) int {
	re := regexp.MustCompile(`\b` + attr + `=(\d+)`)
	n := 0
	for _, l := range lines {
		ok := true
		for _, h := range has {
			ok = ok && strings.Contains(l, h)
		}
		if m := re.FindStringSubmatch(l); ok && m != nil {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
	}
	return n
}

func countLines(lines []string, has string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, has) {
			n++
		}
	}
	return n
}

// TestBinaryConnLogs runs the msgmesh binary and floods its mesh listener
// with connections that each say HELLO, declare a group and close. At
// info level the flood adds a bounded number of lines (the connection
// summaries, every 10 s and at shutdown), and the summaries count every
// connection; at debug level each connection still shows: connected,
// hello, declared, disconnected.
func TestBinaryConnLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		level string
		n     int
	}{{"info", 2000}, {"debug", 300}} {
		t.Run(tc.level, func(t *testing.T) {
			meshAddr, httpAddr := freePort(t), freePort(t)
			p := sidecartest.StartProc(t, bin, "--data-dir", t.TempDir(), "--listen", meshAddr, "--http", httpAddr, "--log-level", tc.level)
			sidecartest.WaitHealthy(t, p, httpAddr)
			if status, body := sidecartest.Register(t, httpAddr, "flood", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
				t.Fatalf("register: %d %s", status, body)
			}
			before := len(strings.Split(p.Output(), "\n"))
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for w := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < tc.n; i += 16 {
						if err := helloDeclare(meshAddr, "flood", "g1", topic); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			elapsed := time.Since(start)
			if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case <-p.Done:
			case <-time.After(sidecartest.Scaled(60 * time.Second)):
				t.Fatal("the sidecar did not stop after SIGTERM")
			}
			all := strings.Split(strings.TrimSpace(p.Output()), "\n")
			lines := all[before-1:]
			listener := "listener=" + meshAddr
			opened, closed := sumAttr(lines, "opened", "msg=connections", listener), sumAttr(lines, "closed", "msg=connections", listener)
			if opened != tc.n || closed != tc.n {
				t.Errorf("the summaries count %d opened and %d closed, want %d each", opened, closed, tc.n)
			}
			switch tc.level {
			case "info":
				// The summaries (one per 10 s of flood, one at shutdown)
				// and the shutdown's own few lines.
				bound := 12 + int(elapsed/(10*time.Second))
				if len(lines) > bound {
					t.Fatalf("%d connections in %s logged %d lines at info, want at most %d:\n%s", tc.n, elapsed.Round(time.Millisecond), len(lines), bound, strings.Join(lines, "\n"))
				}
				t.Logf("%d connections in %s: %d lines at info from the flood to the exit:\n%s", tc.n, elapsed.Round(time.Millisecond), len(lines), strings.Join(lines, "\n"))
			case "debug":
				for _, msg := range []string{`msg="app connected"`, "msg=hello", "msg=declared", `msg="app disconnected"`} {
					if got := countLines(lines, msg); got != tc.n {
						t.Errorf("%d lines with %s at debug level, want one per connection (%d)", got, msg, tc.n)
					}
				}
			}
		})
	}
}
