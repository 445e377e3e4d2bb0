package flowctl

import (
	"context"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/pipeline"
)

// Stage returns c as a pipeline stage (package pipeline), the innermost
// one of the sidecar's publishes and the one every delivery's fetch
// passes:
//
//   - CheckPublish, when a publish is read: the topic's size limit
//     (ErrTooLarge);
//   - OnPublish, just before the broker call, under the publish deadline:
//     the topic's rate (waits, or ErrRateLimited), then the cluster's
//     breaker (ErrBreakerOpen fails fast while the cluster keeps failing);
//   - OnPublished: the broker's outcome recorded on the breaker;
//   - OnFetch, before the next message of a group is taken from the
//     broker: the group's delivery rate, then its in-flight bound, whose
//     slot the pipeline holds until the delivery is settled.
func (c *Controller) Stage() pipeline.Stage { return stage{c} }

type stage struct{ c *Controller }

var (
	_ pipeline.PublishCheckHook = stage{}
	_ pipeline.PublishHook      = stage{}
	_ pipeline.PublishedHook    = stage{}
	_ pipeline.FetchHook        = stage{}
)

func (s stage) CheckPublish(m broker.Message) error { return s.c.CheckSize(m.Topic, len(m.Body)) }

func (s stage) OnPublish(ctx context.Context, p *pipeline.Publish) (context.Context, error) {
	if err := s.c.WaitPublish(ctx, p.Msg.Topic); err != nil {
		return ctx, err
	}
	return ctx, s.c.Breaker(p.Cluster).Allow()
}

func (s stage) OnPublished(_ context.Context, p *pipeline.Publish) {
	if p.Sent {
		s.c.Breaker(p.Cluster).Record(p.Err)
	}
}

func (s stage) OnFetch(ctx context.Context, group, topic string) (pipeline.Hold, error) {
	if err := s.c.WaitDelivery(ctx, group, topic); err != nil {
		return nil, err
	}
	p, err := s.c.WaitInflight(ctx, group, topic)
	if err != nil || p.s == nil {
		return nil, err // no bound: nothing to hold
	}
	return p, nil
}
