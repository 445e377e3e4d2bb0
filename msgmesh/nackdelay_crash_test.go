package msgmesh_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// TestKafkaHugeNackSIGKILL: one message NACKed with a 2^32-1 ms delay,
// ahead of n others on the same Kafka partition. The Kafka adapter holds a
// nacked message in the sidecar and commits a partition only below its
// first unacked message, so without a bound on the delay the partition's
// committed offset stays behind the nacked message for 49.7 days, and a
// sidecar killed meanwhile has every later message redelivered after its
// restart. With --max-nack-delay (1 s here) the message comes back within
// the bound, is acked, and the commit covers everything: the real binary
// is killed with SIGKILL once the group's committed offset (read from the
// cluster, as an operator would) stops short or covers all, restarted, and
// the messages delivered again after the restart are counted.
func TestKafkaHugeNackSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	const n = 500
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	kc := kafkatest.Start(t)
	addrs := kafkatest.Addrs(kc)
	quoted := make([]string, len(addrs))
	for i, a := range addrs {
		quoted[i] = strconv.Quote(a)
	}
	// One partition: every message is behind the nacked one.
	cfg := fmt.Sprintf("brokers:\n  clusters:\n    - name: kafka\n      kind: kafka\n      endpoints: [%s]\n      options: {partitions: \"1\"}\n",
		strings.Join(quoted, ", "))
	cfgPath := filepath.Join(t.TempDir(), "msgmesh.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	meshAddr, httpAddr := freePort(t), freePort(t)
	args := []string{"--data-dir", t.TempDir(), "--listen", meshAddr, "--http", httpAddr,
		"--delivery-timeout", "2s", "--max-nack-delay", "1s", "--log-level", "warn", "--config", cfgPath}
	p := sidecartest.StartProc(t, bin, args...)
	sidecartest.WaitHealthy(t, p, httpAddr)
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}

	var (
		mu        sync.Mutex
		delivered = map[string]int{}
		afterKill = map[string]int{}
		restarted atomic.Bool
	)
	sub := sidecartest.Dial(t, meshAddr)
	if _, err := sub.Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		body := string(d.Body)
		mu.Lock()
		delivered[body]++
		first := delivered[body] == 1
		if restarted.Load() {
			afterKill[body]++
		}
		mu.Unlock()
		if body == "slow" && first {
			return &client.RetryAfter{Delay: math.MaxUint32 * time.Millisecond}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pub := sidecartest.Dial(t, meshAddr)
	if _, err := pub.Publish(context.Background(), &client.Message{Topic: topic, Body: []byte("slow")}); err != nil {
		t.Fatal(err)
	}
	sidecartest.PublishN(t, pub, topic, "m", n, 64)
	sidecartest.WaitFor(t, 60*time.Second, "every message behind the nacked one to be acked", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := 0; i < n; i++ {
			if delivered[fmt.Sprintf("m-%d", i)] == 0 {
				return false
			}
		}
		return true
	})
	// With the bound the nacked message is back within 1 s and acked, and
	// the commit covers all n+1; give it generous time, then kill either way.
	var at int64
	for deadline := time.Now().Add(sidecartest.Scaled(20 * time.Second)); ; time.Sleep(20 * time.Millisecond) { // polling interval
		if at = kafkatest.Committed(t, kc, "g1", topic, 0); at == n+1 || time.Now().After(deadline) {
			break
		}
	}
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done
	restarted.Store(true)

	p = sidecartest.StartProc(t, bin, args...)
	sidecartest.WaitHealthy(t, p, httpAddr)
	// A marker published after the restart comes after every redelivery
	// (one partition, read in order).
	sidecartest.WaitFor(t, 30*time.Second, "a publish after the restart", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: []byte("marker")})
		return err == nil
	})
	sidecartest.WaitFor(t, 90*time.Second, "the marker to be delivered after the restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return afterKill["marker"] > 0
	})
	mu.Lock()
	again := 0
	for body, c := range afterKill {
		if body != "marker" {
			again += c
		}
	}
	mu.Unlock()
	t.Logf("committed offset at the SIGKILL: %d of %d; messages delivered again after the restart: %d", at, n+1, again)
	if at != n+1 {
		t.Errorf("the group's committed offset was %d when the sidecar was killed, want %d: the nacked message held the partition back", at, n+1)
	}
	if again != 0 {
		t.Errorf("%d messages were delivered again after SIGKILL and restart, want 0", again)
	}
}
