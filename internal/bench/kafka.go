package bench

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/msgmesh/msgmesh/topology"
)

// startKafka runs an in-process kfake cluster (one broker, the Kafka wire
// protocol on loopback TCP, data in memory) with every bench topic seeded
// with one partition, so both paths write to the same shape of topic.
func startKafka() (*setup, error) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, allTopics...))
	if err != nil {
		return nil, err
	}
	addrs := c.ListenAddrs()
	return &setup{
		cluster: topology.Cluster{Name: "bench", Kind: topology.KindKafka, Endpoints: addrs},
		direct: func(_ context.Context, topic string) (path, func(), error) {
			d := newKafkaDirect(addrs, topic)
			return d, func() { _ = d.w.Close(); _ = d.r.Close() }, nil
		},
		close: c.Close,
	}, nil
}

// kafkaDirect is the Kafka baseline: segmentio/kafka-go straight to the
// cluster. The Writer is asynchronous, acks=all, and reports each message
// through Completion (the message's WriterData is its callback), batching
// like the sidecar's adapter does (100 messages or 1 ms).
type kafkaDirect struct {
	w *kafka.Writer
	r *kafka.Reader
}

func newKafkaDirect(addrs []string, topic string) *kafkaDirect {
	w := &kafka.Writer{
		Addr:         kafka.TCP(addrs...),
		Topic:        topic,
		Balancer:     &kafka.LeastBytes{},
		BatchSize:    100,
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll,
		Async:        true,
		Completion: func(msgs []kafka.Message, err error) {
			for _, m := range msgs {
				if f, ok := m.WriterData.(func(error)); ok {
					f(err)
				}
			}
		},
	}
	// The Reader joins its group in the background from here on, like the
	// sidecar's consumer does from the app's registration: neither path's
	// consume phase pays for the group join.
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:           addrs,
		GroupID:           "g-" + topic,
		Topic:             topic,
		StartOffset:       kafka.FirstOffset,
		MinBytes:          1,
		MaxBytes:          4 << 20,
		MaxWait:           500 * time.Millisecond,
		ReadLagInterval:   -1,
		HeartbeatInterval: time.Second,
		CommitInterval:    0,
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  10 * time.Second,
		JoinGroupBackoff:  time.Second,
	})
	return &kafkaDirect{w: w, r: r}
}

func (d *kafkaDirect) publishAsync(ctx context.Context, body []byte, done func(error)) {
	if err := d.w.WriteMessages(ctx, kafka.Message{Value: body, WriterData: done}); err != nil {
		done(err)
	}
}

func (d *kafkaDirect) publish(ctx context.Context, body []byte) error {
	ch := make(chan error, 1)
	d.publishAsync(ctx, body, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// consume reads the backlog with the consumer-group Reader (from the first
// offset), committing every 100 messages (synchronous commits).
func (d *kafkaDirect) consume(ctx context.Context, n int) error {
	r := d.r
	batch := make([]kafka.Message, 0, 100)
	for i := 0; i < n; i++ {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return err
		}
		batch = append(batch, m)
		if len(batch) == cap(batch) || i == n-1 {
			if err := r.CommitMessages(ctx, batch...); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}
