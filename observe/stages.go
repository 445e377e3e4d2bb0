package observe

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/pipeline"
)

// MetricsStage returns the pipeline stage (package pipeline) that counts
// what passes the sidecar; nil for a nil *Telemetry. The sidecar puts it
// first, outermost, so it sees every outcome, refusals by the later
// stages included:
//
//   - OnPublished: Metrics.Published with the outcome (a refusal that
//     carries a Reason counts in msgmesh_rejected_total), and
//     Metrics.BrokerError when the broker failed it;
//   - OnDeliver: Deliver, which counts the delivery now and its
//     settlement later, and traces it when tracing is on.
func (t *Telemetry) MetricsStage() pipeline.Stage {
	if t == nil {
		return nil
	}
	return metricsStage{t}
}

type metricsStage struct{ t *Telemetry }

var (
	_ pipeline.PublishedHook = metricsStage{}
	_ pipeline.DeliverHook   = metricsStage{}
)

func (s metricsStage) OnPublished(ctx context.Context, p *pipeline.Publish) {
	m := s.t.Metrics
	m.Published(ctx, p.Msg.Topic, len(p.Msg.Body), time.Since(p.Start), p.Err)
	if p.Err != nil && p.Sent {
		m.BrokerError(ctx, p.Cluster)
	}
}

func (s metricsStage) OnDeliver(d broker.Delivery, group string) broker.Delivery {
	return s.t.Deliver(d, group)
}

// TracingStage returns the pipeline stage that traces publishes: the
// "send <topic>" span (TracePublish), started just before flow control
// so that it covers a wait for the topic's rate, the breaker and the
// broker call, and ended with the outcome (EndPublish). nil when tracing
// is off, so an untraced sidecar does not pass it at all.
func (t *Telemetry) TracingStage() pipeline.Stage {
	if !t.Tracing() {
		return nil
	}
	return tracingStage{t}
}

type tracingStage struct{ t *Telemetry }

var (
	_ pipeline.PublishHook   = tracingStage{}
	_ pipeline.PublishedHook = tracingStage{}
)

func (s tracingStage) OnPublish(ctx context.Context, p *pipeline.Publish) (context.Context, error) {
	ctx, _ = s.t.TracePublish(ctx, p.Msg, p.Cluster) // p.Msg is the sidecar's own copy
	return ctx, nil
}

// OnPublished ends the span OnPublish put in ctx: the stages after this
// one (flow control) add no span of their own.
func (s tracingStage) OnPublished(ctx context.Context, p *pipeline.Publish) {
	s.t.EndPublish(trace.SpanFromContext(ctx), p.Msg.Topic, p.Result, p.Err)
}
