package natsbroker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/singleflight"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/internal/sendq"
	"github.com/msgmesh/msgmesh/topology"
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
	DefaultStreamPrefix  = "MESH_"
	DefaultMaxAckPending = 20000
	DefaultPrefetch      = 128
	// DefaultAckWait is used when ConsumerSpec.AckWait is zero.
	DefaultAckWait = 60 * time.Second
)

// Header names the adapter owns. Apps may not set them.
const (
	// KeyHeader carries broker.Message.Key.
	KeyHeader = "Msgmesh-Key"
	// KeyB64Header carries the key, base64 (std, padded), instead of
	// KeyHeader when the key would not survive a NATS header unchanged
	// (CR, LF, leading or trailing white space, non-printable bytes).
	KeyB64Header = "Msgmesh-Key-B64"
)

// closeTimeout bounds how long Broker.Close spends closing consumers that
// are still open and flushing acks before it closes the connection.
const closeTimeout = 5 * time.Second

// flushTimeout bounds the flush of acks in Broker.Close.
const flushTimeout = time.Second

// Config configures New. The zero value of each field is documented on it;
// only one of URL and Conn is required.
type Config struct {
	// URL of the NATS server(s): "nats://host:port", or several separated
	// by commas. Ignored when Conn is set. Zero: Conn must be set.
	URL string
	// Conn is an existing connection (for example an in-process one to an
	// Embedded server). The Broker does not close a Conn it did not create.
	// Zero: the Broker connects to URL, reconnecting forever after a
	// connection loss, and closes that connection in Close.
	Conn *nats.Conn
	// StreamPrefix is the prefix of the names of streams the adapter
	// creates; it must be valid in a stream name ([A-Za-z0-9_-]).
	// Zero: DefaultStreamPrefix ("MESH_").
	StreamPrefix string
	// Streams are the settings of the streams the adapter creates, per
	// topic (topology.Streams.For); what they leave unset comes from
	// DefaultStreams. Existing streams are never changed.
	Streams *topology.Streams
	// Embedded is the embedded server Conn leads to, if it is one: Publish
	// then answers at once while its store cannot take writes (see
	// Embedded.StoreErr), and tells a full disk from a slow server when a
	// publish gets no answer; Check asks it too (store damage, JetStream
	// off, store full). Zero: a server msgmesh does not run.
	Embedded *Embedded
	// MaxAckPending bounds the deliveries a durable consumer (one group on
	// one topic) has outstanding, unacknowledged, across every sidecar of
	// the group. Zero: DefaultMaxAckPending (20000).
	MaxAckPending int
	// Prefetch is the default of ConsumerSpec.Prefetch: how many messages a
	// Consumer may hold that Next has not returned yet.
	// Zero: DefaultPrefetch (128).
	Prefetch int
	// Logger receives connection events, stream creation and hand-backs.
	// Zero: slog.Default().
	Logger *slog.Logger
	// MaxBatch is the most publishes to one topic that Publish sends as
	// one atomic batch when they wait for the topic's publish in flight
	// (batch.go; nats-server 2.12 or later). Batches pay where the server
	// fsyncs every write (sync_interval: always) and cost more than they
	// save with a sync interval. Streams the adapter creates allow atomic
	// publishes when it is over 1; an existing stream is sent batches
	// only if it does (allow_atomic). At most 1000, nats-server's
	// default limit of a batch. Zero: DefaultMaxBatch (256) with an
	// Embedded server that syncs every write, else 1. One or negative:
	// every publish on its own, as a request of its own.
	MaxBatch int
}

func (c Config) validate() error {
	var errs []error
	if c.Conn == nil && strings.TrimSpace(c.URL) == "" {
		errs = append(errs, errors.New("one of URL and Conn is required"))
	}
	if c.StreamPrefix != "" && !validName(c.StreamPrefix) {
		errs = append(errs, fmt.Errorf("StreamPrefix %q: only letters, digits, '_' and '-' are allowed", c.StreamPrefix))
	}
	if err := c.Streams.Validate("Streams"); err != nil {
		errs = append(errs, err)
	}
	if c.MaxAckPending < 0 {
		errs = append(errs, fmt.Errorf("MaxAckPending %d is negative", c.MaxAckPending))
	}
	if c.Prefetch < 0 {
		//lint:ignore ST1005 the message starts with the Config field it is about
		errs = append(errs, fmt.Errorf("Prefetch %d is negative", c.Prefetch))
	}
	if c.MaxBatch > maxBatchLimit {
		errs = append(errs, fmt.Errorf("MaxBatch %d is over %d, nats-server's default limit of an atomic batch", c.MaxBatch, maxBatchLimit))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.StreamPrefix == "" {
		c.StreamPrefix = DefaultStreamPrefix
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.MaxBatch == 0 && c.Embedded != nil && c.Embedded.opts.SyncAlways:
		c.MaxBatch = DefaultMaxBatch
	case c.MaxBatch < 1:
		c.MaxBatch = 1
	}
	return c
}

// Broker is one NATS JetStream cluster. It is safe for concurrent use.
type Broker struct {
	cfg     Config // defaults applied; read-only after New
	nc      *nats.Conn
	ownConn bool // nc was created by New and is closed by Close
	js      jetstream.JetStream
	log     *slog.Logger
	// pubTimeout bounds a publish whose ctx has no deadline: js's
	// DefaultTimeout, as jetstream.PublishMsg applied it.
	pubTimeout time.Duration
	// replies are the reply subscriptions publishes wait on (puback.go).
	replies replyPool
	// batcher sends the publishes that wait in a topic's queue
	// (streamRef.sends) as atomic batches (batch.go).
	batcher *sendq.Batcher[*pubReq, pubAck]
	batches atomic.Uint64 // batches sent, for tests

	// smu guards streams (topic → the stream that captures it). It is a
	// leaf lock: nothing else is locked while it is held.
	smu     sync.RWMutex
	streams map[string]*streamRef
	lookups singleflight.Group // ensureStream's lookups, by topic

	// open: closed or not, and the consumers Close closes.
	open broker.Open[*consumer]
}

// New validates cfg, connects (unless cfg.Conn is set) and checks that the
// server has JetStream enabled. ctx bounds the whole call. A server that
// cannot be reached, or has JetStream disabled, gives an error wrapping
// broker.ErrUnavailable.
func New(ctx context.Context, cfg Config) (*Broker, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("natsbroker: config: %w", err)
	}
	cfg = cfg.withDefaults()
	b := &Broker{
		cfg:     cfg,
		nc:      cfg.Conn,
		log:     cfg.Logger.With("broker", "nats"),
		streams: make(map[string]*streamRef),
	}
	b.batcher = sendq.New(sendq.Sender[*pubReq, pubAck](batchSender{b}), sendq.Limits{MaxMsgs: cfg.MaxBatch, MaxBytes: maxBatchBytes})
	where := "the given connection"
	if b.nc == nil {
		where = redactURLs(cfg.URL)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("natsbroker: connect %s: %w", where, err)
		}
		nc, err := nats.Connect(cfg.URL, b.connectOptions(ctx)...)
		if err != nil {
			return nil, fmt.Errorf("natsbroker: connect %s: %w: %w", where, broker.ErrUnavailable, err)
		}
		b.nc, b.ownConn = nc, true
	}
	js, err := jetstream.New(b.nc)
	if err == nil {
		b.js = js
		b.pubTimeout = js.Options().DefaultTimeout
		_, err = js.AccountInfo(ctx)
	}
	if err != nil {
		if b.ownConn {
			b.nc.Close()
		}
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return nil, fmt.Errorf("natsbroker: JetStream is not enabled on the server at %s (run nats-server with -js, or enable JetStream for the account): %w: %w",
				where, broker.ErrUnavailable, err)
		}
		return nil, wrap("check JetStream at "+where, err)
	}
	return b, nil
}

func (b *Broker) connectOptions(ctx context.Context) []nats.Option {
	opts := []nats.Option{
		nats.Name("msgmesh"),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil { // our own Close
				return
			}
			b.log.Warn("nats disconnected; reconnecting", "error", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			b.log.Warn("nats async error", "error", err)
		}),
	}
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < nats.DefaultTimeout {
			opts = append(opts, nats.Timeout(max(d, time.Millisecond)))
		}
	}
	return opts
}

// redactURLs hides passwords in a comma-separated URL list for messages.
func redactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if u, err := url.Parse(p); err == nil {
			p = u.Redacted()
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

func (b *Broker) isClosed() bool { return b.open.Closed() }

// Publish stores msg in the stream that captures msg.Topic (creating one if
// none does; see the package doc) and returns after JetStream acknowledged
// it. ctx bounds the call; without a deadline the JetStream client's default
// (5 s) applies to each request. While the connection is down Publish
// waits for it (until ctx ends) before sending anything. An error wraps
// broker.ErrOutcomeUnknown when the message was sent and no answer came
// (see the package doc for which errors say "not stored").
func (b *Broker) Publish(ctx context.Context, msg *broker.Message) (broker.PublishResult, error) {
	res := broker.PublishResult{Partition: -1}
	if err := broker.CheckPublish(ctx, "natsbroker", &b.open, msg, checkTopic); err != nil {
		return res, err
	}
	topic := msg.Topic
	nm, err := toNATS(msg)
	if err != nil {
		return res, fmt.Errorf("natsbroker: publish %q: %w: %w", topic, broker.ErrRejected, err)
	}
	if err := b.waitConnected(ctx); err != nil {
		return res, fmt.Errorf("natsbroker: publish %q: %w", topic, err)
	}
	if e := b.cfg.Embedded; e != nil {
		if err := e.store.storeErr(); err != nil {
			return res, fmt.Errorf("natsbroker: publish %q: %w", topic, err)
		}
	}
	ref, err := b.ensureStream(ctx, topic)
	if err != nil {
		return res, b.opError("publish", topic, err)
	}
	if err := b.checkInterest(ctx, ref, topic); err != nil {
		return res, b.opError("publish", topic, err)
	}
	var ack pubAck
	if ref.batch {
		size := len(msg.Body) + broker.HeaderBytes(msg)
		ack, err = b.publishQueued(ctx, ref, &pubReq{subj: topic, data: msg.Body, nm: nm, known: ref.name}, size)
	} else {
		ack, err = b.publishAck(ctx, topic, msg.Body, nm, ref.name)
	}
	if errors.Is(err, jetstream.ErrNoStreamResponse) && ctx.Err() == nil {
		// No stream answered: the cached stream may have been deleted by
		// an operator. Look again (creating it if needed) and retry once.
		// No responders means no stream stored the message, so the retry
		// cannot duplicate it.
		b.forgetStream(topic, ref.name)
		if again, lerr := b.ensureStream(ctx, topic); lerr == nil {
			ref = again
			ack, err = b.publishAck(ctx, topic, msg.Body, nm, ref.name)
		}
	}
	if err != nil {
		return res, b.publishError(topic, ref, err)
	}
	if ack.Stream != ref.name {
		// Only possible if the stream was replaced since we cached it.
		b.forgetStream(topic, ref.name)
	}
	res.Stream = ack.Stream
	res.Offset = int64(ack.Sequence)
	res.MessageID = messageID(ack.Stream, ack.Sequence)
	return res, nil
}

// opError formats an error of op on topic. After Close every error is
// reported as broker.ErrClosed.
func (b *Broker) opError(op, topic string, err error) error {
	if b.isClosed() && !errors.Is(err, broker.ErrClosed) {
		return fmt.Errorf("natsbroker: %s %q: %w: %w", op, topic, broker.ErrClosed, err)
	}
	if errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrRejected) || errors.Is(err, broker.ErrClosed) || errors.Is(err, broker.ErrStorageFull) {
		return fmt.Errorf("natsbroker: %s %q: %w", op, topic, err)
	}
	return wrap(fmt.Sprintf("%s %q", op, topic), err)
}

// messageID is "<stream>:<seq>", built in one allocation (the string
// itself) for every delivery and publish: the concatenation with
// strconv.FormatUint made two.
func messageID(stream string, seq uint64) string {
	var buf [64]byte
	return string(strconv.AppendUint(append(append(buf[:0], stream...), ':'), seq, 10))
}

// checkTopic rejects topics that are not a literal NATS subject. Topics are
// validated by the sidecar already; this keeps a wildcard or blank from
// reaching the broker as a subscription pattern.
func checkTopic(topic string) error {
	if topic == "" {
		return errors.New("empty topic")
	}
	for tok := range strings.SplitSeq(topic, ".") { // every publish passes here: no slice of tokens
		if tok == "" || tok == "*" || tok == ">" {
			return errors.New("topic is not a literal subject (empty token or wildcard)")
		}
	}
	if strings.ContainsAny(topic, " \t\r\n\f\v") {
		return errors.New("topic contains white space")
	}
	return nil
}

// streamRef is what a Broker knows about the stream serving a topic.
type streamRef struct {
	name string
	cfg  jetstream.StreamConfig // as found or created
	// hasConsumers is set once the stream was seen with a consumer. It
	// stays set: msgmesh never deletes a durable consumer.
	hasConsumers atomic.Bool
	// batch: the topic's publishes that wait for the one in flight go as
	// atomic batches (Config.MaxBatch over 1 and a stream that allows
	// them), through sends.
	batch bool
	sends topicQueue
}

// newStreamRef is the streamRef of stream name, configured as cfg.
func (b *Broker) newStreamRef(name string, cfg jetstream.StreamConfig) *streamRef {
	return &streamRef{name: name, cfg: cfg, batch: b.cfg.MaxBatch > 1 && cfg.AllowAtomicPublish}
}

// ensureStream returns the stream that captures topic, creating one if
// none does. The answer is cached per topic.
func (b *Broker) ensureStream(ctx context.Context, topic string) (*streamRef, error) {
	b.smu.RLock()
	ref, ok := b.streams[topic]
	b.smu.RUnlock()
	if ok {
		return ref, nil
	}
	// One lookup per topic at a time: the first publishes of a topic
	// often come together (every app at start, a CloudEvents batch), and
	// each lookup is two or three JetStream API requests. The shared one
	// runs under a deadline of its own, not its first caller's context,
	// whose end must not fail the others.
	ch := b.lookups.DoChan(topic, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.pubTimeout)
		defer cancel()
		ref, err := b.lookupOrCreateStream(ctx, topic)
		if err != nil {
			return nil, err
		}
		b.smu.Lock()
		b.streams[topic] = ref
		b.smu.Unlock()
		return ref, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*streamRef), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// forgetStream drops the cache entry for topic if it still names stream.
func (b *Broker) forgetStream(topic, stream string) {
	b.smu.Lock()
	if ref := b.streams[topic]; ref != nil && ref.name == stream {
		delete(b.streams, topic)
	}
	b.smu.Unlock()
}

// jsErrStreamSubjectOverlap is the JetStream error code for "subjects
// overlap with an existing stream".
const jsErrStreamSubjectOverlap jetstream.ErrorCode = 10065

// lookupOrCreateStream implements the stream policy of the package doc. It
// is safe against concurrent callers (in this and other processes): a
// creation that loses a race ("name already in use", "subjects overlap")
// is followed by a new lookup.
func (b *Broker) lookupOrCreateStream(ctx context.Context, topic string) (*streamRef, error) {
	for _, hashed := range []bool{false, true} {
		name, err := b.js.StreamNameBySubject(ctx, topic)
		if err == nil {
			return b.describeStream(ctx, topic, name)
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("look up stream: %w", withSentinel(err))
		}
		if e := b.cfg.Embedded; e != nil {
			// Creating a stream writes to the store: not while it is full.
			if err := e.store.storeErr(); err != nil {
				return nil, err
			}
		}
		want := streamName(b.cfg.StreamPrefix, topic, hashed)
		cfg := b.streamConfig(want, topic)
		s, err := b.js.CreateStream(ctx, cfg)
		if err == nil {
			b.log.Info("created stream", "stream", want, "topic", topic, "settings", describeLimits(cfg))
			return b.newStreamRef(want, s.CachedInfo().Config), nil
		}
		var apiErr *jetstream.APIError
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) &&
			!(errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrStreamSubjectOverlap) {
			err = withSentinel(err)
			if errors.Is(err, broker.ErrStorageFull) {
				return nil, fmt.Errorf("create stream %s (%s): %s: %w", want, describeLimits(cfg), b.serverFullReason(), err)
			}
			return nil, fmt.Errorf("create stream %s: %w", want, err)
		}
		// Lost a race, or the name is taken by a stream that does not
		// capture topic: the next lookup tells which.
	}
	name, err := b.js.StreamNameBySubject(ctx, topic)
	if err == nil {
		return b.describeStream(ctx, topic, name)
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("look up stream: %w", withSentinel(err))
	}
	return nil, fmt.Errorf("%w: no stream captures the topic, and the names %s and %s belong to streams that do not",
		broker.ErrRejected, streamName(b.cfg.StreamPrefix, topic, false), streamName(b.cfg.StreamPrefix, topic, true))
}

// describeStream reads the configuration of the existing stream name,
// which captures topic. A stream msgmesh created for the topic whose
// settings differ from the configured ones is kept as it is, with a
// warning: existing streams are never changed.
func (b *Broker) describeStream(ctx context.Context, topic, name string) (*streamRef, error) {
	s, err := b.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", name, withSentinel(err))
	}
	info := s.CachedInfo()
	ref := b.newStreamRef(name, info.Config)
	ref.hasConsumers.Store(info.State.Consumers > 0)
	if info.Config.Description == streamDescription(topic) {
		want := b.streamConfig(name, topic)
		if have, cfgd := describeLimits(info.Config), describeLimits(want); have != cfgd {
			b.log.Warn("stream was created with other settings than the configured ones; msgmesh does not change existing streams (edit it with the nats CLI to apply them)",
				"stream", name, "topic", topic, "has", have, "configured", cfgd)
		}
	}
	return ref, nil
}

func streamDescription(topic string) string { return "msgmesh topic " + topic }

// checkInterest refuses a publish to an interest stream that has no
// consumer yet: JetStream would acknowledge the message and keep it for
// nobody, which would be an acked publish lost.
func (b *Broker) checkInterest(ctx context.Context, ref *streamRef, topic string) error {
	if ref.cfg.Retention != jetstream.InterestPolicy || ref.hasConsumers.Load() {
		return nil
	}
	s, err := b.js.Stream(ctx, ref.name)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", ref.name, withSentinel(err))
	}
	if s.CachedInfo().State.Consumers > 0 {
		ref.hasConsumers.Store(true)
		return nil
	}
	return fmt.Errorf("%w: stream %s keeps messages only for the consumer groups that exist when they are stored (retention interest), and no group consumes topic %q yet, so the message would be dropped: register a consumer group for the topic first, or give it retention limits",
		broker.ErrRejected, ref.name, topic)
}

// withSentinel puts classify's sentinel in front of err.
func withSentinel(err error) error {
	if s := classify(err); s != nil {
		return fmt.Errorf("%w: %w", s, err)
	}
	return err
}

// Consume starts, or resumes, the durable consumer of spec.Group on
// spec.Topic; see the package doc for its configuration. The consumer is
// running when Consume returns; its first Next sends the first pull
// request.
func (b *Broker) Consume(ctx context.Context, spec broker.ConsumerSpec) (broker.Consumer, error) {
	topic := spec.Topic
	switch {
	case spec.Group == "":
		return nil, fmt.Errorf("natsbroker: consume %q: %w: empty group", topic, broker.ErrRejected)
	case spec.BrokerGroup != "" && b.CheckBrokerGroup(spec.BrokerGroup) != nil:
		return nil, fmt.Errorf("natsbroker: consume %q: %w: %w", topic, broker.ErrRejected, b.CheckBrokerGroup(spec.BrokerGroup))
	case spec.AckWait < 0:
		return nil, fmt.Errorf("natsbroker: consume %q: %w: negative AckWait", topic, broker.ErrRejected)
	case spec.Prefetch < 0:
		return nil, fmt.Errorf("natsbroker: consume %q: %w: negative Prefetch", topic, broker.ErrRejected)
	}
	if err := checkTopic(topic); err != nil {
		return nil, fmt.Errorf("natsbroker: consume %q: %w: %w", topic, broker.ErrRejected, err)
	}
	carry, err := parseCarry(spec.Carry)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: consume %q: %w", topic, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("natsbroker: consume %q: %w", topic, err)
	}
	if b.isClosed() {
		return nil, fmt.Errorf("natsbroker: consume %q: %w", topic, broker.ErrClosed)
	}
	ref, err := b.ensureStream(ctx, topic)
	if err != nil {
		return nil, b.opError("consume", topic, err)
	}
	stream := ref.name
	c := &consumer{
		b:        b,
		stream:   stream,
		topic:    topic,
		group:    spec.Group,
		name:     cmp.Or(spec.BrokerGroup, consumerName(spec.Group, topic)),
		ackWait:  spec.AckWait,
		prefetch: spec.Prefetch,
		state:    stateRunning,
		carry:    carry,
		// With a carry, Next starts the fetcher once it is given out.
		deferIter: len(carry) > 0,
	}
	if c.ackWait == 0 {
		c.ackWait = DefaultAckWait
	}
	if c.prefetch == 0 {
		c.prefetch = b.cfg.Prefetch
	}
	c.log = b.log.With("stream", stream, "consumer", c.name)
	cons, err := c.createConsumer(ctx, stream)
	if err != nil {
		return nil, b.opError("consume", topic, err)
	}
	if !c.deferIter {
		c.iter = newFetcher(b.nc, cons, c.prefetch)
	}
	if !b.open.Add(c, nil) {
		if c.iter != nil {
			_ = c.handBack(ctx, c.iter, false)
		}
		c.nakCarried(ctx, c.carry)
		return nil, fmt.Errorf("natsbroker: consume %q: %w", topic, broker.ErrClosed)
	}
	return c, nil
}

func (b *Broker) removeConsumer(c *consumer) { b.open.Remove(c) }

// Close closes every consumer still open (handing back their prefetched
// messages), flushes pending acks, and closes the connection if New
// created it. Deliveries can no longer be acked afterwards. Idempotent.
func (b *Broker) Close() error {
	open, first := b.open.Close()
	if !first {
		return nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	var errs []error
	for _, c := range open {
		if err := c.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	// Acks are fire-and-forget: push the last ones out before closing.
	// Acks that cannot be flushed (no connection) are not an error of
	// Close: their messages are redelivered after AckWait.
	if b.nc.IsConnected() {
		fctx, fcancel := context.WithTimeout(ctx, flushTimeout)
		if err := b.nc.FlushWithContext(fctx); err != nil {
			b.log.Warn("flushing acks on close failed; unflushed acks mean redeliveries", "error", err)
		}
		fcancel()
	}
	b.replies.close()
	if b.ownConn {
		b.nc.Close()
	}
	return errors.Join(errs...)
}
