package natsbroker

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// replyEnv is an embedded server and two in-process connections: one a
// replyPool publishes on, one that answers requests.
func replyEnv(t *testing.T) (pub, svc *nats.Conn) {
	t.Helper()
	e, err := StartEmbedded(EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	for _, c := range []**nats.Conn{&pub, &svc} {
		nc, err := e.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		*c = nc
	}
	return pub, svc
}

// serve answers requests to subject on svc with h, from when it returns.
func serve(t *testing.T, svc *nats.Conn, subject string, h nats.MsgHandler) {
	t.Helper()
	if _, err := svc.Subscribe(subject, h); err != nil {
		t.Fatal(err)
	}
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// newInbox is a reply inbox of a pool of its own on pub; the pool is
// closed when the test ends.
func newInbox(t *testing.T, pub *nats.Conn) (*replyPool, *replyInbox) {
	t.Helper()
	p := new(replyPool)
	t.Cleanup(p.close)
	r, err := p.get(pub, false)
	if err != nil {
		t.Fatal(err)
	}
	return p, r
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// A server that answers twice must not make a later request read the
// extra answer of an earlier one as its own.
func TestReplyInboxSkipsAnswersToOtherRequests(t *testing.T) {
	pub, svc := replyEnv(t)
	serve(t, svc, "svc.twice", func(m *nats.Msg) {
		_ = m.Respond(m.Data)
		_ = m.Respond(m.Data)
	})
	_, r := newInbox(t, pub)
	for i := range 50 {
		want := strconv.Itoa(i)
		m, err := r.request(testCtx(t, 10*time.Second), "svc.twice", []byte(want), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(m.Data); got != want {
			t.Fatalf("request %d read the answer %q", i, got)
		}
		if !r.clean {
			t.Fatal("answered inbox not clean")
		}
	}
}

// A request that gave up waiting leaves its inbox unclean (publishAck
// then drops it), and the late answer never reaches another request.
func TestReplyInboxGivenUpIsNotReused(t *testing.T) {
	pub, svc := replyEnv(t)
	release := make(chan struct{})
	answered := make(chan struct{})
	serve(t, svc, "svc.slow", func(m *nats.Msg) {
		<-release
		_ = m.Respond([]byte("late"))
		close(answered)
	})
	serve(t, svc, "svc.fast", func(m *nats.Msg) { _ = m.Respond([]byte("fast")) })
	_, r := newInbox(t, pub)
	if _, err := r.request(testCtx(t, 50*time.Millisecond), "svc.slow", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline", err)
	}
	if r.clean {
		t.Fatal("an inbox whose answer may still come is clean")
	}
	// Even used again (publishAck does not), it skips the late answer.
	close(release)
	<-answered
	m, err := r.request(testCtx(t, 10*time.Second), "svc.fast", nil, nil)
	if err != nil || string(m.Data) != "fast" {
		t.Fatalf("got %v, %v; want the answer to this request", m, err)
	}
}

func TestReplyInboxNoResponders(t *testing.T) {
	pub, _ := replyEnv(t)
	_, r := newInbox(t, pub)
	if _, err := r.request(testCtx(t, 10*time.Second), "nobody.here", nil, nil); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("err = %v, want nats.ErrNoResponders", err)
	}
	if !r.clean {
		t.Fatal("an inbox that got its one answer (503) is not clean")
	}
}

// Closing the connection ends a waiting request at once, as nats.go's
// request did, not at its deadline.
func TestReplyInboxConnectionClosed(t *testing.T) {
	pub, svc := replyEnv(t)
	got := make(chan struct{})
	serve(t, svc, "svc.never", func(*nats.Msg) { close(got) })
	p, r := newInbox(t, pub)
	done := make(chan error, 1)
	go func() {
		_, err := r.request(testCtx(t, time.Minute), "svc.never", nil, nil)
		done <- err
	}()
	<-got
	pub.Close()
	select {
	case err := <-done:
		if !errors.Is(err, nats.ErrConnectionClosed) {
			t.Fatalf("err = %v, want nats.ErrConnectionClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request still waiting after the connection closed")
	}
	if _, err := p.get(pub, false); !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("get on a closed connection: %v", err)
	}
}

// With every reply inbox in use, a publish waits through nats.go's shared
// response subscription and is acked as any; no inbox beyond maxReplies
// is subscribed, and one put back is the next publish's.
func TestPublishBeyondMaxRepliesFallsBack(t *testing.T) {
	pub, svc := replyEnv(t)
	js, err := jetstream.New(svc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(testCtx(t, 10*time.Second), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	b, err := New(testCtx(t, 10*time.Second), Config{Conn: pub, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })

	var held []*replyInbox
	for range maxReplies {
		r, err := b.replies.get(pub, false)
		if err != nil || r == nil {
			t.Fatalf("inbox %d: %v, %v", len(held), r, err)
		}
		held = append(held, r)
	}
	if r, err := b.replies.get(pub, false); r != nil || err != nil {
		t.Fatalf("get beyond maxReplies: %v, %v; want nil, nil", r, err)
	}
	for i := range 3 {
		a, err := b.publishAck(testCtx(t, 10*time.Second), "s.x", []byte("m"), nil, "S")
		if err != nil || a.Stream != "S" || a.Sequence != uint64(i+1) {
			t.Fatalf("publish %d with every inbox in use: %+v, %v", i, a, err)
		}
	}
	if b.replies.live != maxReplies {
		t.Fatalf("%d inboxes subscribed, want %d", b.replies.live, maxReplies)
	}
	// A batch's commit takes an inbox beyond the limit, dropped when put
	// back.
	over, err := b.replies.get(pub, true)
	if err != nil || over == nil || b.replies.live != maxReplies+1 {
		t.Fatalf("get beyond maxReplies for a batch: %v, %v, %d live", over, err, b.replies.live)
	}
	b.replies.put(over)
	if b.replies.live != maxReplies || len(b.replies.idle) != 0 {
		t.Fatalf("the inbox beyond the limit was kept: %d live, %d idle", b.replies.live, len(b.replies.idle))
	}
	b.replies.put(held[0])
	if r, _ := b.replies.get(pub, false); r != held[0] {
		t.Fatal("the inbox put back is not the next one handed out")
	}
}
