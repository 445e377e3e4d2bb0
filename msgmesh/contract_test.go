package msgmesh_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// TestBrokerContract runs one suite, unchanged, against every broker
// adapter through the sidecar and the SDK.
func TestBrokerContract(t *testing.T) {
	for _, kit := range sidecartest.BrokerKits() {
		t.Run(kit.Name, func(t *testing.T) {
			for _, c := range contractCases {
				t.Run(c.name, func(t *testing.T) { c.run(t, kit) })
			}
		})
	}
}

var contractCases = []struct {
	name string
	run  func(t *testing.T, kit sidecartest.BrokerKit)
}{
	{"publish and ack", contractPublishAck},
	{"one group splits across connections", contractSplit},
	{"two groups each get everything", contractTwoGroups},
	{"nack redelivers", contractNack},
	{"pause stops deliveries and resume restarts them", contractPause},
	{"order per key", contractKeyOrder},
	{"sigkill and restart lose nothing acked", contractKillRestart},
	{"poison message is dead-lettered after max attempts", contractDeadLetter},
	{"timeouts count as attempts", contractDeadLetterTimeout},
	{"last attempt lost with its connection is dead-lettered", contractDeadLetterLostAttempt},
	{"nack delay is cut to the max nack delay", contractNackDelayBounded},
}

// subscribe attaches a counting handler for group on c.
func subscribe(t *testing.T, c *client.Client, group, who string, into *sidecartest.Tally) {
	t.Helper()
	sidecartest.Subscribe(t, c, group, topic, who, into)
}

func contractPublishAck(t *testing.T, kit sidecartest.BrokerKit) {
	e := newEnvOn(t, kit.Start(t))
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	got := sidecartest.NewTally()
	subscribe(t, e.dial(), "g1", "c", got)
	pub := e.dial()
	ack, err := pub.Publish(context.Background(), &client.Message{Topic: topic, Key: "k", Body: []byte("first")})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if ack.Stream == "" && ack.MessageID == "" {
		t.Fatalf("publish ack says nothing about where the message is: %+v", ack)
	}
	const n = 300
	sidecartest.PublishN(t, pub, topic, "m", n, 64)
	sidecartest.WaitFor(t, 60*time.Second, "every message", func() bool { return got.Distinct() == n+1 })
	got.Forget("first")
	got.ExactlyOnce(t, "m", n)
}

func contractSplit(t *testing.T, kit sidecartest.BrokerKit) {
	const n = 600
	e := newEnvOn(t, kit.Start(t))
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	got := sidecartest.NewTally()
	for i := 0; i < 3; i++ {
		subscribe(t, e.dial(), "g1", fmt.Sprintf("conn%d", i), got)
	}
	sidecartest.PublishN(t, e.dial(), topic, "m", n, 64)
	sidecartest.WaitFor(t, 60*time.Second, "every message", func() bool { return got.Count() >= n })
	got.ExactlyOnce(t, "m", n)
	if by := got.By(); len(by) != 3 {
		t.Fatalf("deliveries reached %d of 3 connections: %v", len(by), by)
	}
}

func contractTwoGroups(t *testing.T, kit sidecartest.BrokerKit) {
	const n = 300
	e := newEnvOn(t, kit.Start(t))
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic, "g2:" + topic})
	g1, g2 := sidecartest.NewTally(), sidecartest.NewTally()
	subscribe(t, e.dial(), "g1", "a", g1)
	subscribe(t, e.dial(), "g2", "b", g2)
	sidecartest.PublishN(t, e.dial(), topic, "m", n, 64)
	sidecartest.WaitFor(t, 60*time.Second, "both groups", func() bool { return g1.Count() >= n && g2.Count() >= n })
	g1.ExactlyOnce(t, "m", n)
	g2.ExactlyOnce(t, "m", n)
}

func contractNack(t *testing.T, kit sidecartest.BrokerKit) {
	const n = 20
	e := newEnvOn(t, kit.Start(t))
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	var mu sync.Mutex
	seen, again := map[string]int{}, map[string]int{}
	if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		seen[string(d.Body)]++
		if seen[string(d.Body)] == 1 {
			return errors.New("first try fails")
		}
		again[string(d.Body)] = d.Redelivered
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sidecartest.PublishN(t, e.dial(), topic, "m", n, 8)
	sidecartest.WaitFor(t, 90*time.Second, "every nacked message to come back", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(again) == n
	})
	mu.Lock()
	defer mu.Unlock()
	for body, r := range again {
		if r < 1 {
			t.Errorf("%s came back with Redelivered=%d, want >= 1", body, r)
		}
	}
}

// pauseWatch is how long the pause case watches for a delivery that must
// not come. Absence can only be watched for a while; the stated bound is
// zero: nothing is pushed once PauseDelivery has returned.
const pauseWatch = 500 * time.Millisecond

func contractPause(t *testing.T, kit sidecartest.BrokerKit) {
	const n = 50
	e := newEnvOn(t, kit.Start(t))
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	got := sidecartest.NewTally()
	sub := e.dial()
	subscribe(t, sub, "g1", "c", got)
	pub := e.dial()
	sidecartest.PublishN(t, pub, topic, "before", n, 16)
	sidecartest.WaitFor(t, 60*time.Second, "messages published before the pause", func() bool { return got.Distinct() == n })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.sc.PauseDelivery(ctx); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if err := e.sc.WaitDeliveriesSettled(ctx); err != nil {
		t.Fatalf("deliveries in flight did not settle: %v", err)
	}
	atPause := got.Count()
	sidecartest.PublishN(t, pub, topic, "during", n, 16) // publishing goes on while paused
	for deadline := time.Now().Add(pauseWatch); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c := got.Count(); c != atPause {
			t.Fatalf("%d deliveries after PauseDelivery returned", c-atPause)
		}
	}
	if err := e.sc.ResumeDelivery(ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	sidecartest.WaitFor(t, 60*time.Second, "messages published during the pause, after resume", func() bool {
		for i := 0; i < n; i++ {
			if got.Times(fmt.Sprintf("during-%d", i)) == 0 {
				return false
			}
		}
		return true
	})
}

func contractKeyOrder(t *testing.T, kit sidecartest.BrokerKit) {
	if kit.NoKeyOrder != "" {
		t.Skip(kit.NoKeyOrder)
	}
	const keys, perKey = 4, 50
	e := newEnvOn(t, kit.Start(t))
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	var mu sync.Mutex
	order := map[string][]int{}
	if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		seq, _ := strconv.Atoi(strings.TrimPrefix(string(d.Body), d.Key+"-"))
		mu.Lock()
		order[d.Key] = append(order[d.Key], seq)
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pub := e.dial()
	var wg sync.WaitGroup
	for k := 0; k < keys; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("key%d", k)
			for i := 0; i < perKey; i++ {
				if _, err := pub.Publish(context.Background(), &client.Message{Topic: topic, Key: key, Body: []byte(fmt.Sprintf("%s-%d", key, i))}); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	sidecartest.WaitFor(t, 60*time.Second, "every message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range order {
			n += len(s)
		}
		return n >= keys*perKey
	})
	mu.Lock()
	defer mu.Unlock()
	for key, seqs := range order {
		for i := 1; i < len(seqs); i++ {
			if seqs[i] < seqs[i-1] {
				t.Fatalf("key %s delivered out of order: %v", key, seqs)
			}
		}
	}
}

func contractKillRestart(t *testing.T, kit sidecartest.BrokerKit) {
	c := kit.Start(t)
	cfg := sidecartest.ClusterYAML(c)
	path := filepath.Join(t.TempDir(), "msgmesh.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	killRestart(t, kit.Name+" sidecar SIGKILL", 1500, caughtUpOf(t, c), "--config", path)
}
