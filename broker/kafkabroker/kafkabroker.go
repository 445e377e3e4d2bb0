package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/msgmesh/msgmesh/broker"
)

// Compile-time checks that the adapter implements the contract.
var (
	_ broker.Broker   = (*Broker)(nil)
	_ broker.Consumer = (*consumer)(nil)
	_ broker.Delivery = (*delivery)(nil)
)

// Defaults applied by New to zero Config fields.
const (
	DefaultClientID          = "msgmesh"
	DefaultPartitions        = 3
	DefaultReplicationFactor = 1
	DefaultPrefetch          = 128
)

// Tuning of the kafka-go clients. See the package doc for the reasons.
const (
	// batchTimeout is how long the Writer waits for more messages to the
	// same partition before it sends a batch. It is the latency a lone
	// Publish pays on top of the round trip.
	batchTimeout = time.Millisecond
	// batchSize caps the messages of one produce request per partition.
	// kafka-go allocates every batch at this capacity (about 150 bytes a
	// message), so a lone Publish pays for all of it: 100 (kafka-go's
	// default) is 15 KB, and still above the sidecar's 128 concurrent
	// publishes per app connection spread over the partitions.
	// The Writer's BatchBytes caps a batch's bytes and is also the
	// largest message Publish accepts: the brokers' message.max.bytes
	// less batchMargin (limits.go).
	batchSize = 100
	// dialTimeout bounds connecting to one broker; requestTimeout one
	// request/response (produce, metadata, create topics).
	dialTimeout    = 5 * time.Second
	requestTimeout = 10 * time.Second
	// topicTimeout bounds creating a topic and waiting until the cached
	// cluster metadata shows it.
	topicTimeout = 30 * time.Second
	// closeTimeout bounds how long Broker.Close spends closing consumers
	// that are still open.
	closeTimeout = 10 * time.Second
)

// Config configures New. The zero value of each field is documented on it;
// only Brokers is required.
type Config struct {
	// Brokers are bootstrap addresses (host:port) of the Kafka cluster;
	// one reachable broker is enough, the others are learnt from it.
	// Required.
	Brokers []string
	// ClientID is sent to the brokers with every request (it shows in
	// their logs and quotas). Zero: DefaultClientID ("msgmesh").
	ClientID string
	// Partitions of the topics the adapter creates (a Publish or Consume
	// on a topic that does not exist). Existing topics keep theirs.
	// Zero: DefaultPartitions (3).
	Partitions int
	// ReplicationFactor of the topics the adapter creates. Zero: 1.
	ReplicationFactor int
	// Prefetch is the default of ConsumerSpec.Prefetch: how many messages
	// a Consumer may hold that Next has not returned yet.
	// Zero: DefaultPrefetch (128).
	Prefetch int
	// Logger receives topic creation, consumer errors and the client
	// libraries' error logs. Zero: slog.Default().
	Logger *slog.Logger
}

func (c Config) validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		//lint:ignore ST1005 the message starts with the Config field it is about
		errs = append(errs, errors.New("Brokers is required"))
	}
	for _, a := range c.Brokers {
		host, port, err := net.SplitHostPort(a)
		if err == nil && host == "" {
			err = errors.New("missing host")
		}
		if err == nil {
			if n, perr := strconv.Atoi(port); perr != nil || n <= 0 || n > 65535 {
				err = fmt.Errorf("bad port %q", port)
			}
		}
		if err != nil {
			//lint:ignore ST1005 the message starts with the Config field it is about
			errs = append(errs, fmt.Errorf("Brokers: %q is not host:port: %w", a, err))
		}
	}
	if c.Partitions < 0 {
		//lint:ignore ST1005 the message starts with the Config field it is about
		errs = append(errs, fmt.Errorf("Partitions %d is negative", c.Partitions))
	}
	if c.ReplicationFactor < 0 || c.ReplicationFactor > 32767 {
		errs = append(errs, fmt.Errorf("ReplicationFactor %d is out of range", c.ReplicationFactor))
	}
	if c.Prefetch < 0 {
		//lint:ignore ST1005 the message starts with the Config field it is about
		errs = append(errs, fmt.Errorf("Prefetch %d is negative", c.Prefetch))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	c.Brokers = append([]string(nil), c.Brokers...)
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Broker is one Kafka cluster. It is safe for concurrent use.
type Broker struct {
	cfg  Config // defaults applied; read-only after New
	log  *slog.Logger
	addr net.Addr

	// transport carries the Writer's and client's requests; its
	// background goroutines (metadata refresh) stop with stopTransport.
	transport     *kafka.Transport
	stopTransport context.CancelFunc
	client        *kafka.Client
	writer        *kafka.Writer
	// published holds *published waiters for Publish (outcome.go).
	published sync.Pool
	// msgBufs holds *msgBuf for the messages Publish builds (message.go).
	msgBufs sync.Pool
	// pq hands concurrent Publish calls' messages to the Writer in
	// rounds (publishqueue.go).
	pq publishQueue

	// tmu guards topics (topic → its creation state). It is a leaf lock.
	tmu    sync.RWMutex
	topics map[string]*topicState

	// open: closed or not, and the consumers Close closes.
	open broker.Open[*consumer]

	// hmu guards inherited: partitions a predecessor process handed over
	// (handover.go), until a consumer claims them. A leaf lock.
	hmu       sync.Mutex
	inherited map[partKey]*inheritance

	// wg counts goroutines the Broker or its consumers started that may
	// outlive the call that started them (a consumer's group loop that
	// finishes after its Close gave up on ctx). Close waits for them.
	wg sync.WaitGroup
}

// topicState is one topic's check-or-create, shared by concurrent callers.
type topicState struct {
	done chan struct{} // closed when err is set
	err  error
}

// New validates cfg and checks that the cluster answers a metadata request.
// ctx bounds the check (each connection attempt is also bounded by 5 s). A
// cluster that cannot be reached gives an error wrapping
// broker.ErrUnavailable.
func New(ctx context.Context, cfg Config) (*Broker, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("kafkabroker: config: %w", err)
	}
	cfg = cfg.withDefaults()
	where := strings.Join(cfg.Brokers, ",")
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kafkabroker: connect %s: %w", where, err)
	}
	tctx, stop := context.WithCancel(context.Background())
	b := &Broker{
		cfg:  cfg,
		log:  cfg.Logger.With("broker", "kafka"),
		addr: kafka.TCP(cfg.Brokers...),
		transport: &kafka.Transport{
			Dial:        (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			DialTimeout: dialTimeout,
			ClientID:    cfg.ClientID,
			Context:     tctx,
		},
		stopTransport: stop,
		topics:        make(map[string]*topicState),
	}
	b.published.New = newPublished
	b.msgBufs.New = newMsgBuf
	b.client = &kafka.Client{Addr: b.addr, Transport: b.transport, Timeout: requestTimeout}
	// The transport answers metadata requests from its cache, which its
	// first (real) metadata request fills: this waits for that request
	// and returns its error.
	md, err := b.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{}})
	if err != nil {
		b.stopClients()
		if errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("kafkabroker: connect %s: %w", where, err)
		}
		return nil, fmt.Errorf("kafkabroker: cannot reach the Kafka cluster at %s (check Config.Brokers and that the brokers run): %w: %w",
			where, broker.ErrUnavailable, err)
	}
	maxBytes, _ := b.messageMaxBytes(ctx, md)
	b.writer = &kafka.Writer{
		Addr:         b.addr,
		Balancer:     &keyBalancer{},
		BatchSize:    batchSize,
		BatchBytes:   int64(maxBytes - batchMargin),
		BatchTimeout: batchTimeout,
		ReadTimeout:  requestTimeout,
		WriteTimeout: requestTimeout,
		RequiredAcks: kafka.RequireAll,
		// One attempt per WriteMessages: Publish retries itself, so that
		// it knows whether any attempt may have stored the message
		// (outcome.go).
		MaxAttempts: 1,
		// WriteMessages returns once the message joined a batch, and
		// completion tells each Publish its outcome: a synchronous
		// WriteMessages makes two maps per call to find and wait for the
		// batches, where one Publish has one message in one batch.
		Async:       true,
		Completion:  completion,
		Transport:   b.transport,
		ErrorLogger: warnLogger(b.log.With("client", "writer")),
	}
	b.startPublishQueue()
	return b, nil
}

// stopClients stops the transport's goroutines and closes its connections.
func (b *Broker) stopClients() {
	b.stopTransport()
	b.transport.CloseIdleConnections()
}

// warnLogger turns kafka-go's printf logging into slog warnings.
func warnLogger(l *slog.Logger) kafka.Logger {
	return kafka.LoggerFunc(func(format string, args ...any) {
		l.Warn(strings.TrimSpace(fmt.Sprintf(format, args...)))
	})
}

func (b *Broker) isClosed() bool { return b.open.Closed() }

// keyBalancer picks a partition: murmur2 of the key, as the Java client's
// default partitioner does, so that a key always lands on the same
// partition (given the partition count) whichever client produced it;
// round robin for messages without a key.
type keyBalancer struct {
	rr   kafka.RoundRobin
	hash kafka.Murmur2Balancer
}

func (kb *keyBalancer) Balance(msg kafka.Message, partitions ...int) int {
	if msg.Key == nil {
		return kb.rr.Balance(msg, partitions...)
	}
	return kb.hash.Balance(msg, partitions...)
}

// published receives, through kafka.Message.WriterData, the outcome of
// one attempt of one Publish: completion writes partition, offset and err,
// then sends on done, so the Publish that receives from done reads them
// without a lock. Publish takes it from Broker.published and puts it back
// once it received from done; one that gave up waiting (its ctx ended)
// leaves it to the garbage collector, since completion still writes it.
//
// The publish queue's flusher also sends on done, with alone set, when
// the Writer refused the round the message was in: the Publish then
// writes the message alone, and completion sends again.
type published struct {
	done      chan struct{} // capacity 1; one send per attempt, or the flusher's and then one
	partition int
	offset    int64
	err       error
	alone     bool // set by the flusher: write the message alone
}

func newPublished() any { return &published{done: make(chan struct{}, 1)} }

// completion is the Writer's Completion callback: the messages of one
// produce request, with the partition and offsets of the response or the
// request's error.
func completion(msgs []kafka.Message, err error) {
	for i := range msgs {
		if p, ok := msgs[i].WriterData.(*published); ok {
			p.partition = msgs[i].Partition
			p.offset = msgs[i].Offset
			p.err = err
			p.done <- struct{}{}
		}
	}
}

// Publish writes msg to its topic (creating the topic if needed; see the
// package doc) and returns after every in-sync replica acknowledged it,
// with the partition and offset Kafka gave it. ctx bounds the call; a
// Publish that ends with ctx may still be written (Kafka gives no way to
// take it back), and its error wraps broker.ErrOutcomeUnknown, as does
// every failure after an attempt that may have reached the broker.
// Publish keeps no reference to msg after it returns (it writes a copy,
// whose buffer it reuses once the broker acked it).
func (b *Broker) Publish(ctx context.Context, msg *broker.Message) (broker.PublishResult, error) {
	res := broker.PublishResult{Partition: -1}
	if err := broker.CheckPublish(ctx, "kafkabroker", &b.open, msg, checkTopic); err != nil {
		return res, err
	}
	topic := msg.Topic
	if err := b.ensureTopic(ctx, topic); err != nil {
		return res, b.opError("publish", topic, err)
	}
	mb := b.msgBufs.Get().(*msgBuf)
	km := mb.toKafka(msg)
	p, maybeStored, err := b.write(ctx, km)
	if err != nil {
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			// Deleted under us: look it up (and create it) again next time.
			b.forgetTopic(topic)
		}
		if maybeStored {
			return res, fmt.Errorf("kafkabroker: publish %q: %w: %w", topic, broker.ErrOutcomeUnknown, err)
		}
		return res, b.opError("publish", topic, err)
	}
	res.Stream = topic
	res.Partition = int32(p.partition)
	res.Offset = p.offset
	res.MessageID = messageID(topic, p.partition, p.offset)
	b.published.Put(p)
	b.putMsgBuf(mb)
	return res, nil
}

// opError formats an error of op on topic. After Close every error is
// reported as broker.ErrClosed.
func (b *Broker) opError(op, topic string, err error) error {
	if b.isClosed() && !errors.Is(err, broker.ErrClosed) {
		return fmt.Errorf("kafkabroker: %s %q: %w: %w", op, topic, broker.ErrClosed, err)
	}
	return wrap(fmt.Sprintf("%s %q", op, topic), err)
}

func messageID(topic string, partition int, offset int64) string {
	var stack [128]byte // one allocation (the string) for most topics
	buf := append(stack[:0], topic...)
	buf = append(buf, '/')
	buf = strconv.AppendInt(buf, int64(partition), 10)
	buf = append(buf, '/')
	buf = strconv.AppendInt(buf, offset, 10)
	return string(buf)
}

// checkTopic applies Kafka's rules for topic names (1 to 249 of
// [a-zA-Z0-9._-], not "." or ".."), so that a bad name is refused before
// any request.
func checkTopic(topic string) error {
	switch {
	case topic == "":
		return errors.New("empty topic")
	case topic == "." || topic == "..":
		return errors.New(`topic "." and ".." are not allowed`)
	case len(topic) > 249:
		return fmt.Errorf("topic is %d bytes long, the limit is 249", len(topic))
	}
	for i := 0; i < len(topic); i++ {
		switch c := topic[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("topic contains %q: only ASCII letters, digits, '.', '_' and '-' are allowed", c)
		}
	}
	return nil
}

// ensureTopic returns once topic exists and the transport's cached metadata
// shows it, creating it if needed. Concurrent callers for one topic share
// one check; a success is remembered until forgetTopic.
func (b *Broker) ensureTopic(ctx context.Context, topic string) error {
	for {
		b.tmu.RLock()
		st := b.topics[topic]
		b.tmu.RUnlock()
		if st == nil {
			b.tmu.Lock()
			if st = b.topics[topic]; st == nil {
				st = &topicState{done: make(chan struct{})}
				b.topics[topic] = st
				b.tmu.Unlock()
				st.err = b.lookupOrCreateTopic(ctx, topic)
				if st.err != nil {
					b.tmu.Lock()
					if b.topics[topic] == st {
						delete(b.topics, topic)
					}
					b.tmu.Unlock()
				}
				close(st.done)
				return st.err
			}
			b.tmu.Unlock()
		}
		select {
		case <-st.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if st.err == nil {
			return nil
		}
		if !errors.Is(st.err, context.Canceled) && !errors.Is(st.err, context.DeadlineExceeded) {
			return st.err
		}
		// The caller that did the check ran out of time; try with ours.
	}
}

// forgetTopic drops topic's remembered success, if any.
func (b *Broker) forgetTopic(topic string) {
	b.tmu.Lock()
	if st := b.topics[topic]; st != nil {
		select {
		case <-st.done:
			delete(b.topics, topic)
		default: // a check is running; it decides
		}
	}
	b.tmu.Unlock()
}

// lookupOrCreateTopic implements ensureTopic. It is safe against concurrent
// callers in other processes: a creation that loses the race
// (TopicAlreadyExists) counts as success.
func (b *Broker) lookupOrCreateTopic(ctx context.Context, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, topicTimeout)
	defer cancel()
	// Served from the transport's metadata cache (refreshed every few
	// seconds and after each topic creation).
	md, err := b.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return fmt.Errorf("look up topic: %w", err)
	}
	if len(md.Topics) == 1 {
		t := md.Topics[0]
		switch {
		case t.Error == nil && len(t.Partitions) > 0:
			return nil
		case t.Error != nil && !errors.Is(t.Error, kafka.UnknownTopicOrPartition):
			return fmt.Errorf("look up topic: %w", t.Error)
		}
	}
	cres, err := b.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{
			Topic:             topic,
			NumPartitions:     b.cfg.Partitions,
			ReplicationFactor: b.cfg.ReplicationFactor,
		}},
	})
	if err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	switch terr := cres.Errors[topic]; {
	case terr == nil:
		// The transport refreshed its metadata and waited for the topic.
		b.log.Info("created topic", "topic", topic,
			"partitions", b.cfg.Partitions, "replication_factor", b.cfg.ReplicationFactor)
		return nil
	case errors.Is(terr, kafka.TopicAlreadyExists):
		return b.refreshTopic(ctx, topic)
	default:
		return fmt.Errorf("create topic (%d partitions, replication factor %d): %w",
			b.cfg.Partitions, b.cfg.ReplicationFactor, terr)
	}
}

// refreshTopic makes the transport's metadata cache learn a topic that
// exists on the cluster (created by another client since the last refresh).
// kafka-go's transport sends a metadata request that allows topic creation
// to the cluster when the topic is not cached, and then refreshes its cache
// until the topic shows; the topic exists, so nothing is created.
func (b *Broker) refreshTopic(ctx context.Context, topic string) error {
	r, err := b.transport.RoundTrip(ctx, b.addr, &metadataAPI.Request{
		TopicNames:             []string{topic},
		AllowAutoTopicCreation: true,
	})
	if err != nil {
		return fmt.Errorf("refresh metadata: %w", err)
	}
	for _, t := range r.(*metadataAPI.Response).Topics {
		if t.Name == topic && t.ErrorCode != 0 {
			return fmt.Errorf("refresh metadata: %w", kafka.Error(t.ErrorCode))
		}
	}
	return nil
}

// Consume joins spec.Group (spec.BrokerGroup when set) on spec.Topic (creating the topic if needed);
// see the package doc for the consumer's semantics. The group membership
// is established in the background: Consume does not wait for the first
// partition assignment.
func (b *Broker) Consume(ctx context.Context, spec broker.ConsumerSpec) (broker.Consumer, error) {
	topic := spec.Topic
	switch {
	case spec.Group == "":
		return nil, fmt.Errorf("kafkabroker: consume %q: %w: empty group", topic, broker.ErrRejected)
	case spec.AckWait < 0:
		return nil, fmt.Errorf("kafkabroker: consume %q: %w: negative AckWait", topic, broker.ErrRejected)
	case spec.Prefetch < 0:
		return nil, fmt.Errorf("kafkabroker: consume %q: %w: negative Prefetch", topic, broker.ErrRejected)
	}
	if err := checkTopic(topic); err != nil {
		return nil, fmt.Errorf("kafkabroker: consume %q: %w: %w", topic, broker.ErrRejected, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kafkabroker: consume %q: %w", topic, err)
	}
	if b.isClosed() {
		return nil, fmt.Errorf("kafkabroker: consume %q: %w", topic, broker.ErrClosed)
	}
	if err := b.ensureTopic(ctx, topic); err != nil {
		return nil, b.opError("consume", topic, err)
	}
	prefetch := spec.Prefetch
	if prefetch == 0 {
		prefetch = b.cfg.Prefetch
	}
	group := spec.Group
	if spec.BrokerGroup != "" {
		group = spec.BrokerGroup // any registry-valid name is a Kafka group id
	}
	c := newConsumer(b, topic, group, prefetch)
	if !b.open.Add(c, func() { b.wg.Add(1) }) { // done when c's groupLoop ends
		c.stopCommit()
		c.stopGroup()
		return nil, fmt.Errorf("kafkabroker: consume %q: %w", topic, broker.ErrClosed)
	}
	c.start()
	return c, nil
}

func (b *Broker) removeConsumer(c *consumer) { b.open.Remove(c) }

// Close closes every consumer still open (with their final commits),
// flushes and closes the writer (Publish calls in flight finish first), and
// closes the connections. Publish and Consume return broker.ErrClosed
// afterwards. Idempotent.
func (b *Broker) Close() error {
	open, first := b.open.Close()
	if !first {
		b.wg.Wait()
		return nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	// Consumers close in parallel: each waits for its fetchers and LeaveGroup.
	errs := make([]error, len(open)+1)
	var wg sync.WaitGroup
	for i, c := range open {
		wg.Go(func() { errs[i] = c.Close(ctx) })
	}
	wg.Wait()
	// The flusher writes what is queued first: Publish calls in flight
	// finish as they did without the queue.
	b.stopPublishQueue()
	if err := b.writer.Close(); err != nil {
		errs[len(open)] = fmt.Errorf("kafkabroker: close writer: %w", err)
	}
	b.wg.Wait()
	b.stopClients()
	return errors.Join(errs...)
}
