//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"
)

// startTraffic starts a publish job in each pod, until stopped.
func startTraffic(t testing.TB, pods []*pod, topic, prefix string, rate float64) []*job {
	t.Helper()
	var jobs []*job
	for _, p := range pods {
		jobs = append(jobs, p.startJob(t, jobSpec{Topic: topic, Prefix: prefix + "-" + p.name, Rate: rate, Workers: 2, Size: 128}))
	}
	t.Cleanup(func() { // a failed scenario leaves no publisher running (stopping twice is harmless)
		for _, j := range jobs {
			_ = call("POST", fmt.Sprintf("%s/v1/jobs/%d/stop", j.p.demoURL, j.id), "", nil, nil)
		}
	})
	return jobs
}

// stopTraffic stops the jobs and returns their final statuses.
func stopTraffic(t testing.TB, jobs []*job) []jobStatus {
	t.Helper()
	var sts []jobStatus
	for _, j := range jobs {
		st := j.stop(t)
		t.Logf("%s published %d acked, %d failed attempts %v, %d abandoned", j.p.name, st.Acked, st.Failures, st.Codes, len(st.Abandoned))
		sts = append(sts, st)
	}
	return sts
}

// waitMore waits until the jobs acked at least n more messages.
func waitMore(t testing.TB, timeout time.Duration, what string, n int, jobs ...*job) {
	t.Helper()
	base := ackedSoFar(t, jobs...)
	if err := poll(timeout, func() (bool, string) {
		got := ackedSoFar(t, jobs...) - base
		return got >= n, fmt.Sprintf("%d of %d more acked", got, n)
	}); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestS3KillSidecar: while the three orders pods publish and consume, the
// sidecar container of orders2 is killed (docker kill: SIGKILL) and
// started again. Its app reconnects by itself; every message a producer
// saw acked is consumed (at least once) by group g1.
func TestS3KillSidecar(t *testing.T) {
	orders := sys.podsOf("orders")
	p2 := orders[1]
	jobs := startTraffic(t, orders, topicChaos, "s3", 40)
	waitMore(t, 30*time.Second, "traffic before the kill", 150, jobs...)
	conns := p2.state(t).Connections

	if _, err := run(time.Minute, "docker", "kill", p2.meshCID); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := poll(30*time.Second, func() (bool, string) {
		running, st := containerRunning(p2.meshCID)
		return !running, st
	}); err != nil {
		t.Fatal(err)
	}
	st, _ := inspect(p2.meshCID, "{{.State.ExitCode}}")
	t.Logf("orders2's sidecar killed (exit code %s)", st)
	time.Sleep(2 * time.Second) // traffic keeps flowing through orders1 and orders3
	if _, err := run(time.Minute, "docker", "start", p2.meshCID); err != nil {
		t.Fatal(err)
	}
	if err := poll(60*time.Second, func() (bool, string) {
		if ok, st := httpOK(p2.sidecarURL + "/healthz"); !ok {
			return false, "sidecar: " + st
		}
		s := p2.state(t)
		return s.Connections > conns && s.Ready, fmt.Sprintf("app connections %d (was %d)", s.Connections, conns)
	}); err != nil {
		t.Fatalf("orders2 after the restart: %v", err)
	}
	t.Logf("orders2's sidecar serves again and its app reconnected, %s after the kill", time.Since(killed).Round(time.Millisecond))
	waitMore(t, 30*time.Second, "traffic through the restarted sidecar", 50, jobs[1])

	sts := stopTraffic(t, jobs)
	g := waitConsumed(t, 120*time.Second, 0, orders, groupOrders, topicChaos, "s3-", idsOf(sts...))
	if len(g.Lost) > 0 {
		t.Fatalf("lost %d acked messages", len(g.Lost))
	}
	t.Logf("nothing acked was lost; %d messages were delivered more than once (at least once: redeliveries after the kill)", len(g.Dups))
}
