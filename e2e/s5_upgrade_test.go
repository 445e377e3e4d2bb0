//go:build e2e

package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestS5HotUpgrade: while orders1 and orders2 publish and all three orders
// pods consume, orders1's sidecar is upgraded to the image tagged v2: a new
// container, in the pod's network namespace and on the same data volume,
// runs msgmesh with the same flags; the old process hands its listeners and
// app connections over and exits 0. The app never reconnects, no publish
// fails, and every acked message is consumed exactly once.
func TestS5HotUpgrade(t *testing.T) {
	orders := sys.podsOf("orders")
	p1 := orders[0]
	jobs := startTraffic(t, orders[:2], topicUpgrade, "s5", 60)
	waitMore(t, 30*time.Second, "traffic before the upgrade", 150, jobs...)
	before := p1.state(t)

	old := p1.meshCID
	var cfg struct {
		Cmd        []string
		Env        []string
		Entrypoint []string
	}
	raw, err := inspect(old, "{{json .Config}}")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	name := project + "-orders1-mesh-v2"
	args := []string{"run", "-d", "--name", name, "--label", extraLabel + "=upgrade",
		"--network", "container:" + p1.appCID, "--volumes-from", old}
	for _, e := range cfg.Env {
		args = append(args, "-e", e)
	}
	args = append(args, imageSidecar2)
	args = append(args, cfg.Cmd...)
	start := time.Now()
	out, err := run(time.Minute, "docker", args...)
	if err != nil {
		t.Fatal(err)
	}
	p1.meshCID = strings.TrimSpace(out)
	t.Logf("started %s (%s) with %s", name, imageSidecar2, strings.Join(cfg.Cmd, " "))

	if err := poll(90*time.Second, func() (bool, string) {
		running, st := containerRunning(old)
		return !running, "old sidecar " + st
	}); err != nil {
		t.Fatalf("the old sidecar did not hand over and exit: %v", err)
	}
	handover := time.Since(start)
	if code, _ := inspect(old, "{{.State.ExitCode}}"); code != "0" {
		t.Fatalf("the old sidecar exited with %s, want 0", code)
	}
	if running, st := containerRunning(p1.meshCID); !running {
		t.Fatalf("the new sidecar is not running: %s", st)
	}
	logs, _ := run(time.Minute, "docker", "logs", p1.meshCID)
	if !strings.Contains(logs, "hot upgrade complete") {
		t.Errorf("the new sidecar's log does not say \"hot upgrade complete\":\n%s", tail(logs, 30))
	}
	t.Logf("old sidecar handed over and exited 0, %s after the new one started", handover.Round(time.Millisecond))
	if ok, st := httpOK(p1.sidecarURL + "/healthz"); !ok {
		t.Fatalf("orders1's sidecar after the upgrade: %s", st)
	}
	waitMore(t, 30*time.Second, "traffic through the new sidecar", 100, jobs[0])

	sts := stopTraffic(t, jobs)
	for _, st := range sts {
		if st.Failures != 0 {
			t.Errorf("a publish failed across the upgrade: %d failed attempts %v (%s)", st.Failures, st.Codes, st.LastError)
		}
	}
	after := p1.state(t)
	if after.Connections != before.Connections || !after.Ready {
		t.Errorf("orders1's app connected %d times (was %d before the upgrade): its connection dropped", after.Connections, before.Connections)
	} else {
		t.Logf("orders1's app kept its one connection to the sidecar (%d connections since it started)", after.Connections)
	}
	g := waitConsumed(t, 90*time.Second, 3*time.Second, orders, groupOrders, topicUpgrade, "s5-", idsOf(sts...))
	exactlyOnce(t, "across the hot upgrade", g)
}
