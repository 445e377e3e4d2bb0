package natsbroker

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/msgmesh/msgmesh/broker"
)

var _ broker.Checker = (*Broker)(nil)

// Check implements broker.Checker: the connection must be up (while the
// client reconnects it answers at once, with the state and the last
// connection error), JetStream must answer an account info request
// within ctx, and Config.Embedded, if set, must pass its own Check. Errors wrap
// broker.ErrUnavailable when the broker cannot be reached.
func (b *Broker) Check(ctx context.Context) error {
	if b.isClosed() {
		return fmt.Errorf("natsbroker: check: %w", broker.ErrClosed)
	}
	if st := b.nc.Status(); st != nats.CONNECTED {
		if last := b.nc.LastError(); last != nil {
			return fmt.Errorf("natsbroker: not connected (%s; last error: %v): %w", st, last, broker.ErrUnavailable)
		}
		return fmt.Errorf("natsbroker: not connected (%s): %w", st, broker.ErrUnavailable)
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return wrap("check JetStream", err)
	}
	if e := b.cfg.Embedded; e != nil {
		return e.Check(ctx)
	}
	return nil
}
