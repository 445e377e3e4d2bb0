package rocketmqbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	rmqconsumer "github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/internal/sendq"
)

// Compile-time checks that the adapter implements the contract.
var (
	_ broker.Broker           = (*Broker)(nil)
	_ broker.Consumer         = (*consumer)(nil)
	_ broker.Delivery         = (*delivery)(nil)
	_ broker.GroupNameChecker = (*Broker)(nil)
)

// Defaults applied by New to zero Config fields.
const (
	DefaultGroupPrefix = "MESH_"
	DefaultRetries     = 2
	DefaultPrefetch    = 128
	// DefaultAckWait is used when ConsumerSpec.AckWait is zero.
	DefaultAckWait = 60 * time.Second
	// MaxReconsumeTimes is the reconsume limit the adapter's consumers
	// give the broker: how often a message is sent back (Nack, AckWait
	// expiry) before RocketMQ moves it to the group's own dead-letter
	// topic %DLQ%<group> instead. The sidecar ends a poison message
	// itself, after at most 1000 attempts (its highest max_attempts), on
	// the binding's dead-letter topic; this limit is above that, so
	// RocketMQ's mechanism never takes a message first. It is only a
	// backstop for a message the sidecar failed to dead-letter another
	// 16 times (RocketMQ's own default count) after that.
	MaxReconsumeTimes = 1000 + 16
)

// producerGroupSuffix names the producer group: GroupPrefix + "PRODUCER".
// RocketMQ uses producer groups only for transactions, which the adapter
// does not use.
const producerGroupSuffix = "PRODUCER"

// Config configures New. Only NameServers is required.
type Config struct {
	// NameServers are the name servers, "host:port" each. Host names are
	// resolved at New (the client accepts only IP addresses). Required.
	NameServers []string
	// GroupPrefix starts every group name the adapter uses: the producer
	// group (GroupPrefix + "PRODUCER") and the consumer groups (see the
	// package doc). Letters, digits, '_' and '-'.
	// Zero: DefaultGroupPrefix ("MESH_").
	GroupPrefix string
	// Retries is how often Publish retries a send that failed (a send
	// that timed out may then be stored twice).
	// Zero: DefaultRetries (2). Negative: no retries.
	Retries int
	// Prefetch is the default of ConsumerSpec.Prefetch. Zero:
	// DefaultPrefetch (128). It sets the pull batch (pullBatch); see the
	// package doc for what a consumer holds.
	Prefetch int
	// Logger receives the adapter's warnings and, at debug level, the
	// RocketMQ client's own log (see installClientLogger).
	// Zero: slog.Default().
	Logger *slog.Logger
	// MaxMessageSize is the brokers' maxMessageSize, the largest body
	// they store; the client cannot ask them, so set it when the brokers
	// are configured otherwise. Zero: DefaultMaxMessageSize (4 MiB,
	// RocketMQ's default).
	MaxMessageSize int
	// MaxBatch is the most publishes to one queue that Publish sends as
	// one request (SEND_BATCH_MESSAGE) when they wait for the queue's
	// request in flight (batch.go). Zero: DefaultMaxBatch (64). One or
	// negative: every publish is a request of its own, sent at once.
	MaxBatch int
}

func (c Config) validate() error {
	var errs []error
	if len(c.NameServers) == 0 {
		errs = append(errs, errors.New("NameServers is required"))
	}
	for _, a := range c.NameServers {
		host, port, err := net.SplitHostPort(strings.TrimSpace(a))
		if err != nil || host == "" {
			errs = append(errs, fmt.Errorf("name server %q: want host:port", a))
			continue
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("name server %q: bad port", a))
		}
	}
	for i := 0; i < len(c.GroupPrefix); i++ {
		if !nameByte(c.GroupPrefix[i]) {
			errs = append(errs, fmt.Errorf("GroupPrefix %q: only letters, digits, '_' and '-' are allowed", c.GroupPrefix))
			break
		}
	}
	if len(c.GroupPrefix) > 32 {
		errs = append(errs, fmt.Errorf("GroupPrefix %q is longer than 32 bytes", c.GroupPrefix))
	}
	if c.Prefetch < 0 {
		//lint:ignore ST1005 the message starts with the Config field it is about
		errs = append(errs, fmt.Errorf("Prefetch %d is negative", c.Prefetch))
	}
	if c.MaxMessageSize < 0 {
		errs = append(errs, fmt.Errorf("MaxMessageSize %d is negative", c.MaxMessageSize))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.GroupPrefix == "" {
		c.GroupPrefix = DefaultGroupPrefix
	}
	switch {
	case c.Retries == 0:
		c.Retries = DefaultRetries
	case c.Retries < 0:
		c.Retries = 0
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	switch {
	case c.MaxBatch == 0:
		c.MaxBatch = DefaultMaxBatch
	case c.MaxBatch < 1:
		c.MaxBatch = 1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Broker is one RocketMQ cluster. It is safe for concurrent use.
type Broker struct {
	cfg         Config   // defaults applied; read-only after New
	nameServers []string // resolved to IP:port
	producer    *producerHandle
	sel         *javaHashSelector                                         // the producer's; picks queues for batches
	batcher     *sendq.Batcher[*primitive.Message, *primitive.SendResult] // batch.go
	log         *slog.Logger

	// open: closed or not, and the consumers Close closes.
	open broker.Open[*consumer]
	// wg tracks the shutdowns of consumers closed with deliveries
	// outstanding (see consumer.Close).
	wg sync.WaitGroup

	// hmu guards inherited: queues a predecessor process handed over
	// (handover.go) until a consumer claims them; inheriting counts them,
	// so that a consumer checks without the lock when there are none. A
	// leaf lock.
	hmu        sync.Mutex
	inherited  map[queueKey]*inheritance
	inheriting atomic.Int32
}

// producerHandle is the part of the client's producer the adapter uses.
type producerHandle struct {
	p interface {
		SendSync(ctx context.Context, msgs ...*primitive.Message) (*primitive.SendResult, error)
		Shutdown() error
	}
}

// New validates cfg, resolves the name servers, checks that at least one
// answers as a RocketMQ name server, and starts the producer. ctx bounds
// the checks (DefaultProbeTimeout when it has no earlier deadline). No
// name server answering gives an error wrapping broker.ErrUnavailable.
func New(ctx context.Context, cfg Config) (*Broker, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("rocketmqbroker: config: %w", err)
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("broker", "rocketmq")
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rocketmqbroker: new: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, DefaultProbeTimeout)
	defer cancel()
	addrs, err := resolveNameServers(pctx, cfg.NameServers)
	if err != nil {
		return nil, fmt.Errorf("rocketmqbroker: resolve name servers: %w: %w", broker.ErrUnavailable, err)
	}
	answered, err := probeAll(pctx, addrs)
	if err != nil {
		return nil, fmt.Errorf("rocketmqbroker: no RocketMQ name server answers at %s (is the name server running and reachable?): %w: %w",
			strings.Join(cfg.NameServers, ","), broker.ErrUnavailable, err)
	}
	if len(answered) < len(addrs) {
		log.Warn("some name servers do not answer; the client tries them in turn", "answered", answered, "configured", addrs)
	}
	installClientLogger(log)
	sel := newJavaHashSelector()
	p, err := producer.NewDefaultProducer(
		producer.WithNameServer(addrs),
		producer.WithGroupName(cfg.GroupPrefix+producerGroupSuffix),
		producer.WithInstanceName(instanceName("p")),
		// Publish retries (outcome.go): it must see every attempt's
		// error, and the client reports only the last one.
		producer.WithRetry(0),
		producer.WithQueueSelector(sel),
	)
	if err != nil {
		return nil, fmt.Errorf("rocketmqbroker: create producer: %w", err)
	}
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("rocketmqbroker: start producer: %w", err)
	}
	b := &Broker{
		cfg:         cfg,
		nameServers: addrs,
		producer:    &producerHandle{p: p},
		sel:         sel,
		log:         log,
	}
	b.batcher = sendq.New(sendq.Sender[*primitive.Message, *primitive.SendResult](sender{b}), sendq.Limits{MaxMsgs: cfg.MaxBatch, MaxBytes: maxBatchBytes})
	return b, nil
}

// DefaultProbeTimeout bounds New's name server check.
const DefaultProbeTimeout = defaultProbeTimeout

var instanceSeq atomic.Uint64

// instanceName is a client instance name unique to this process and
// call: every producer and consumer gets a client of its own (the client
// shares one per instance name), so closing a consumer closes its
// connections, and the broker gives its queues to the group's other
// members at once.
func instanceName(kind string) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("msgmesh-%s-%d-%d-%s", kind, os.Getpid(), instanceSeq.Add(1), hex.EncodeToString(r[:]))
}

func (b *Broker) isClosed() bool { return b.open.Closed() }

// Publish sends msg to its topic's RocketMQ topic (see the package doc)
// and returns after the broker answered SEND_OK. Messages with the same key
// go to the same queue. ctx bounds the call; each attempt also has the
// client's own 3 s timeout. An error wraps broker.ErrOutcomeUnknown when an
// attempt may have stored the message (see the package doc).
func (b *Broker) Publish(ctx context.Context, msg *broker.Message) (broker.PublishResult, error) {
	res := broker.PublishResult{Partition: -1}
	if err := broker.CheckPublish(ctx, "rocketmqbroker", &b.open, msg, checkTopic); err != nil {
		return res, err
	}
	topic := msg.Topic
	rm, propsLen, err := toRocket(msg, rocketTopic(topic))
	if err != nil {
		if !errors.Is(err, broker.ErrRejected) { // a *broker.HeaderError
			err = fmt.Errorf("%w: %w", broker.ErrRejected, err)
		}
		return res, fmt.Errorf("rocketmqbroker: publish %q: %w", topic, err)
	}
	sr, idx, maybeStored, err := b.sendMessage(ctx, rm, batchSize(len(rm.Body), propsLen))
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && cerr != err {
			err = fmt.Errorf("%w (client: %v)", cerr, err)
		}
		if maybeStored {
			return res, fmt.Errorf("rocketmqbroker: publish %q: %w: %w", topic, broker.ErrOutcomeUnknown, err)
		}
		return res, b.opError("publish", topic, err)
	}
	if sr.Status != primitive.SendOK {
		// FLUSH_DISK_TIMEOUT, FLUSH_SLAVE_TIMEOUT, SLAVE_NOT_AVAILABLE: the
		// master stored the message but could not make it as durable as
		// it is configured to (SYNC_FLUSH, SYNC_MASTER) in time. It will
		// most likely be delivered; a crash of the master may lose it, and
		// a retry may store it twice. That is an unknown outcome, not a
		// success and not "not stored".
		return res, fmt.Errorf("rocketmqbroker: publish %q: %w: the broker stored the message in queue %s but answered %s: it is not known to be durable, and a retry may store it twice",
			topic, broker.ErrOutcomeUnknown, queueOf(sr), sendStatusName(sr.Status))
	}
	if sr.MessageQueue != nil {
		res.Stream = sr.MessageQueue.Topic
		res.Partition = int32(sr.MessageQueue.QueueId)
	}
	res.Offset = sr.QueueOffset + int64(idx)
	res.MessageID = rm.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex)
	return res, nil
}

// sendMessage sends rm, of size (batchSize), with the publishes waiting
// for its queue when it can (batch.go), else alone. It returns the result
// of the request that stored rm and rm's place in it.
func (b *Broker) sendMessage(ctx context.Context, rm *primitive.Message, size int) (sr *primitive.SendResult, idx int, maybeStored bool, err error) {
	if b.cfg.MaxBatch > 1 && len(rm.Body) < batchableBody {
		if mq, q := b.sel.pick(rm); q != nil {
			rm.Queue = mq
			r := b.batcher.Send(ctx, q, rm, size)
			if !r.Tried {
				return r.R, r.Idx, r.MaybeStored, r.Err
			}
			// The attempt that carried rm failed: rm goes on alone.
			err = r.Err
		}
	}
	sr, maybeStored, err = b.send(ctx, rm, err)
	return sr, 0, maybeStored, err
}

// sendStatusName is the broker's name for a send status.
func sendStatusName(s primitive.SendStatus) string {
	switch s {
	case primitive.SendOK:
		return "SEND_OK"
	case primitive.SendFlushDiskTimeout:
		return "FLUSH_DISK_TIMEOUT"
	case primitive.SendFlushSlaveTimeout:
		return "FLUSH_SLAVE_TIMEOUT"
	case primitive.SendSlaveNotAvailable:
		return "SLAVE_NOT_AVAILABLE"
	}
	return fmt.Sprintf("status %d", s)
}

// queueOf says where a send result put the message: "topic/queue@offset".
func queueOf(sr *primitive.SendResult) string {
	if sr.MessageQueue == nil {
		return "?"
	}
	return fmt.Sprintf("%s/%d@%d", sr.MessageQueue.Topic, sr.MessageQueue.QueueId, sr.QueueOffset)
}

// opError formats an error of op on topic; after Close every error is
// reported as broker.ErrClosed.
func (b *Broker) opError(op, topic string, err error) error {
	if b.isClosed() {
		return fmt.Errorf("rocketmqbroker: %s %q: %w: %w", op, topic, broker.ErrClosed, err)
	}
	return wrap(fmt.Sprintf("%s %q", op, topic), err)
}

// Consume starts a consumer of spec.Group on spec.Topic: a RocketMQ pull
// consumer of the group's RocketMQ consumer group (see the package doc),
// clustering mode, starting a new group at the oldest message. It returns
// once the client has the topic's route and has registered with the
// broker; the client's own timeouts bound that (a few seconds per name
// server). Queues are assigned right after.
func (b *Broker) Consume(ctx context.Context, spec broker.ConsumerSpec) (broker.Consumer, error) {
	topic := spec.Topic
	if err := checkGroup(spec.Group); err != nil {
		return nil, fmt.Errorf("rocketmqbroker: consume %q: %w: %w", topic, broker.ErrRejected, err)
	}
	if err := checkTopic(topic); err != nil {
		return nil, fmt.Errorf("rocketmqbroker: consume %q: %w: %w", topic, broker.ErrRejected, err)
	}
	rgroup := consumerGroup(b.cfg.GroupPrefix, spec.Group, topic)
	if spec.BrokerGroup != "" {
		if err := b.CheckBrokerGroup(spec.BrokerGroup); err != nil {
			return nil, fmt.Errorf("rocketmqbroker: consume %q: %w: %w", topic, broker.ErrRejected, err)
		}
		rgroup = spec.BrokerGroup
	}
	switch {
	case spec.AckWait < 0:
		return nil, fmt.Errorf("rocketmqbroker: consume %q: %w: negative AckWait", topic, broker.ErrRejected)
	case spec.Prefetch < 0:
		return nil, fmt.Errorf("rocketmqbroker: consume %q: %w: negative Prefetch", topic, broker.ErrRejected)
	}
	prefetch := spec.Prefetch
	if prefetch == 0 {
		prefetch = b.cfg.Prefetch
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rocketmqbroker: consume %q: %w", topic, err)
	}
	if b.isClosed() {
		return nil, fmt.Errorf("rocketmqbroker: consume %q: %w", topic, broker.ErrClosed)
	}
	c := &consumer{
		b:           b,
		topic:       topic,
		rtopic:      rocketTopic(topic),
		group:       spec.Group,
		rgroup:      rgroup,
		ackWait:     spec.AckWait,
		outstanding: make(map[*delivery]struct{}),
		handedNext:  make(map[queueKey]int64),
		again:       make(map[*delivery]int),
		returned:    make(map[*delivery]struct{}),
		sendingBack: make(map[*batch]struct{}),
		inh:         make(map[queueKey]*inheritance),
		shutDone:    make(chan struct{}),
	}
	if c.ackWait == 0 {
		c.ackWait = DefaultAckWait
	}
	c.log = b.log.With("group", c.rgroup, "topic", c.rtopic)
	batch := pullBatch(prefetch)
	pc, err := rmqconsumer.NewPullConsumer(
		rmqconsumer.WithNameServer(b.nameServers),
		rmqconsumer.WithGroupName(c.rgroup),
		rmqconsumer.WithInstance(instanceName("c")),
		rmqconsumer.WithConsumerModel(rmqconsumer.Clustering),
		rmqconsumer.WithConsumeFromWhere(rmqconsumer.ConsumeFromFirstOffset),
		// A pull brings up to a batch (pullBatch); each queue buffers
		// pullBuffer of them, which bounds what the consumer holds
		// (package doc, Prefetch).
		rmqconsumer.WithPullBatchSize(batch),
		rmqconsumer.WithPullBuffer(pullBuffer(batch)),
		// The pull consumer's default is 0, which sends every nacked
		// message straight to the dead-letter topic; RocketMQ's usual 16
		// would move poison messages to %DLQ%<group> before the sidecar's
		// own policy could (see MaxReconsumeTimes).
		rmqconsumer.WithMaxReconsumeTimes(MaxReconsumeTimes),
	)
	if err != nil {
		return nil, b.opError("consume", topic, err)
	}
	// No Shutdown after a failed Subscribe or Start: the client shuts
	// itself down when Start fails after starting (no route), and panics
	// when asked to shut down a consumer that never started.
	// The group's tag filter is its subscription expression: the broker
	// filters (by tag hash), and the client checks the tags again.
	if err := pc.Subscribe(c.rtopic, rmqconsumer.MessageSelector{Type: rmqconsumer.TAG, Expression: spec.Tags.String()}); err != nil {
		return nil, b.opError("consume", topic, err)
	}
	if err := pc.Start(); err != nil {
		return nil, b.opError("consume", topic, fmt.Errorf("start consumer group %s: %w", c.rgroup, err))
	}
	c.pc = pc
	if !b.open.Add(c, nil) {
		c.forceClose()
		return nil, fmt.Errorf("rocketmqbroker: consume %q: %w", topic, broker.ErrClosed)
	}
	c.log.Debug("consumer started")
	return c, nil
}

// FiltersTags reports that RocketMQ filters a consumer's messages by its
// ConsumerSpec.Tags itself (broker.TagFiltering).
func (b *Broker) FiltersTags() bool { return true }

func (b *Broker) removeConsumer(c *consumer) { b.open.Remove(c) }

// goShutdown shuts c down on a goroutine that Close waits for.
func (b *Broker) goShutdown(c *consumer) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		c.shutdown()
	}()
}

// Close shuts down every consumer still open, at once (acks of their
// outstanding deliveries then fail, and those messages are redelivered),
// waits for consumers finishing a Close, and stops the producer.
// Idempotent.
func (b *Broker) Close() error {
	open, first := b.open.Close()
	if !first {
		return nil
	}
	for _, c := range open {
		c.forceClose()
	}
	b.wg.Wait()
	return b.producer.p.Shutdown()
}

// isNoRoute reports the client's "route info not found" error; the client
// has no error value for it, only this text.
func isNoRoute(err error) bool {
	return strings.Contains(err.Error(), "route info not found")
}

// maxPullBatch is the most messages one pull asks for: what a RocketMQ
// broker answers at most (maxTransferCountOnMessageInMemory, 32 by
// default), so a larger batch would not bring more.
const maxPullBatch = 32

// pullBatch is the pull batch size for a consumer's Prefetch: a quarter
// of it, 1 to maxPullBatch. A pull is a round trip per queue; a pull of
// one message each made consuming a backlog round-trip bound (about a
// seventh of the client's own push consumer in meshctl bench).
func pullBatch(prefetch int) int32 {
	return int32(min(max(prefetch/4, 1), maxPullBatch))
}

// pullBuffer is how many pulled batches of size batch each queue buffers:
// about maxPullBatch messages, at least one batch, so that the next pull
// goes on while a batch is given out. (With none, a paused consumer's pull
// loops wait on the buffer, not parked at the broker, and the client's
// shutdown races with them under the race detector; see race.go.)
func pullBuffer(batch int32) int {
	return max(1, maxPullBatch/int(batch))
}
