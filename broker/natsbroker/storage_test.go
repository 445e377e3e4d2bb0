package natsbroker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/internal/syncbuf"
	"github.com/msgmesh/msgmesh/internal/tmpfstest"
	"github.com/msgmesh/msgmesh/topology"
)

// embedded starts an embedded server with ecfg (StoreDir defaults to a
// temporary directory) and a Broker on an in-process connection to it that
// knows it is embedded; both stop in t.Cleanup.
func embedded(t *testing.T, ecfg natsbroker.EmbeddedConfig, bcfg natsbroker.Config) (*natsbroker.Embedded, *natsbroker.Broker) {
	t.Helper()
	if ecfg.StoreDir == "" {
		ecfg.StoreDir = t.TempDir()
	}
	e, err := natsbroker.StartEmbedded(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	bcfg.Conn, bcfg.Embedded = nc, e
	if bcfg.Logger == nil {
		bcfg.Logger = quietLog
	}
	b, err := natsbroker.New(brokertest.Ctx(t), bcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return e, b
}

func dur(d time.Duration) *time.Duration { return &d }
func size(n int64) *topology.ByteSize    { b := topology.ByteSize(n); return &b }
func count(n int64) *int64               { return &n }
func streamOf(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(brokertest.Ctx(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

// Streams the adapter creates take the topic's settings over the
// cluster's over the defaults, and always discard new.
func TestCreatedStreamSettings(t *testing.T) {
	streams := &topology.Streams{
		StreamSettings: topology.StreamSettings{MaxAge: dur(time.Hour)},
		Topics: []topology.TopicStreams{
			{Topic: "big.>", StreamSettings: topology.StreamSettings{MaxBytes: size(1 << 20), MaxAge: dur(0)}},
			{Topic: "work.*", StreamSettings: topology.StreamSettings{Retention: topology.RetentionInterest, MaxMsgs: count(10)}},
			{Topic: "big.shadowed", StreamSettings: topology.StreamSettings{MaxMsgs: count(5)}}, // first match wins
		},
	}
	withStreams := newEnv(t, natsbroker.Config{Streams: streams})
	plain := newEnv(t, natsbroker.Config{})
	for _, c := range []struct {
		env   *env
		topic string
		want  jetstream.StreamConfig
	}{
		{plain, "plain.t", jetstream.StreamConfig{Retention: jetstream.LimitsPolicy, MaxAge: natsbroker.DefaultMaxAge, MaxBytes: -1, MaxMsgs: -1}},
		{withStreams, "plain.t", jetstream.StreamConfig{Retention: jetstream.LimitsPolicy, MaxAge: time.Hour, MaxBytes: -1, MaxMsgs: -1}},
		{withStreams, "big.shadowed", jetstream.StreamConfig{Retention: jetstream.LimitsPolicy, MaxAge: 0, MaxBytes: 1 << 20, MaxMsgs: -1}},
		{withStreams, "work.t", jetstream.StreamConfig{Retention: jetstream.InterestPolicy, MaxAge: time.Hour, MaxBytes: -1, MaxMsgs: 10}},
	} {
		brokertest.Consume(t, c.env.b, broker.ConsumerSpec{Topic: c.topic, Group: "g"}) // creates the stream
		name := "MESH_" + strings.ReplaceAll(c.topic, ".", "_")
		got := streamOf(t, c.env.js, name)
		if got.Retention != c.want.Retention || got.MaxAge != c.want.MaxAge || got.MaxBytes != c.want.MaxBytes ||
			got.MaxMsgs != c.want.MaxMsgs || got.Discard != jetstream.DiscardNew || got.Replicas != 1 || got.Storage != jetstream.FileStorage {
			t.Errorf("%s: stream %s: retention %v max_age %v max_bytes %d max_msgs %d discard %v replicas %d storage %v; want retention %v max_age %v max_bytes %d max_msgs %d, discard new, R1, file",
				c.topic, name, got.Retention, got.MaxAge, got.MaxBytes, got.MaxMsgs, got.Discard, got.Replicas, got.Storage,
				c.want.Retention, c.want.MaxAge, c.want.MaxBytes, c.want.MaxMsgs)
		}
	}
}

// A stream at its own limit refuses publishes with ErrStorageFull, naming
// the stream and its limit, and drops nothing it stored. With retention
// limits consuming frees nothing; with retention interest it does, and
// publishes resume.
func TestStreamLimitIsStorageFull(t *testing.T) {
	for _, c := range []struct {
		retention string
		frees     bool
	}{{topology.RetentionLimits, false}, {topology.RetentionInterest, true}} {
		t.Run(c.retention, func(t *testing.T) {
			e := newEnv(t, natsbroker.Config{Streams: &topology.Streams{StreamSettings: topology.StreamSettings{
				Retention: c.retention, MaxMsgs: count(3)}}})
			cons := brokertest.Consume(t, e.b, broker.ConsumerSpec{Topic: "lim.t", Group: "g"})
			brokertest.PublishN(t, e.b, "lim.t", 0, 3)
			_, err := e.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: "lim.t", Body: brokertest.Body(3)})
			if !errors.Is(err, broker.ErrStorageFull) || errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrRejected) {
				t.Fatalf("publish over max_msgs: %v; want only ErrStorageFull", err)
			}
			for _, want := range []string{"MESH_lim_t", "max_msgs 3", "discard new", "nothing was stored"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if got := brokertest.Counts(brokertest.Collect(t, cons, brokertest.Bodies(0, 3))); len(got) != 3 {
				t.Fatalf("consumed %v", got)
			}
			// Acks are fire-and-forget: wait until the server has them.
			if !brokertest.Poll(func() bool { return ackFloor(t, e.js, "MESH_lim_t") == 3 }) {
				t.Fatal("acks never reached the server")
			}
			_, err = e.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: "lim.t", Body: brokertest.Body(3)})
			if c.frees && err != nil {
				t.Fatalf("publish after every message was acked (interest): %v", err)
			}
			if !c.frees && !errors.Is(err, broker.ErrStorageFull) {
				t.Fatalf("publish after consuming (limits keep consumed messages): %v; want ErrStorageFull", err)
			}
			if !c.frees {
				if st := streamState(t, e.js, "MESH_lim_t"); st.Msgs != 3 || st.FirstSeq != 1 {
					t.Fatalf("stream state %+v: a full stream dropped or added messages", st)
				}
			}
		})
	}
}

// ackFloor is the lowest ack floor of the stream's consumers.
func ackFloor(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(brokertest.Ctx(t), stream)
	if err != nil {
		t.Fatal(err)
	}
	floor, n := uint64(1<<63), 0
	l := s.ListConsumers(brokertest.Ctx(t))
	for ci := range l.Info() {
		floor = min(floor, ci.AckFloor.Stream)
		n++
	}
	if n == 0 {
		return 0
	}
	return floor
}

func streamState(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamState {
	t.Helper()
	s, err := js.Stream(brokertest.Ctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State
}

// JetStream acks a publish to an interest stream without consumers and
// keeps the message for nobody; the adapter refuses it instead.
func TestInterestStreamWithoutGroupRefusesPublish(t *testing.T) {
	e := newEnv(t, natsbroker.Config{Streams: &topology.Streams{StreamSettings: topology.StreamSettings{Retention: topology.RetentionInterest}}})
	_, err := e.b.Publish(brokertest.Ctx(t), &broker.Message{Topic: "int.t", Body: brokertest.Body(0)})
	if !errors.Is(err, broker.ErrRejected) || !strings.Contains(err.Error(), "no group consumes") {
		t.Fatalf("publish to an interest stream without a group: %v; want ErrRejected saying no group consumes it", err)
	}
	if st := streamState(t, e.js, "MESH_int_t"); st.LastSeq != 0 {
		t.Fatalf("the refused publish reached the stream: %+v", st)
	}
	c := brokertest.Consume(t, e.b, broker.ConsumerSpec{Topic: "int.t", Group: "g"})
	brokertest.PublishN(t, e.b, "int.t", 1, 5)
	brokertest.Collect(t, c, brokertest.Bodies(1, 5))
}

// A stream msgmesh created earlier with other settings is used as it is,
// never changed, and the difference is logged.
func TestExistingStreamIsNotChanged(t *testing.T) {
	var logs syncbuf.Buffer
	e := newEnv(t, natsbroker.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	old := jetstream.StreamConfig{Name: "MESH_old_t", Description: "msgmesh topic old.t", Subjects: []string{"old.t"},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld}
	if _, err := e.js.CreateStream(brokertest.Ctx(t), old); err != nil {
		t.Fatal(err)
	}
	brokertest.PublishN(t, e.b, "old.t", 0, 1)
	got := streamOf(t, e.js, "MESH_old_t")
	if got.MaxAge != 0 || got.Discard != jetstream.DiscardOld {
		t.Fatalf("existing stream changed: max_age %v, discard %v", got.MaxAge, got.Discard)
	}
	if l := logs.String(); !strings.Contains(l, "does not change existing streams") || !strings.Contains(l, "max_age none") {
		t.Fatalf("no warning about the stream's settings in the log:\n%s", l)
	}
}

// At the embedded store's limit (MaxStore) every topic answers
// ErrStorageFull naming the store and the limit, and publishes go through
// again, without a restart, once space is freed.
func TestEmbeddedStoreLimitIsStorageFull(t *testing.T) {
	dir := t.TempDir()
	e, b := embedded(t, natsbroker.EmbeddedConfig{StoreDir: dir, MaxStore: 256 << 10}, natsbroker.Config{})
	if e.MaxStore() != 256<<10 {
		t.Fatalf("MaxStore %d", e.MaxStore())
	}
	pad := bytes.Repeat([]byte("x"), 8<<10)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = b.Publish(brokertest.Ctx(t), &broker.Message{Topic: "store.a", Body: pad})
	}
	if !errors.Is(err, broker.ErrStorageFull) {
		t.Fatalf("publishing past max_store: %v; want ErrStorageFull", err)
	}
	for _, want := range []string{dir, "max_store", "256 KiB"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := b.Publish(brokertest.Ctx(t), &broker.Message{Topic: "store.b", Body: pad}); !errors.Is(err, broker.ErrStorageFull) {
		t.Fatalf("publish to another topic: %v; want ErrStorageFull", err)
	}
	s, err := operator(t, e).Stream(brokertest.Ctx(t), "MESH_store_a")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(brokertest.Ctx(t), &broker.Message{Topic: "store.b", Body: pad}); err != nil {
		t.Fatalf("publish after the store was purged: %v", err)
	}
}

// The embedded server's sync setting: fsync before every ack unless an
// interval is configured.
func TestEmbeddedSync(t *testing.T) {
	for _, c := range []struct {
		interval time.Duration
		want     string
	}{{0, "always"}, {time.Second, "every 1s"}} {
		e, _ := embedded(t, natsbroker.EmbeddedConfig{SyncInterval: c.interval}, natsbroker.Config{})
		if got := e.Sync(); got != c.want {
			t.Errorf("SyncInterval %v: Sync() = %q, want %q", c.interval, got, c.want)
		}
	}
}

// A full disk under the embedded store: publishes answer ErrStorageFull
// (not a timeout), on every topic, while it is full; once space is back
// they go through again and the consumers deliver everything acked, in
// the same process, and after a restart on the same directory.
//
// "reserve": the store keeps free space in reserve and refuses publishes
// when less is free, before a write fails. "write error": without the
// reserve the disk fills up to failed writes; nats-server then refuses
// every write to those streams until they are loaded again, which the
// embedded server does by itself once space is back (a new server on the
// same store).
func TestEmbeddedDiskFull(t *testing.T) {
	for _, noReserve := range []bool{false, true} {
		name := "reserve"
		if noReserve {
			name = "write error"
		}
		t.Run(name, func(t *testing.T) { testEmbeddedDiskFull(t, noReserve) })
	}
}

func testEmbeddedDiskFull(t *testing.T, noReserve bool) {
	mnt := tmpfstest.Mount(t, "16m")
	store := filepath.Join(mnt, "nats")
	ballast := filepath.Join(mnt, "ballast")
	ecfg := natsbroker.EmbeddedConfig{StoreDir: store, MaxStore: 1 << 30} // above the disk: the disk fills first
	e, b := embedded(t, ecfg, natsbroker.Config{})
	if noReserve {
		natsbroker.NoStoreReserve(e)
	}
	// The server restarts under the consumer (write_error). nats.go's
	// iterator asks for a full batch again on reconnect while its buffer
	// may still be full, and drops what does not fit ("slow consumer",
	// seen under heavy load); the server offers those again after AckWait.
	// A short AckWait keeps that inside the test's wait: later, not lost.
	cons := brokertest.Consume(t, b, broker.ConsumerSpec{Topic: "disk.a", Group: "g", AckWait: 5 * time.Second})
	brokertest.Consume(t, b, broker.ConsumerSpec{Topic: "disk.b", Group: "g"})

	acked := map[string]bool{}
	unknown := map[string]bool{}
	pad := strings.Repeat("x", 64<<10)
	publishSized := func(topic string, i int, pad string) error {
		m := fmt.Sprintf("%s-%05d-%s", topic, i, pad)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := b.Publish(ctx, &broker.Message{Topic: topic, Body: []byte(m)})
		switch {
		case err == nil:
			acked[m] = true
		case !errors.Is(err, broker.ErrStorageFull):
			unknown[m] = true // may or may not be stored
		}
		return err
	}
	publish := func(topic string, i int) error { return publishSized(topic, i, pad) }
	i := 0
	for ; i < 20; i++ {
		if err := publish("disk.a", i); err != nil {
			t.Fatalf("publish %d before the disk filled: %v", i, err)
		}
	}
	var full error
	if noReserve {
		// The store's own messages fill the disk, to a failed write; the
		// 2 MiB of ballast left free is what will be freed.
		tmpfstest.Fill(t, ballast, tmpfstest.Free(t, mnt)-2<<20)
		for ; i < 1000 && full == nil; i++ {
			if err := publish("disk.a", i); errors.Is(err, broker.ErrStorageFull) {
				full = err
			}
		}
		if full != nil && !strings.Contains(full.Error(), "could not write") {
			t.Errorf("storage full before a write failed: %v", full)
		}
	} else {
		// Leave less than the reserve free: publishes are refused as
		// soon as the store watch notices, before any write fails.
		tmpfstest.Fill(t, ballast, 512<<10)
		if !brokertest.Poll(func() bool { return e.StoreErr() != nil }) {
			t.Fatal("the store watch did not notice the disk filled")
		}
		if err := publishSized("disk.a", i, ""); errors.Is(err, broker.ErrStorageFull) {
			full = err
		}
		if full != nil && !strings.Contains(full.Error(), "publishes resume once") {
			t.Errorf("storage full, but not by the reserve: %v", full)
		}
	}
	if full == nil {
		t.Fatalf("the disk never filled: %d publishes, %d acked, %d unknown", i, len(acked), len(unknown))
	}
	if !strings.Contains(full.Error(), store) {
		t.Errorf("storage-full error %q does not name the store %s", full, store)
	}
	if err := publish("disk.b", 0); !errors.Is(err, broker.ErrStorageFull) {
		t.Fatalf("publish to another topic on the full disk: %v; want ErrStorageFull", err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	var last error
	if !brokertest.Poll(func() bool { last = publish("disk.a", 100000+i); return last == nil }) {
		t.Fatalf("publishes did not resume after space was freed: %v", last)
	}
	for j := 0; j < 5; j++ {
		if err := publish("disk.a", 200000+j); err != nil {
			t.Fatalf("publish after recovery: %v", err)
		}
	}
	// The consumer created before the disk filled delivers everything
	// acked, and nothing else but what had an unknown outcome.
	got := collectAcked(t, cons, acked, unknown)
	t.Logf("acked %d, unknown %d (delivered %d of them), duplicates %d", len(acked), len(unknown), got.unknown, got.dups)

	// And again after a restart of the server on the same store: what
	// was delivered before may come again (acks are asynchronous), the
	// new message must come.
	if err := cons.Close(brokertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	e.Shutdown()
	_, b = embedded(t, ecfg, natsbroker.Config{})
	before := map[string]bool{}
	for m := range acked {
		before[m] = true
	}
	for m := range unknown {
		before[m] = true
	}
	acked = map[string]bool{}
	if err := publish("disk.a", 300000); err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
	collectAcked(t, brokertest.Consume(t, b, broker.ConsumerSpec{Topic: "disk.a", Group: "g"}), acked, before)
}

type collected struct{ unknown, dups int }

// collectAcked receives from c until every body of acked was delivered,
// acking each; a body in neither acked nor unknown fails the test.
func collectAcked(t *testing.T, c broker.Consumer, acked, unknown map[string]bool) collected {
	t.Helper()
	seen := map[string]int{}
	var res collected
	for missing := len(acked); missing > 0; {
		d := brokertest.Next(t, c)
		m := string(d.Message().Body)
		switch {
		case acked[m]:
			if seen[m] == 0 {
				missing--
			}
		case unknown[m]:
			if seen[m] == 0 {
				res.unknown++
			}
		default:
			t.Fatalf("delivered a message never published: %.40q", m)
		}
		if seen[m] > 0 {
			res.dups++
		}
		seen[m]++
		if err := d.Ack(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return res
}

// nats-server shuts JetStream down for good on some out-of-space errors.
// The embedded server notices, answers ErrStorageFull while its disk is
// short of space, and brings JetStream back (a new server on the same
// store) once there is space; the consumers pull again and nothing acked
// is lost.
func TestEmbeddedJetStreamDisabled(t *testing.T) {
	mnt := tmpfstest.Mount(t, "16m")
	e, b := embedded(t, natsbroker.EmbeddedConfig{StoreDir: filepath.Join(mnt, "nats")}, natsbroker.Config{})
	cons := brokertest.Consume(t, b, broker.ConsumerSpec{Topic: "off.t", Group: "g"})
	brokertest.PublishN(t, b, "off.t", 0, 10)

	// Disabled while the disk is full: storage full until space is back.
	ballast := filepath.Join(mnt, "ballast")
	tmpfstest.Fill(t, ballast, 0)
	if err := natsbroker.ShutdownJetStream(e); err != nil {
		t.Fatal(err)
	}
	var err error
	publish := func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := b.Publish(ctx, &broker.Message{Topic: "off.t", Body: brokertest.Body(i)})
		return err
	}
	if !brokertest.Poll(func() bool {
		err = publish(99)
		return errors.Is(err, broker.ErrStorageFull)
	}) {
		t.Fatalf("publish with JetStream disabled on a full disk: %v; want ErrStorageFull", err)
	}
	if !strings.Contains(err.Error(), "JetStream is disabled") {
		t.Errorf("error %q does not say JetStream is disabled", err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	if !brokertest.Poll(func() bool {
		err = publish(10)
		return err == nil
	}) {
		t.Fatalf("publishes did not resume after space was freed: %v", err)
	}

	// Disabled with space to spare: enabled again at once.
	if err := natsbroker.ShutdownJetStream(e); err != nil {
		t.Fatal(err)
	}
	if !brokertest.Poll(func() bool {
		err = publish(11)
		return err == nil
	}) {
		t.Fatalf("publishes did not resume after JetStream was disabled: %v", err)
	}
	got := brokertest.Counts(brokertest.Collect(t, cons, brokertest.Bodies(0, 12)))
	t.Logf("delivered %d messages, %d of them more than once", len(got), len(got)-countOnce(got))
}

func countOnce(got map[string]int) int {
	n := 0
	for _, c := range got {
		if c == 1 {
			n++
		}
	}
	return n
}
