package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"

	"github.com/msgmesh/msgmesh/internal/rmqtest"
	"github.com/msgmesh/msgmesh/topology"
)

// startRocketMQ runs the in-process RocketMQ test broker (name server and
// broker on loopback TCP, data in memory, 4 queues a topic).
func startRocketMQ() (*setup, error) {
	rlog.SetLogger(quietRlog{}) // the sidecar's adapter installs its own quiet bridge later
	b, err := rmqtest.Start(rmqtest.Config{})
	if err != nil {
		return nil, err
	}
	ns := b.NameServer()
	return &setup{
		cluster: topology.Cluster{Name: "bench", Kind: topology.KindRocketMQ, Endpoints: []string{ns}},
		direct: func(_ context.Context, topic string) (path, func(), error) {
			return newRocketDirect(ns, topic)
		},
		close: func() { _ = b.Close() },
	}, nil
}

// rocketDirect is the RocketMQ baseline: rocketmq-client-go's producer
// (SendSync, called from a window of goroutines) and push consumer.
type rocketDirect struct {
	p     rocketmq.Producer
	ns    string
	topic string
}

var rocketInstances atomic.Int64

func newRocketDirect(ns, topic string) (path, func(), error) {
	p, err := producer.NewDefaultProducer(
		producer.WithNameServer([]string{ns}),
		producer.WithGroupName("bench-direct-producer"),
		producer.WithInstanceName(fmt.Sprintf("bench-direct-%d", rocketInstances.Add(1))),
		producer.WithRetry(0),
	)
	if err != nil {
		return nil, nil, err
	}
	if err := p.Start(); err != nil {
		return nil, nil, err
	}
	return &rocketDirect{p: p, ns: ns, topic: topic}, func() { _ = p.Shutdown() }, nil
}

func (d *rocketDirect) publishAsync(ctx context.Context, body []byte, done func(error)) {
	go func() { done(d.publish(ctx, body)) }()
}

// publish sends one message; like the sidecar's adapter, it tries again
// after the client's "route info not found" (nothing was sent: on a new
// topic the client's route cache is filled while the first sends of the
// window look it up, and one of them can miss it).
func (d *rocketDirect) publish(ctx context.Context, body []byte) error {
	backoff := 20 * time.Millisecond
	r, err := d.p.SendSync(ctx, primitive.NewMessage(d.topic, body))
	for err != nil && strings.Contains(err.Error(), "route info not found") {
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
		r, err = d.p.SendSync(ctx, primitive.NewMessage(d.topic, body))
	}
	if err != nil {
		return err
	}
	if r.Status != primitive.SendOK {
		return fmt.Errorf("send status %d", r.Status)
	}
	return nil
}

// consume reads the backlog with a push consumer from the first offset;
// returning ConsumeSuccess acks (advances the group's offset).
func (d *rocketDirect) consume(ctx context.Context, n int) error {
	c, err := consumer.NewPushConsumer(
		consumer.WithNameServer([]string{d.ns}),
		consumer.WithGroupName("g-"+d.topic),
		consumer.WithInstance(fmt.Sprintf("bench-direct-%d", rocketInstances.Add(1))),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
	)
	if err != nil {
		return err
	}
	var (
		count int
		mu    sync.Mutex
		once  sync.Once
		all   = make(chan struct{})
	)
	err = c.Subscribe(d.topic, consumer.MessageSelector{}, func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		mu.Lock()
		count += len(msgs)
		if count >= n {
			once.Do(func() { close(all) })
		}
		mu.Unlock()
		return consumer.ConsumeSuccess, nil
	})
	if err != nil {
		return err
	}
	if err := c.Start(); err != nil {
		return err
	}
	defer func() { _ = c.Shutdown() }()
	select {
	case <-all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// quietRlog discards rocketmq-client-go's log.
type quietRlog struct{}

func (quietRlog) Debug(string, map[string]interface{})   {}
func (quietRlog) Info(string, map[string]interface{})    {}
func (quietRlog) Warning(string, map[string]interface{}) {}
func (quietRlog) Error(string, map[string]interface{})   {}
func (quietRlog) Fatal(string, map[string]interface{})   {}
func (quietRlog) Level(string)                           {}
func (quietRlog) OutputPath(string) error                { return nil }
