package sidecarapp

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/tmpfstest"
)

// These tests fill a small real file system (a tmpfs) through the sidecar,
// with the embedded broker's store and the registrations on it, and check
// what apps are told and that everything acked is delivered.

// publisher publishes numbered bodies and remembers which were acked.
type publisher struct {
	t     *testing.T
	s     *sidecar
	n     int
	acked map[string]map[string]bool // topic → bodies
}

func newPublisher(t *testing.T, s *sidecar) *publisher {
	return &publisher{t: t, s: s, acked: map[string]map[string]bool{}}
}

// publish sends one body of about size bytes; an acked one is remembered.
func (p *publisher) publish(topic string, size int) answer {
	p.t.Helper()
	p.n++
	body := fmt.Sprintf("%s-%06d-%s", topic, p.n, strings.Repeat("x", size))
	a := p.s.publish(topic, []byte(body))
	if a.Status == http.StatusOK {
		if p.acked[topic] == nil {
			p.acked[topic] = map[string]bool{}
		}
		p.acked[topic][body] = true
	}
	return a
}

// fill publishes to topic until an answer is not 200 and returns it.
func (p *publisher) fill(topic string, size int) answer {
	p.t.Helper()
	for i := 0; i < 10000; i++ {
		if a := p.publish(topic, size); a.Status != http.StatusOK {
			return a
		}
	}
	p.t.Fatalf("10000 publishes of %d B to %s were all acked: the store never filled", size, topic)
	return answer{}
}

// drainAll delivers every acked body of every topic and forgets them.
func (p *publisher) drainAll(s *sidecar) {
	p.t.Helper()
	for topic, want := range p.acked {
		got := s.drain(topic, want)
		dups := 0
		for _, n := range got {
			dups += n - 1
		}
		p.t.Logf("%s: acked %d, delivered %d, lost 0, duplicates %d", topic, len(want), len(got), dups)
	}
	p.acked = map[string]map[string]bool{}
}

// afterRestart stops the sidecar, starts it again on the same data
// directory with args, and publishes and drains ten more bodies of topic.
func (p *publisher) afterRestart(data, topic string, size int, args ...string) {
	p.t.Helper()
	app := p.s.app
	p.s.stop()
	p.s = startSidecar(p.t, data, args...)
	p.s.app = app // its registration was kept
	for i := 0; i < 10; i++ {
		if a := p.publish(topic, size); a.Status != http.StatusOK {
			p.t.Fatalf("publish after restart: %v", a)
		}
	}
	p.drainAll(p.s)
}

func wantStorageFull(t *testing.T, what string, a answer, mentions ...string) {
	t.Helper()
	if a.Status != http.StatusInsufficientStorage || a.Code != "STORAGE_FULL" {
		t.Fatalf("%s: %v; want 507 STORAGE_FULL", what, a)
	}
	for _, m := range mentions {
		if !strings.Contains(a.Message, m) {
			t.Errorf("%s: message %q does not mention %q", what, a.Message, m)
		}
	}
}

// eventually is waitCond, failing the test with the last answer.
func eventually(t *testing.T, what string, cond func() bool, last *answer) {
	t.Helper()
	waitCond(t, what, cond, func() string { return fmt.Sprintf("last answer: %v", *last) })
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "msgmesh.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// With the default settings, the embedded store's limit answers
// STORAGE_FULL (507) on every topic, naming the store and its limit; not
// UNAVAILABLE or BROKER_ERROR.
func TestEmbeddedStoreFullIsStorageFull(t *testing.T) {
	dir := tmpfstest.Mount(t, "16m")
	data := filepath.Join(dir, "data")
	s := startSidecar(t, data)
	if a := s.register("filler", true, "fill.a", "fill.b"); a.Status != http.StatusCreated {
		t.Fatalf("register: %v", a)
	}
	p := newPublisher(t, s)
	wantStorageFull(t, "publish to a full store", p.fill("fill.a", 32<<10), filepath.Join(data, "nats"), "max_store", "fill.a")
	wantStorageFull(t, "publish to another topic on the full store", p.publish("fill.b", 10), "max_store", "fill.b")
	// The same over the mesh protocol: STORAGE_FULL, which says "retry".
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := s.dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Publish(ctx, &client.Message{Topic: "fill.b", Body: []byte("over the mesh protocol")})
	if code := client.CodeOf(err); code != mesh.CodeStorageFull || !code.Retryable() {
		t.Fatalf("SDK publish to a full store: %v (code %v); want STORAGE_FULL, retryable", err, code)
	}
	p.drainAll(s)
}

// A topic with retention interest: the store fills, publishes answer
// STORAGE_FULL; once the group consumed what was acked, publishes go
// through again in the same process, and after a restart on the same
// data directory. Every acked message is delivered.
func TestStoreFullClearsWhenConsumed(t *testing.T) {
	dir := tmpfstest.Mount(t, "16m")
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, `
embedded:
  streams:
    topics:
      - topic: "work.>"
        retention: interest
`)
	s := startSidecar(t, data, "--config", cfg)
	if a := s.register("worker", true, "work.a", "work.b"); a.Status != http.StatusCreated {
		t.Fatalf("register: %v", a)
	}
	p := newPublisher(t, s)
	wantStorageFull(t, "publish to a full store", p.fill("work.a", 32<<10), "max_store", "as every consumer group acks")
	wantStorageFull(t, "publish to another topic on the full store", p.publish("work.b", 10))
	p.drainAll(s)
	// Deletion follows the acks; wait for it, then publish again.
	var a answer
	eventually(t, "publishes to resume after the group consumed everything", func() bool {
		a = p.publish("work.a", 32<<10)
		if a.Status != http.StatusOK && a.Code != "STORAGE_FULL" {
			t.Fatalf("publish after the group consumed everything: %v", a)
		}
		return a.Status == http.StatusOK
	}, &a)
	p.drainAll(s)

	p.afterRestart(data, "work.a", 32<<10, "--config", cfg)
}

// Something else fills the disk under the store: publishes answer
// STORAGE_FULL while it is full, and go through again once space is freed,
// without a restart; every acked message is delivered, also after a
// restart on the same data directory.
func TestDiskFullRecoversWithoutRestart(t *testing.T) {
	dir := tmpfstest.Mount(t, "32m")
	data := filepath.Join(dir, "data")
	ballast := filepath.Join(dir, "ballast")
	s := startSidecar(t, data)
	if a := s.register("app", true, "disk.a"); a.Status != http.StatusCreated {
		t.Fatalf("register: %v", a)
	}
	p := newPublisher(t, s)
	for i := 0; i < 20; i++ {
		if a := p.publish("disk.a", 16<<10); a.Status != http.StatusOK {
			t.Fatalf("publish before the disk filled: %v", a)
		}
	}
	tmpfstest.Fill(t, ballast, 0)
	wantStorageFull(t, "publish on a full disk", p.fill("disk.a", 16<<10), filepath.Join(data, "nats"))

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	var a answer
	eventually(t, "publishes to resume once space was freed", func() bool {
		a = p.publish("disk.a", 16<<10)
		return a.Status == http.StatusOK
	}, &a)
	p.drainAll(s)

	p.afterRestart(data, "disk.a", 16<<10)
}

// Registering on a full disk answers STORAGE_FULL (507), naming the
// file; once space is back the same store takes registrations again.
func TestRegisterOnFullDiskIsStorageFull(t *testing.T) {
	dir := tmpfstest.Mount(t, "16m")
	s := startSidecar(t, filepath.Join(dir, "data"))
	ballast := filepath.Join(dir, "ballast")
	tmpfstest.Fill(t, ballast, 0)
	var a answer
	i := 0
	for ; i < 1000; i++ {
		if a = s.register(fmt.Sprintf("app-%04d", i), false, fmt.Sprintf("reg.t%04d", i)); a.Status != http.StatusCreated {
			break
		}
	}
	wantStorageFull(t, "register on a full disk", a, "registrations.db")
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	if a := s.register(fmt.Sprintf("app-%04d", i), false, fmt.Sprintf("reg.t%04d", i)); a.Status != http.StatusCreated {
		t.Fatalf("register once space was freed: %v", a)
	}
}
