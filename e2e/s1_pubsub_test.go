//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestS1PublishConsume: on each broker, the three orders pods publish
// through their sidecars; group g1 (spread over the three orders pods) and
// group billing (the billing pod) each consume every acked message exactly
// once.
func TestS1PublishConsume(t *testing.T) {
	brokers := []struct{ name, topic, skip string }{
		{"nats", topicNATS, ""},
		{"kafka", topicKafka, ""},
		{"rocketmq", topicRMQ, ""},
	}
	if !sys.rocketmq {
		brokers[2].skip = "the msgmesh binary has no RocketMQ adapter (broker/brokers does not link rocketmqbroker), so the sidecars run without the rocketmq cluster"
	}
	const perPod = 200
	orders, billing := sys.podsOf("orders"), sys.podsOf("billing")
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			if b.skip != "" {
				t.Skip(b.skip)
			}
			t.Parallel()
			start := time.Now()
			var jobs []*job
			for _, p := range orders {
				jobs = append(jobs, p.startJob(t, jobSpec{Topic: b.topic, Prefix: fmt.Sprintf("s1-%s-%s", b.name, p.name), Count: perPod, Workers: 2, Size: 256}))
			}
			var sts []jobStatus
			for _, j := range jobs {
				st := j.wait(t, 90*time.Second)
				if st.Failures != 0 || st.Acked != perPod {
					t.Errorf("%s: %d acked of %d, %d failed attempts %v (%s)", j.p.name, st.Acked, perPod, st.Failures, st.Codes, st.LastError)
				}
				sts = append(sts, st)
			}
			acked := idsOf(sts...)
			t.Logf("%d messages acked by %s in %s", len(acked), b.name, time.Since(start).Round(time.Millisecond))
			prefix := "s1-" + b.name + "-"
			g1 := waitConsumed(t, 90*time.Second, 2*time.Second, orders, groupOrders, b.topic, prefix, acked)
			exactlyOnce(t, "group "+groupOrders, g1)
			for _, p := range orders {
				if g1.ByPod[p.name] == 0 {
					t.Errorf("group %s: pod %s consumed nothing; the group should spread over its three pods: %v", groupOrders, p.name, g1.ByPod)
				}
			}
			gb := waitConsumed(t, 90*time.Second, 2*time.Second, billing, groupBilling, b.topic, prefix, acked)
			exactlyOnce(t, "group "+groupBilling, gb)
		})
	}
}
