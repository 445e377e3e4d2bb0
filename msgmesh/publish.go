package msgmesh

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/msgmesh/msgmesh/core"

	"github.com/msgmesh/msgmesh/msgmesh/broker"
)

// checkPublish applies the checks every publish passes before it reaches
// the broker, whichever listener it came in on, and returns the broker the
// topic lives on.
func (sc *Sidecar) checkPublish(m *broker.Message) (broker.Broker, error) {
	if sc.draining.Load() {
		return nil, ErrShuttingDown
	}
	cluster, ok := sc.snap.Load().produce[m.Topic]
	if !ok {
		return nil, fmt.Errorf("%w: topic %q is not produced by any registration (register it with POST /v1/registrations)", ErrNotRegistered, m.Topic)
	}
	if len(m.Body) > sc.cfg.MaxMessageSize {
		return nil, fmt.Errorf("%w: body of %d bytes exceeds the limit of %d bytes", ErrMessageTooBig, len(m.Body), sc.cfg.MaxMessageSize)
	}
	return sc.cfg.Brokers[cluster], nil
}

// publish validates a checked message against its topic's schema, sends it
// to its broker and waits for the ack. Nothing reaches the broker if the
// schema refuses it.
func (sc *Sidecar) publish(ctx context.Context, b broker.Broker, m *broker.Message) (res broker.PublishResult, err error) {
	if ch := sc.chain; ch != nil {
		x := &core.Exchange{Ctx: ctx, Kind: core.ExchangePublish, Listener: "mesh", Protocol: "mesh",
			Route: m.Topic, Target: m.Topic, Cluster: sc.clusterOf(m.Topic), ReqBytes: len(m.Body), Start: time.Now()}
		passed, ferr := ch.OnRequest(x)
		defer func() {
			x.Err = err
			x.Status = http.StatusOK
			if err != nil {
				x.Status = httpStatus(codeOf(err))
			}
			ch.OnResponse(x, passed)
		}()
		if ferr != nil {
			return res, fmt.Errorf("msgmesh: publish to %q: %w", m.Topic, ferr)
		}
	}
	if err = sc.validate(m); err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, sc.cfg.PublishTimeout)
	defer cancel()
	if res, err = b.Publish(ctx, m); err != nil {
		return res, fmt.Errorf("msgmesh: publish to %q: %w", m.Topic, err)
	}
	return res, nil
}
