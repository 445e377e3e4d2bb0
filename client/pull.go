package client

import (
	"context"
	"fmt"
	"math"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// Pull wait bounds.
const (
	defaultPullWait = 5 * time.Second
	maxPullWait     = 60 * time.Second
)

// Pull asks the sidecar for up to max messages of (group, topic), waiting
// for the first one until shortly before ctx's deadline (5s when ctx has
// none; at most 60s). It may return no deliveries. The first Pull of a
// pair declares it in pull mode (an *Error with mesh.CodeNotRegistered if
// no registration consumes it); the declaration stays for the Client's
// life and survives reconnects. A pair subscribed with Subscribe cannot be
// pulled. Settle each delivery with Ack or Nack. With tracing on
// (WithTracerProvider) each delivery has a "process <topic>" span in its
// Context, child of the producer's trace and linked to ctx's span, which
// Ack or Nack ends (a delivery never settled leaves its span unended).
func (c *Client) Pull(ctx context.Context, group, topic string, max int) ([]*Delivery, error) {
	if group == "" || topic == "" {
		return nil, fmt.Errorf("%w: Pull needs a group and a topic", errInvalidArg)
	}
	if max <= 0 {
		return nil, fmt.Errorf("%w: Pull max %d: must be at least 1", errInvalidArg, max)
	}
	k := subKey{group, topic}
	if e, ok := (*c.routes.Load())[k]; !ok || e.mode != mesh.ModePull {
		if err := c.addDecl(ctx, k, declEntry{mode: mesh.ModePull}); err != nil {
			return nil, err
		}
	}
	cn, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	req := mesh.Pull{Group: group, Topic: topic, Max: uint32(min(int64(max), math.MaxUint32)), WaitMillis: pullWait(ctx)}
	_, ch, err := cn.Start(mesh.KindPull, &req)
	if err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		if err := answerErr(r.Val, mesh.KindPullResult); err != nil {
			return nil, err
		}
		var res mesh.PullResult
		if err := res.Decode(r.Val.Payload); err != nil {
			return nil, fmt.Errorf("%w: %w", errUnexpected, err)
		}
		ds := make([]*Delivery, len(res.Messages))
		for i := range res.Messages {
			ds[i] = newDelivery(cn, res.Messages[i].DeliveryID, &res.Messages[i])
			c.tracePulled(ctx, ds[i])
		}
		return ds, nil
	case <-ctx.Done():
	}
	// Nobody will take what the sidecar sends now: nack it when it comes,
	// so it does not sit in flight until the sidecar's timeout.
	c.routines.Go(func() {
		r := <-ch
		if r.Err != nil || r.Val.Kind != mesh.KindPullResult {
			return
		}
		var res mesh.PullResult
		if res.Decode(r.Val.Payload) != nil {
			return
		}
		for i := range res.Messages {
			_ = newDelivery(cn, res.Messages[i].DeliveryID, &res.Messages[i]).Nack(context.Background(), 0)
		}
	})
	return nil, ctx.Err()
}

// tracePulled starts the "process" span of a pulled delivery: a child of
// the producer's trace context in its headers, linked to the span of
// Pull's ctx, under Pull's ctx values without its cancellation. Ack or
// Nack ends it.
func (c *Client) tracePulled(ctx context.Context, d *Delivery) {
	var links []trace.Link
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		links = []trace.Link{{SpanContext: sc}}
	}
	pctx, span := c.startProcess(context.WithoutCancel(ctx), d, links)
	if span != nil {
		d.ctx, d.span, d.endOnSettle = pctx, span, true
	}
}

// pullWait is the long-poll wait for ctx: its time left less a margin for
// the answer to arrive (a tenth, at most a second), capped at 60s.
func pullWait(ctx context.Context) uint32 {
	dl, ok := ctx.Deadline()
	if !ok {
		return uint32(defaultPullWait / time.Millisecond)
	}
	left := time.Until(dl)
	left -= min(left/10, time.Second)
	if left <= 0 {
		return 0
	}
	return uint32(min(left, maxPullWait) / time.Millisecond)
}
