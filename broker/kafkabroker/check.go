package kafkabroker

import (
	"context"
	"fmt"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/msgmesh/msgmesh/broker"
)

var _ broker.Checker = (*Broker)(nil)

// Check implements broker.Checker with one ApiVersions round trip to the
// cluster over the client's pooled connections (metadata requests would
// not do: the transport answers them from its cache). ctx bounds it; a
// cluster that does not answer gives an error wrapping
// broker.ErrUnavailable.
func (b *Broker) Check(ctx context.Context) error {
	if b.isClosed() {
		return fmt.Errorf("kafkabroker: check: %w", broker.ErrClosed)
	}
	resp, err := b.client.ApiVersions(ctx, &kafka.ApiVersionsRequest{Addr: b.addr})
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return fmt.Errorf("kafkabroker: the cluster at %s does not answer: %w: %w", strings.Join(b.cfg.Brokers, ","), broker.ErrUnavailable, err)
	}
	return nil
}
