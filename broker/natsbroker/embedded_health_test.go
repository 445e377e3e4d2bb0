package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker/natsbroker"

	"github.com/msgmesh/msgmesh/broker/brokertest"
)

// recorder is a slog.Handler that keeps every record, for tests that
// check what was logged.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// errors returns the error-level records, message and attributes as text.
func (r *recorder) errors() []string { return r.at(slog.LevelError) }

// at returns the records of level, message and attributes as text.
func (r *recorder) at(level slog.Level) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.recs {
		if rec.Level != level {
			continue
		}
		s := rec.Message
		rec.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
		out = append(out, s)
	}
	return out
}

// startStore starts an embedded server on dir, logging into a recorder.
func startStore(t *testing.T, dir string) (*natsbroker.Embedded, *recorder) {
	t.Helper()
	rec := &recorder{}
	e, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{StoreDir: dir, Logger: slog.New(rec)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e, rec
}

// fillStream stores 100 messages in stream S and shuts the server down
// cleanly. With crash set, it stores the last 50 after a clean restart and
// copies the store while the server runs, and returns the copy: the state
// a SIGKILL leaves, whose index (written at the clean shutdown) is older
// than its blocks.
func fillStream(t *testing.T, dir string, crash bool) string {
	t.Helper()
	publish := func(e *natsbroker.Embedded, from, to int) {
		js := operator(t, e)
		if _, err := js.CreateOrUpdateStream(brokertest.Ctx(t), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
			t.Fatal(err)
		}
		for i := from; i < to; i++ {
			if _, err := js.Publish(brokertest.Ctx(t), "s.a", fmt.Appendf(nil, "message-%03d-%s", i, strings.Repeat("x", 40))); err != nil {
				t.Fatal(err)
			}
		}
	}
	e, _ := startStore(t, dir)
	if !crash {
		publish(e, 0, 100)
		e.Shutdown()
		return dir
	}
	publish(e, 0, 50)
	e.Shutdown()
	e, _ = startStore(t, dir)
	publish(e, 50, 100)
	img := t.TempDir()
	if err := os.CopyFS(img, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	e.Shutdown()
	return img
}

func streamDir(dir string) string { return filepath.Join(dir, "jetstream", "$G", "streams", "S") }

// removeFirstBlock deletes stream S's first message block.
func removeFirstBlock(dir string) error {
	return os.Remove(filepath.Join(streamDir(dir), "msgs", "1.blk"))
}

// Damage to a stream's files, found by nats-server while it loads the
// store, is an error in the log and in Check (ErrStoreDamaged naming what
// is wrong), not only a nats-server warning. Once the server repaired the
// blocks, the next start is clean; a stream it could not load stays
// reported.
func TestEmbeddedReportsStoreDamage(t *testing.T) {
	cases := []struct {
		name      string
		damage    func(t *testing.T, dir string)
		want      string // in Check's error
		persists  bool   // still reported after a second restart
		wantAfter int    // messages readable after the repair (-1: stream gone)
	}{
		{"block bytes flipped", func(t *testing.T, dir string) {
			blk := filepath.Join(streamDir(dir), "msgs", "1.blk")
			b, err := os.ReadFile(blk)
			if err != nil {
				t.Fatal(err)
			}
			for i := len(b) / 2; i < len(b)/2+40; i++ {
				b[i] ^= 0xff
			}
			if err := os.WriteFile(blk, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "corrupt", false, 50},
		{"block removed", func(t *testing.T, dir string) {
			if err := removeFirstBlock(dir); err != nil {
				t.Fatal(err)
			}
		}, "could not locate msg block", false, 0},
		{"stream meta file overwritten", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(streamDir(dir), "meta.inf"), []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "did not load", true, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := fillStream(t, t.TempDir(), false)
			c.damage(t, dir)

			e, rec := startStore(t, dir)
			err := e.Check(brokertest.Ctx(t))
			if !errors.Is(err, natsbroker.ErrStoreDamaged) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Check after damage: %v; want ErrStoreDamaged mentioning %q", err, c.want)
			}
			if logged := rec.errors(); len(logged) == 0 || !strings.Contains(strings.Join(logged, "\n"), "damaged") {
				t.Fatalf("no error-level log about the damage; errors logged: %q", logged)
			}
			if problems, _ := e.StoreProblems(); len(problems) == 0 {
				t.Fatal("StoreProblems is empty")
			}
			js := operator(t, e)
			s, serr := js.Stream(brokertest.Ctx(t), "S")
			switch {
			case c.wantAfter < 0 && !errors.Is(serr, jetstream.ErrStreamNotFound):
				t.Fatalf("stream S after damage: %v, want not loaded", serr)
			case c.wantAfter >= 0 && serr != nil:
				t.Fatal(serr)
			case c.wantAfter >= 0:
				// The server may answer with the stream's state from its
				// index before it has rebuilt the damaged block (seen
				// once under load: 100 messages, then 50); the count
				// must settle at what the repair kept.
				var msgs uint64
				if !brokertest.Poll(func() bool {
					info, err := s.Info(brokertest.Ctx(t))
					if err == nil {
						msgs = info.State.Msgs
					}
					return msgs == uint64(c.wantAfter)
				}) {
					t.Fatalf("stream S holds %d messages after the repair, want %d", msgs, c.wantAfter)
				}
			}
			e.Shutdown()

			e, _ = startStore(t, dir)
			err = e.Check(brokertest.Ctx(t))
			if c.persists != (err != nil) {
				t.Fatalf("Check after a second restart: %v; want an error: %v", err, c.persists)
			}
		})
	}
}

// What a crash leaves (a store copied while the server ran, its index
// older than its blocks) is not damage: nats-server warns that it
// rebuilds, and Check stays nil, with every message there.
func TestEmbeddedCrashImageIsNotDamage(t *testing.T) {
	img := fillStream(t, t.TempDir(), true)
	e, rec := startStore(t, img)
	if err := e.Check(brokertest.Ctx(t)); err != nil {
		t.Fatalf("Check on a crash image: %v", err)
	}
	if logged := rec.errors(); len(logged) > 0 {
		t.Fatalf("errors logged on a crash image: %q", logged)
	}
	if warned := strings.Join(rec.at(slog.LevelWarn), "\n"); !strings.Contains(warned, "will rebuild") {
		t.Fatalf("the crash image did not make nats-server rebuild the stream state (the case this test is about); warnings: %q", warned)
	}
	s, err := operator(t, e).Stream(brokertest.Ctx(t), "S")
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 100 {
		t.Fatalf("%d messages after the crash image's restart, want 100", n)
	}
}
