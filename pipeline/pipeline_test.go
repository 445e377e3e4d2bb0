package pipeline_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
	"github.com/msgmesh/msgmesh/pipeline"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

// wait bounds every wait of a test.
const wait = 30 * time.Second

type ctxKey string

// stage records its hook calls in a shared log, adds its name to the
// context it passes on, and refuses when told to.
type stage struct {
	name   string
	log    *[]string
	refuse error
	hold   *int // counts Holds given and not released
}

func (s *stage) OnPublish(ctx context.Context, p *pipeline.Publish) (context.Context, error) {
	*s.log = append(*s.log, s.name+".publish")
	if s.refuse != nil {
		return ctx, s.refuse
	}
	return context.WithValue(ctx, ctxKey(s.name), true), nil
}

func (s *stage) OnPublished(ctx context.Context, p *pipeline.Publish) {
	seen := ctx.Value(ctxKey(s.name)) != nil // the innermost context carries this stage's addition
	e := "ok"
	if p.Err != nil {
		e = "err"
	}
	*s.log = append(*s.log, s.name+".published:"+e+":sent="+boolStr(p.Sent)+":ctx="+boolStr(seen))
}

func (s *stage) OnExchange(x *stream.Exchange) error {
	*s.log = append(*s.log, s.name+".exchange")
	return s.refuse
}

func (s *stage) OnExchangeDone(x *stream.Exchange) { *s.log = append(*s.log, s.name+".done") }

func (s *stage) OnFetch(ctx context.Context, group, topic string) (pipeline.Hold, error) {
	*s.log = append(*s.log, s.name+".fetch")
	if s.refuse != nil {
		return nil, s.refuse
	}
	*s.hold++
	return release{s.hold}, nil
}

func (s *stage) OnDeliver(d broker.Delivery, group string) broker.Delivery {
	*s.log = append(*s.log, s.name+".deliver")
	return &wrapped{Delivery: d, name: s.name, log: s.log}
}

type release struct{ n *int }

func (r release) Release() { *r.n-- }

type wrapped struct {
	broker.Delivery
	name string
	log  *[]string
}

func (w *wrapped) Unwrap() broker.Delivery { return w.Delivery }

func (w *wrapped) Ack(ctx context.Context) error {
	*w.log = append(*w.log, w.name+".ack")
	return w.Delivery.Ack(ctx)
}

func boolStr(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// refusal is a typed error a stage refuses with.
type refusal struct{ code int }

func (r *refusal) Error() string { return "refused" }

func TestPublishOrderAndRefusal(t *testing.T) {
	var log []string
	a, b, c := &stage{name: "a", log: &log}, &stage{name: "b", log: &log}, &stage{name: "c", log: &log}
	p, err := pipeline.New(a, nil, b, c) // nil stages are skipped
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 3 {
		t.Fatalf("Len %d, want 3", p.Len())
	}
	sent := 0
	send := func(ctx context.Context) (broker.PublishResult, error) {
		sent++
		if ctx.Value(ctxKey("a")) == nil || ctx.Value(ctxKey("c")) == nil {
			t.Error("the broker call did not get the context the stages built")
		}
		log = append(log, "broker")
		return broker.PublishResult{Offset: 7}, nil
	}
	m := &broker.Message{Topic: "t", Body: []byte("x")}
	res, err := p.Publish(context.Background(), m, "c1", "", send)
	if err != nil || res.Offset != 7 || sent != 1 {
		t.Fatalf("publish: %v %+v, sent %d", err, res, sent)
	}
	want := "a.publish b.publish c.publish broker " +
		"c.published:ok:sent=1:ctx=1 b.published:ok:sent=1:ctx=1 a.published:ok:sent=1:ctx=1"
	if got := strings.Join(log, " "); got != want {
		t.Fatalf("calls\n  %s\nwant\n  %s", got, want)
	}

	// A refusal stops the chain with the stage's own typed error: no later
	// stage and no broker call; only the stages before it hear the outcome.
	log = nil
	b.refuse = &refusal{code: 42}
	_, err = p.Publish(context.Background(), m, "c1", "", send)
	var r *refusal
	if !errors.As(err, &r) || r.code != 42 || sent != 1 {
		t.Fatalf("refused publish: %v (sent %d), want the stage's *refusal", err, sent)
	}
	if got := strings.Join(log, " "); got != "a.publish b.publish a.published:err:sent=0:ctx=1" {
		t.Fatalf("calls after a refusal: %s", got)
	}

	// The broker's error reaches every stage, marked as sent.
	log, b.refuse = nil, nil
	boom := errors.New("boom")
	_, err = p.Publish(context.Background(), m, "c1", "", func(context.Context) (broker.PublishResult, error) { return broker.PublishResult{}, boom })
	if !errors.Is(err, boom) || !slices.Contains(log, "a.published:err:sent=1:ctx=1") {
		t.Fatalf("broker error: %v, calls %v", err, log)
	}
}

func TestExchangeOrderAndRefusal(t *testing.T) {
	var log []string
	a, b, c := &stage{name: "a", log: &log}, &stage{name: "b", log: &log}, &stage{name: "c", log: &log}
	p, err := pipeline.New(a, b, c)
	if err != nil {
		t.Fatal(err)
	}
	x := &stream.Exchange{}
	n, err := p.BeginExchange(x)
	p.EndExchange(x, n)
	if err != nil || strings.Join(log, " ") != "a.exchange b.exchange c.exchange c.done b.done a.done" {
		t.Fatalf("err %v, calls %v", err, log)
	}
	log = nil
	b.refuse = stream.Errorf(stream.ErrRateLimited, "no")
	n, err = p.BeginExchange(x)
	p.EndExchange(x, n)
	var se *stream.Error
	if !errors.As(err, &se) || se.Code != stream.ErrRateLimited || strings.Join(log, " ") != "a.exchange b.exchange a.done" {
		t.Fatalf("err %v, calls %v", err, log)
	}
	var none *pipeline.Pipeline
	if n, err := none.BeginExchange(x); n != 0 || err != nil || none.Len() != 0 {
		t.Fatal("a nil pipeline is not empty")
	}
	none.EndExchange(x, 0)
}

func TestStageWithoutHooks(t *testing.T) {
	if _, err := pipeline.New(struct{}{}); err == nil {
		t.Fatal("a stage that implements no hook was accepted")
	}
}

// TestFetchAndDeliver: on real deliveries of an embedded JetStream
// server, the fetch hooks run in order before the broker read and their
// holds are released by the first settlement (or at once when no message
// is taken); the deliver hooks wrap the delivery with the first stage
// outermost, so an ack passes them in stage order.
func TestFetchAndDeliver(t *testing.T) {
	var log []string
	holds := 0
	a, b := &stage{name: "a", log: &log, hold: &holds}, &stage{name: "b", log: &log, hold: &holds}
	p, err := pipeline.New(a, b)
	if err != nil {
		t.Fatal(err)
	}
	brk := newBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := brk.Publish(ctx, &broker.Message{Topic: "t", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	cons, err := brk.Consume(ctx, broker.ConsumerSpec{Topic: "t", Group: "g", AckWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cons.Close(context.Background()) })

	d, err := p.Fetch(ctx, "g", "t", func(ctx context.Context) (broker.Delivery, error) {
		log = append(log, "broker")
		return cons.Next(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	if holds != 2 {
		t.Fatalf("%d holds after the fetch, want 2", holds)
	}
	d = p.Deliver(d, "g")
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	_ = d.Ack(ctx) // settling twice releases nothing twice
	if holds != 0 {
		t.Fatalf("%d holds after the ack, want 0", holds)
	}
	want := "a.fetch b.fetch broker b.deliver a.deliver a.ack b.ack"
	if got := strings.Join(log[:7], " "); got != want {
		t.Fatalf("calls\n  %s\nwant\n  %s", got, want)
	}
	if _, ok := broker.As[broker.Portable](d); !ok {
		t.Fatal("the broker's delivery is not found through the wrappers (Unwrap)")
	}

	// No message: the broker read fails, and every hold is given back.
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := p.Fetch(short, "g", "t", cons.Next); err == nil {
		t.Fatal("Fetch of an empty consumer returned a delivery")
	}
	if holds != 0 {
		t.Fatalf("%d holds after a failed read, want 0", holds)
	}
	// A refusing fetch stage gives back what the stages before it took.
	b.refuse = errors.New("stopping")
	if _, err := p.Fetch(ctx, "g", "t", cons.Next); !errors.Is(err, b.refuse) || holds != 0 {
		t.Fatalf("refused fetch: %v, %d holds", err, holds)
	}
}

func newBroker(t *testing.T) *natsbroker.Broker {
	t.Helper()
	e := natstest.Start(t)
	return brokertest.Open(t, func(ctx context.Context) (*natsbroker.Broker, error) {
		return natsbroker.New(ctx, natsbroker.Config{URL: e.ClientURL(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	})
}
