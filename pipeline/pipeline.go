// Package pipeline is the one interceptor pipeline of the sidecar: every
// publish, every delivery and every RPC exchange passes the same stages
// (docs/design.md "The pipeline"). Schema validation, flow control,
// tracing and metrics are stages; none of them is called from the data
// path directly.
//
// A stage is any value that implements one or more of the small hook
// interfaces below, one per event, as franz-go's kgo hooks are: a stage
// implements only the events it cares about, and the stages themselves
// live in their own packages (observe, flowctl, the sidecar's schema
// check, rpcproxy/stream's exchange counters and limits), never here. New
// composes a pipeline once, at start, from an ordered list of stages;
// nothing is added or removed afterwards, so the order every event meets
// the stages in is the order of that list (outermost first), written down
// once where the list is built (msgmesh.New, rpcproxy.New).
//
// The rules every event follows:
//
//   - "before" hooks (PublishHook, FetchHook, ExchangeHook) run in stage
//     order; the first that returns an error refuses the event with that
//     error, unchanged (a typed error keeps its type and code), and no
//     later stage, and not the broker or upstream, sees it;
//   - "after" hooks (PublishedHook, ExchangeDoneHook) run in reverse stage
//     order, for the stages the event reached: those before the refusing
//     one, or all of them. The refusing stage is not told (it took
//     nothing to give back);
//   - a delivery is wrapped by the stages (FetchHook's Hold, DeliverHook),
//     the first stage outermost, so its settlement passes them in stage
//     order.
//
// A Pipeline with no stage for an event costs that event nothing: no
// allocation, no clock reading.
package pipeline

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

// Stage is one stage of a pipeline: a value implementing at least one of
// PublishCheckHook, PublishHook, PublishedHook, FetchHook, DeliverHook,
// ExchangeHook and ExchangeDoneHook.
type Stage any

// Publish is one publish as the stages see it. The pipeline owns it and
// reuses it: stages read it, may change Msg (the sidecar's own copy: a
// trace context in its headers, a re-encoded body), and must not keep it
// after OnPublished returns.
type Publish struct {
	// Msg is the message on its way to the broker.
	Msg *broker.Message
	// Cluster names the broker cluster Msg's topic lives on.
	Cluster string
	// ContentType is how the body is encoded when no header says it (an
	// HTTP publish's Content-Type); "" for none.
	ContentType string
	// Start is when the publish entered the pipeline.
	Start time.Time
	// Result and Err are the outcome, set before the after hooks run:
	// the broker's answer, or the refusal of a stage.
	Result broker.PublishResult
	Err    error
	// Sent says the broker was called: Err, if any, is the broker's.
	Sent bool
}

// PublishCheckHook checks a publish when the sidecar reads it, before it
// is queued for the broker: cheap checks that never wait (a topic's size
// limit). An error refuses the publish at once. m is a copy, so that the
// caller's message need not move to the heap for the call.
type PublishCheckHook interface {
	CheckPublish(m broker.Message) error
}

// PublishHook runs before the broker call, under the publish's deadline.
// It may wait within ctx (a rate limit), and returns the context the
// stages after it and the broker call run under (ctx itself, or ctx with
// something added, such as a span). An error refuses the publish.
type PublishHook interface {
	OnPublish(ctx context.Context, p *Publish) (context.Context, error)
}

// PublishedHook runs once a publish's outcome is known. ctx is the
// innermost context: the one the broker call ran under (or that the
// refusing stage was given), carrying what every earlier stage added.
type PublishedHook interface {
	OnPublished(ctx context.Context, p *Publish)
}

// FetchHook runs before an upstream consumer takes its next message of
// (group, topic) from the broker. It may wait within ctx for room (a
// delivery rate, an in-flight bound): the broker is read no faster than
// the stages allow. It returns what it holds for the message, nil for
// nothing; the pipeline ties every Hold to the delivery, so the
// delivery's first settlement (ack, nack, hand-back, or a hot upgrade's
// Detach) releases it, and releases it at once if no message is taken.
// An error (ctx ended: paused or stopping) takes no message.
type FetchHook interface {
	OnFetch(ctx context.Context, group, topic string) (Hold, error)
}

// Hold is what a FetchHook holds for one delivery until it is settled.
type Hold interface{ Release() }

// DeliverHook runs when a delivery becomes in flight on an app's
// connection for group (pushed, pulled, or adopted in a hot upgrade). It
// returns the delivery to keep and settle in d's place: a wrapper that
// observes its settlement, or d itself.
type DeliverHook interface {
	OnDeliver(d broker.Delivery, group string) broker.Delivery
}

// ExchangeHook runs before the RPC proxy forwards a call. An error refuses
// it; the proxy answers with that error (a *stream.Error keeps its code).
// It runs on the call's goroutine.
type ExchangeHook interface {
	OnExchange(x *stream.Exchange) error
}

// ExchangeDoneHook runs once a call's outcome is known (x.Status, x.Err,
// x.RespBytes) and before the caller is sent the answer, so a stage can
// give back what its OnExchange took before the caller's next call.
// Stages must not keep x after it returns.
type ExchangeDoneHook interface {
	OnExchangeDone(x *stream.Exchange)
}

// at is a hook and the position of its stage.
type at[H any] struct {
	pos  int
	hook H
}

// Pipeline is an ordered, fixed set of stages. The zero value and nil
// have no stages. Its methods are safe for concurrent use.
type Pipeline struct {
	n         int
	checks    []at[PublishCheckHook]
	publish   []at[PublishHook]
	published []at[PublishedHook]
	fetch     []at[FetchHook]
	deliver   []at[DeliverHook]
	exchange  []at[ExchangeHook]
	done      []at[ExchangeDoneHook]

	pubs sync.Pool // *Publish
}

// New composes stages, outermost first. Nil stages are skipped, so
// optional ones can be listed unconditionally; a stage that implements no
// hook is a mistake and an error.
func New(stages ...Stage) (*Pipeline, error) {
	p := &Pipeline{}
	for _, s := range stages {
		if s == nil {
			continue
		}
		pos := p.n
		hooks := addHook(&p.checks, s, pos) + addHook(&p.publish, s, pos) + addHook(&p.published, s, pos) +
			addHook(&p.fetch, s, pos) + addHook(&p.deliver, s, pos) + addHook(&p.exchange, s, pos) + addHook(&p.done, s, pos)
		if hooks == 0 {
			return nil, fmt.Errorf("pipeline: stage %d (%T) implements no hook", pos, s)
		}
		p.n++
	}
	p.pubs.New = func() any { return new(Publish) }
	return p, nil
}

// addHook appends s to list if it implements the list's hook, and says
// whether it did (1) or not (0).
func addHook[H any](list *[]at[H], s Stage, pos int) int {
	h, ok := s.(H)
	if !ok {
		return 0
	}
	*list = append(*list, at[H]{pos, h})
	return 1
}

// Len is the number of stages.
func (p *Pipeline) Len() int {
	if p == nil {
		return 0
	}
	return p.n
}

// CheckPublish runs the PublishCheckHooks on a publish just read; the
// first refusal is returned as is.
func (p *Pipeline) CheckPublish(m *broker.Message) error {
	if p == nil {
		return nil
	}
	for _, h := range p.checks {
		if err := h.hook.CheckPublish(*m); err != nil {
			return err
		}
	}
	return nil
}

// Publish runs a publish of m to cluster through the stages around send,
// the broker call, and returns the outcome: the broker's, or the
// refusing stage's error as it returned it. send is called at most once,
// under the context the stages built.
func (p *Pipeline) Publish(ctx context.Context, m *broker.Message, cluster, contentType string,
	send func(context.Context) (broker.PublishResult, error)) (broker.PublishResult, error) {
	if p == nil || len(p.publish) == 0 && len(p.published) == 0 {
		return send(ctx)
	}
	pub := p.pubs.Get().(*Publish)
	*pub = Publish{Msg: m, Cluster: cluster, ContentType: contentType, Start: time.Now()}
	reached := p.n // stages at positions below reached see the outcome
	for _, s := range p.publish {
		c, err := s.hook.OnPublish(ctx, pub)
		if err != nil {
			pub.Err, reached = err, s.pos
			break
		}
		if c != nil {
			ctx = c
		}
	}
	if pub.Err == nil {
		pub.Result, pub.Err = send(ctx)
		pub.Sent = true
	}
	for i := len(p.published) - 1; i >= 0; i-- {
		if s := p.published[i]; s.pos < reached {
			s.hook.OnPublished(ctx, pub)
		}
	}
	res, err := pub.Result, pub.Err
	*pub = Publish{}
	p.pubs.Put(pub)
	return res, err
}

// Fetch takes the next delivery of (group, topic) through the stages:
// the FetchHooks first (which may wait), then next, the broker call. The
// delivery it returns carries the stages' Holds (the delivery itself when
// none holds anything). On error nothing is held.
func (p *Pipeline) Fetch(ctx context.Context, group, topic string,
	next func(context.Context) (broker.Delivery, error)) (broker.Delivery, error) {
	if p == nil || len(p.fetch) == 0 {
		return next(ctx)
	}
	var hs holds
	for _, h := range p.fetch {
		hd, err := h.hook.OnFetch(ctx, group, topic)
		if err != nil {
			hs.release()
			return nil, err
		}
		hs.add(hd)
	}
	d, err := next(ctx)
	if err != nil {
		hs.release()
		return nil, err
	}
	if hs.first == nil {
		return d, nil
	}
	return &held{Delivery: d, hs: hs}, nil
}

// Deliver passes d, becoming in flight on an app's connection for group,
// through the DeliverHooks, and returns the delivery to keep in its place
// (the first stage's wrapper outermost).
func (p *Pipeline) Deliver(d broker.Delivery, group string) broker.Delivery {
	if p == nil {
		return d
	}
	for i := len(p.deliver) - 1; i >= 0; i-- {
		d = p.deliver[i].hook.OnDeliver(d, group)
	}
	return d
}

// BeginExchange runs the ExchangeHooks of an RPC call until one refuses.
// It returns how far the call got, to hand to EndExchange, and the
// refusal.
func (p *Pipeline) BeginExchange(x *stream.Exchange) (reached int, err error) {
	if p == nil {
		return 0, nil
	}
	for _, s := range p.exchange {
		if err := s.hook.OnExchange(x); err != nil {
			return s.pos, err
		}
	}
	return p.n, nil
}

// EndExchange runs the ExchangeDoneHooks of the stages the call reached
// (BeginExchange's result), last first.
func (p *Pipeline) EndExchange(x *stream.Exchange, reached int) {
	if p == nil {
		return
	}
	for i := len(p.done) - 1; i >= 0; i-- {
		if s := p.done[i]; s.pos < reached {
			s.hook.OnExchangeDone(x)
		}
	}
}
