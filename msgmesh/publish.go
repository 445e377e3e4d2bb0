package msgmesh

import (
	"context"
	"fmt"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/observe"
)

// checkPublish applies the checks every publish passes before it reaches
// the broker, whichever listener it came in on, and returns the broker the
// topic lives on. id is the app the publish acts as (identity.go); nil for
// an HTTP publish that names none.
func (sc *Sidecar) checkPublish(id *identity, m *broker.Message) (broker.Broker, error) {
	if sc.draining.Load() {
		return nil, ErrShuttingDown
	}
	cluster, err := sc.mayProduce(id, m.Topic)
	if err != nil {
		sc.metrics().Rejected(context.Background(), "", refusalReason(err))
		return nil, err
	}
	if err := sc.checkSize(m, cluster); err != nil {
		sc.metrics().Rejected(context.Background(), m.Topic, "message_too_big")
		return nil, err
	}
	// One header rule for every broker: nothing an app sets reaches a
	// broker as an instruction (broker.CheckHeaders).
	if err := broker.CheckHeaders(m.Headers); err != nil {
		sc.metrics().Rejected(context.Background(), m.Topic, "invalid_header")
		return nil, fmt.Errorf("msgmesh: publish to %q: %w", m.Topic, err)
	}
	// The stages' own checks (a topic's size limit, flowctl), before
	// anything is queued.
	if err := sc.pipe.CheckPublish(m); err != nil {
		sc.metrics().Rejected(context.Background(), m.Topic, observe.ReasonOf(err))
		return nil, err
	}
	return sc.cfg.Brokers[cluster], nil
}

// publish sends a checked message to its broker through the pipeline's
// stages (schema validation, tracing, flow control, metrics: the order
// is in New) and waits for the ack. Nothing reaches the broker if a stage
// refuses it. contentType is how the body is encoded when no message
// header says it (an HTTP publish's own Content-Type); "" for none.
func (sc *Sidecar) publish(ctx context.Context, b broker.Broker, m *broker.Message, contentType string) (broker.PublishResult, error) {
	ctx, cancel := context.WithTimeout(ctx, sc.cfg.PublishTimeout)
	defer cancel()
	res, err := sc.pipe.Publish(ctx, m, sc.clusterOf(m.Topic), contentType, func(ctx context.Context) (broker.PublishResult, error) {
		res, err := b.Publish(ctx, m)
		if err != nil {
			sc.stats.errors.Add(1)
			if !broker.NotStored(err) {
				// The sidecar's own deadline, or anything the adapter
				// could not place: the broker may have stored it.
				err = broker.OutcomeUnknown(err)
			}
		}
		return res, err
	})
	if err != nil {
		return res, fmt.Errorf("msgmesh: publish to %q: %w", m.Topic, err)
	}
	sc.stats.published.Add(1)
	return res, nil
}
