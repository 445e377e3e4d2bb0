package msgmesh_test

import (
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"context"
	"github.com/msgmesh/msgmesh/client"
)

// upgradeSetup builds the binary and returns the flags for one sidecar on
// the data dir: the embedded broker, or kit's broker through --config.
func upgradeSetup(t *testing.T, kit *brokerKit) (bin string, args []string, meshAddr, httpAddr string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	bin, err := buildSidecar()
	if err != nil {
		t.Fatal(err)
	}
	meshAddr, httpAddr = freePort(t), freePort(t)
	args = []string{"--data-dir", t.TempDir(), "--listen", meshAddr, "--http", httpAddr, "--log-level", "info", "--delivery-timeout", "5s"}
	if kit != nil {
		c := kit.start(t)
		cfg := clusterYAML(c)
		path := filepath.Join(t.TempDir(), "msgmesh.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", path)
	}
	return bin, args, meshAddr, httpAddr
}

// gapWatch records the longest stretch without a delivery: the pause window
// an upgrade causes.
type gapWatch struct {
	mu   sync.Mutex
	last time.Time
	max  time.Duration
}

func (g *gapWatch) tick() {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if !g.last.IsZero() && now.Sub(g.last) > g.max {
		g.max = now.Sub(g.last)
	}
	g.last = now
}

// TestHotUpgrade replaces the running msgmesh binary three times in a row
// by starting a new one on the same data directory, while apps publish and
// consume. No app connection breaks, every acknowledged publish is
// consumed, and none is delivered twice. It runs on the embedded broker and
// on each broker kit through --config.
func TestHotUpgrade(t *testing.T) {
	cases := []*brokerKit{nil}
	for i := range brokerKits {
		cases = append(cases, &brokerKits[i])
	}
	for _, kit := range cases {
		name := "embedded"
		if kit != nil {
			name = kit.name
		}
		t.Run(name, func(t *testing.T) { hotUpgrade(t, kit) })
	}
}

func hotUpgrade(t *testing.T, kit *brokerKit) {
	bin, args, meshAddr, httpAddr := upgradeSetup(t, kit)
	old := startProc(t, bin, args...)
	waitHealthy(t, old, httpAddr)
	if status, body := registerAt(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	tr := startTraffic(t, meshAddr, "g1")
	var gaps gapWatch
	sub := dialAt(t, meshAddr)
	if _, err := sub.Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		gaps.tick()
		tr.consumed.add("sub2", string(d.Body))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		before := tr.ackedCount()
		waitFor(t, 30*time.Second, "traffic to flow", func() bool { return tr.ackedCount() > before+300 })
		start := time.Now()
		next := startProc(t, bin, args...)
		select {
		case <-old.done:
		case <-time.After(scaled(90 * time.Second)):
			t.Fatalf("upgrade %d: the old process did not hand over and exit", round)
		}
		if code := old.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("upgrade %d: old process exited %d", round, code)
		}
		t.Logf("upgrade %d: old process gone %s after the new one started", round, time.Since(start).Round(time.Millisecond))
		waitHealthy(t, next, httpAddr)
		old = next
	}
	tr.finish(t)
	t.Logf("longest stretch without a delivery: %s", gaps.max.Round(time.Millisecond))
}

// TestHotUpgradeSuccessorDies: the new process is SIGKILLed right after it
// received the sockets, before adopting them; the old one resumes and
// nothing is lost, doubled, or disconnected.
func TestHotUpgradeSuccessorDies(t *testing.T) {
	bin, args, meshAddr, httpAddr := upgradeSetup(t, nil)
	old := startProc(t, bin, args...)
	waitHealthy(t, old, httpAddr)
	if status, body := registerAt(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	tr := startTraffic(t, meshAddr, "g1")
	waitFor(t, 30*time.Second, "traffic to flow", func() bool { return tr.ackedCount() > 300 })
	doomed := startProcEnv(t, []string{"MSGMESH_TEST_KILL_AFTER_RECEIVE=1"}, bin, args...)
	<-doomed.done
	select {
	case <-old.done:
		t.Fatalf("the old process exited after its successor died:\n%s", old.stderr.String())
	default:
	}
	before := tr.ackedCount()
	waitFor(t, 60*time.Second, "traffic to flow again through the old process", func() bool { return tr.ackedCount() > before+300 })
	tr.finish(t)
}
