package kafkabroker

import (
	"context"
	"net"
	"strconv"

	"github.com/segmentio/kafka-go"

	"github.com/msgmesh/msgmesh/broker"
)

var _ broker.SizeLimiter = (*Broker)(nil)

const (
	// defaultMessageMaxBytes is Kafka's default message.max.bytes: the
	// largest record batch a broker takes. New uses it when the cluster
	// does not tell its own.
	defaultMessageMaxBytes = 1048588
	// batchMargin is what a record batch holds beyond what the Writer
	// counts for its messages (Message.totalSize): the batch header (61
	// bytes) and a few bytes per record where Kafka's varints are longer
	// than kafka-go's estimate (timestamp and offset deltas) in a batch of
	// up to batchSize records. BatchBytes is message.max.bytes less this,
	// so no batch the Writer builds is refused by the broker.
	batchMargin = 61 + 3*batchSize + 64
	// messageOverhead is what the Writer counts for a message beyond its
	// key, value and headers (Message.size: lengths, attributes,
	// timestamp), plus the varint of the header count.
	messageOverhead = 22 + 5
)

// messageMaxBytes asks one broker of the cluster for its
// message.max.bytes. A cluster that does not answer (no permission to
// describe configs, say) is taken to have Kafka's default; ok reports
// whether it answered.
func (b *Broker) messageMaxBytes(ctx context.Context, md *kafka.MetadataResponse) (n int, ok bool) {
	if len(md.Brokers) == 0 {
		return defaultMessageMaxBytes, false
	}
	// A broker's configs are described by the broker itself.
	br := md.Brokers[0]
	id := strconv.Itoa(br.ID)
	res, err := b.client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{
		Addr: kafka.TCP(net.JoinHostPort(br.Host, strconv.Itoa(br.Port))),
		Resources: []kafka.DescribeConfigRequestResource{{
			ResourceType: kafka.ResourceTypeBroker, ResourceName: id, ConfigNames: []string{"message.max.bytes"},
		}},
	})
	if err != nil {
		b.log.Warn("cannot read the brokers' message.max.bytes; assuming Kafka's default", "default", defaultMessageMaxBytes, "error", err)
		return defaultMessageMaxBytes, false
	}
	for _, r := range res.Resources {
		if r.Error != nil {
			b.log.Warn("cannot read the brokers' message.max.bytes; assuming Kafka's default", "default", defaultMessageMaxBytes, "error", r.Error)
			return defaultMessageMaxBytes, false
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "message.max.bytes" {
				if v, err := strconv.Atoi(e.ConfigValue); err == nil && v > batchMargin {
					return v, true
				}
			}
		}
	}
	return defaultMessageMaxBytes, false
}

// MaxBody implements broker.SizeLimiter. A message goes to Kafka in a
// record batch no larger than the brokers' message.max.bytes, read when
// New connected (a topic's own max.message.bytes may be lower: such a
// refusal is reported as broker.ErrTooLarge). The Writer takes a message
// up to its BatchBytes as it counts it: key, value, each header's name and
// value with their varint lengths (at most 4 bytes a header for names and
// values under 8 KiB, which HeaderBytes counts, and 2 more per 8 KiB
// beyond), and messageOverhead.
func (b *Broker) MaxBody(headerBytes int) int {
	return int(b.writer.BatchBytes) - messageOverhead - headerBytes - headerBytes/4096
}
