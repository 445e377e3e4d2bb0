package msgmesh

import (
	"context"
	"fmt"
	"github.com/msgmesh/msgmesh/observe"
	"net/http"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
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
	// A topic's own size limit can only be stricter than the sidecar's.
	if err := sc.cfg.Flow.CheckSize(m.Topic, len(m.Body)); err != nil {
		sc.metrics().Rejected(context.Background(), m.Topic, observe.ReasonOf(err))
		return nil, err
	}
	return sc.cfg.Brokers[cluster], nil
}

// publish validates a checked message against its topic's schema, sends it
// to its broker and waits for the ack. Nothing reaches the broker if the
// schema refuses it. contentType is how the body is encoded when no
// message header says it (an HTTP publish's own Content-Type); "" for none.
func (sc *Sidecar) publish(ctx context.Context, b broker.Broker, m *broker.Message, contentType string) (res broker.PublishResult, err error) {
	if ch := sc.chain; ch != nil {
		x := &stream.Exchange{Ctx: ctx, Kind: stream.ExchangePublish, Listener: "mesh", Protocol: "mesh",
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
	start := time.Now()
	if err = sc.validate(m, contentType); err != nil {
		sc.metrics().Rejected(ctx, m.Topic, "schema_invalid")
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, sc.cfg.PublishTimeout)
	defer cancel()
	cluster := sc.clusterOf(m.Topic)
	ctx, span := sc.cfg.Telemetry.TracePublish(ctx, m, cluster) // m is the sidecar's own copy
	// Over a topic's rate the publish waits within its deadline, or is
	// refused at once (per topic); while the cluster's breaker is open it
	// fails fast.
	if err = sc.cfg.Flow.WaitPublish(ctx, m.Topic); err == nil {
		br := sc.cfg.Flow.Breaker(cluster)
		if err = br.Allow(); err == nil {
			res, err = b.Publish(ctx, m)
			if err != nil && !broker.NotStored(err) {
				// The sidecar's own deadline, or anything the adapter
				// could not place: the broker may have stored it.
				err = broker.OutcomeUnknown(err)
			}
			br.Record(err)
			if err != nil {
				sc.metrics().BrokerError(ctx, cluster)
				sc.stats.errors.Add(1)
			}
		}
	}
	sc.cfg.Telemetry.EndPublish(span, m.Topic, res, err)
	sc.metrics().Published(ctx, m.Topic, len(m.Body), time.Since(start), err)
	if err != nil {
		return res, fmt.Errorf("msgmesh: publish to %q: %w", m.Topic, err)
	}
	sc.stats.published.Add(1)
	return res, nil
}
