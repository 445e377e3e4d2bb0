//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestS5HotUpgrade: while orders1 and orders2 publish and all three orders
// pods consume, orders1's sidecar is upgraded to the image tagged v2: a new
// container, in the pod's network namespace and on the same data volume,
// runs msgmesh with the same flags and --upgrade; the old process hands its
// listeners and app connections over and exits 0. The app never
// reconnects, no publish fails, and every acked message is consumed
// exactly once. Before that, the same container without --upgrade refuses
// to start, naming the running sidecar, and changes nothing. The orders
// apps are slow on this topic (30 ms per message, DEMO_TOPIC_DELAY), and
// a burst just before the upgrade leaves them with many deliveries in
// flight: those move with the connection (the old sidecar does not wait
// for them), and they too are consumed exactly once.
// heldRe reads how many held deliveries the old sidecar's "handed off"
// log line counts.
var heldRe = regexp.MustCompile(`handed off.*held_deliveries[=":]+(\d+)`)

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
	// The new sidecar beside the old one: same namespace, same volume.
	sidecar := func(name string, extra ...string) (string, []string) {
		args := []string{"run", "-d", "--name", name, "--label", extraLabel + "=upgrade",
			"--network", "container:" + p1.appCID, "--volumes-from", old}
		for _, e := range cfg.Env {
			args = append(args, "-e", e)
		}
		cmd := append(slices.Clone(cfg.Cmd), extra...)
		out, err := run(time.Minute, "docker", append(append(args, imageSidecar2), cmd...)...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out), cmd
	}

	// Without --upgrade it must not take over: it exits non-zero and names
	// the running sidecar; the old one serves on.
	dup, _ := sidecar(project + "-orders1-mesh-dup")
	if err := poll(60*time.Second, func() (bool, string) {
		running, st := containerRunning(dup)
		return !running, "second sidecar " + st
	}); err != nil {
		t.Fatalf("a second sidecar without --upgrade kept running: %v", err)
	}
	dupLogs, _ := run(time.Minute, "docker", "logs", dup)
	if code, _ := inspect(dup, "{{.State.ExitCode}}"); code == "0" || !strings.Contains(dupLogs, "data directory in use by a running msgmesh: pid ") || !strings.Contains(dupLogs, "--upgrade") {
		t.Fatalf("a second sidecar without --upgrade exited %s; want non-zero and an error naming the running one:\n%s", code, tail(dupLogs, 10))
	}
	t.Logf("without --upgrade: %s", strings.TrimSpace(tail(dupLogs, 1)))
	if running, st := containerRunning(old); !running {
		t.Fatalf("the old sidecar stopped after a refused second one: %s", st)
	}
	waitMore(t, 30*time.Second, "traffic through the old sidecar after the refusal", 60, jobs[0])

	// The backlog: a burst the slow apps need seconds to work through.
	const burstN = 3000
	burst := p1.startJob(t, jobSpec{Topic: topicUpgrade, Prefix: "s5b-" + p1.name, Count: burstN, Workers: 8, Size: 128})
	t.Cleanup(func() { _ = call("POST", fmt.Sprintf("%s/v1/jobs/%d/stop", p1.demoURL, burst.id), "", nil, nil) })
	if err := poll(60*time.Second, func() (bool, string) {
		st := burst.status(t)
		return st.Done, fmt.Sprintf("burst %d of %d acked", st.Acked, burstN)
	}); err != nil {
		t.Fatal(err)
	}

	name := project + "-orders1-mesh-v2"
	start := time.Now()
	cid, cmd := sidecar(name, "--upgrade")
	p1.meshCID = cid
	t.Logf("started %s (%s) with %s", name, imageSidecar2, strings.Join(cmd, " "))

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
	oldLogs, _ := run(time.Minute, "docker", "logs", old)
	held := heldRe.FindStringSubmatch(oldLogs)
	if held == nil {
		t.Fatalf("the old sidecar's log has no \"handed off\" line:\n%s", tail(oldLogs, 30))
	}
	t.Logf("old sidecar handed over and exited 0, %s after the new one started; %s deliveries its app held moved", handover.Round(time.Millisecond), held[1])
	if held[1] == "0" {
		t.Errorf("no held delivery moved: the app was not behind at the upgrade, or the old sidecar waited for it")
	}
	if ok, st := httpOK(p1.sidecarURL + "/healthz"); !ok {
		t.Fatalf("orders1's sidecar after the upgrade: %s", st)
	}
	waitMore(t, 30*time.Second, "traffic through the new sidecar", 100, jobs[0])

	sts := stopTraffic(t, append(jobs, burst))
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
	g := waitConsumed(t, 90*time.Second, 3*time.Second, orders, groupOrders, topicUpgrade, "s5-", idsOf(sts[:len(jobs)]...))
	exactlyOnce(t, "across the hot upgrade", g)
	g = waitConsumed(t, 90*time.Second, 3*time.Second, orders, groupOrders, topicUpgrade, "s5b-", idsOf(sts[len(jobs):]...))
	exactlyOnce(t, "the burst, held by the slow apps across the hot upgrade", g)
}
