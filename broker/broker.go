// Package broker is the small contract between the sidecar and a broker
// cluster (NATS JetStream, Kafka, RocketMQ). The sidecar speaks only these
// interfaces; each adapter lives in its own subpackage and is the only code
// that imports its broker's client library. Every adapter runs the
// conformance suite of package brokertest (brokertest.Run), which checks
// what this package promises against a real broker.
//
// Consumption is pull-based on purpose: the sidecar calls Consumer.Next only
// when some app connection has room for another delivery, so a slow app
// stops the flow from the broker (backpressure) instead of filling memory.
// An adapter may prefetch, but only a bounded number of messages
// (ConsumerSpec.Prefetch), and it hands prefetched messages back to the
// broker on Pause and Close.
//
// Lifecycle: Broker.Consume → Next/Pause/Resume any number of times →
// Close. Deliveries returned by Next stay valid after Pause and Close: the
// sidecar still acks or nacks them when the app answers.
package broker

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Header is one message header.
type Header struct {
	Key   string
	Value string
}

// Message is what apps publish and consume.
type Message struct {
	Topic   string
	Key     string
	Headers []Header
	Body    []byte
	// NullBody: the body is null (a Kafka tombstone), not empty; Body is
	// empty. Only Kafka stores one; the other adapters refuse it
	// (ErrNullBody).
	NullBody bool
	// EmptyKey: the message has a key and it is empty; Key is "". Without
	// it an empty Key means no key. Kafka and NATS keep the difference;
	// RocketMQ has no empty key and refuses it (ErrEmptyKey).
	EmptyKey bool
}

// HasKey reports whether m has a key (a non-empty one, or an empty one
// marked EmptyKey).
func (m *Message) HasKey() bool { return m.Key != "" || m.EmptyKey }

// PublishResult says where the broker stored a message; fields a broker does
// not have stay zero (Partition -1).
type PublishResult struct {
	Stream    string
	Partition int32
	Offset    int64
	MessageID string
}

// Delivery is one message handed out by a Consumer. Exactly one of Ack or
// Nack must eventually be called; if neither is (crash, bug), the broker's
// own ack timeout redelivers the message. An adapter answers a second
// Ack or Nack with an error and changes nothing.
type Delivery interface {
	Message() *Message
	// MessageID is the broker's id for the message, stable across
	// redeliveries (NATS stream sequence, Kafka partition/offset, RocketMQ
	// msg id).
	MessageID() string
	// Redelivered counts earlier deliveries of this message (0 the first time).
	Redelivered() int
	// Timestamp is when the broker stored the message (zero if unknown).
	Timestamp() time.Time
	// Ack marks the message processed. It must not wait for a network round
	// trip longer than ctx allows; the sidecar calls it from a connection's
	// read loop.
	Ack(ctx context.Context) error
	// Nack hands the message back for redelivery after delay (0: as soon as
	// the broker can).
	Nack(ctx context.Context, delay time.Duration) error
}

// ConsumerSpec names one upstream consumer: a group reading a topic.
type ConsumerSpec struct {
	Topic string
	Group string
	// BrokerGroup, when set, is the broker-side consumer group, used
	// verbatim (Kafka group id, NATS durable consumer name, RocketMQ
	// consumer group), so that the sidecar can join a group that apps
	// with their own clients already use. Empty: the adapter derives the
	// broker-side name from Group (docs/brokers.md says how). An adapter
	// whose broker cannot take the name refuses it with ErrRejected; it
	// also implements GroupNameChecker so that the sidecar can refuse it at
	// registration.
	BrokerGroup string
	// AckWait is how long the broker waits for an ack before it redelivers
	// on its own. The sidecar sets it above its own delivery timeout so that
	// the sidecar, not the broker, normally decides about redelivery.
	AckWait time.Duration
	// Prefetch bounds how many messages the adapter may hold that Next has
	// not returned yet. Zero means the adapter's default (documented there).
	Prefetch int
	// Tags is the group's tag filter (every message when zero). Adapters
	// that are TagFiltering apply it at the broker; for the others the
	// sidecar does.
	Tags TagFilter
	// Carry is what a predecessor process's consumer of the same cluster,
	// group, topic and broker group kept (Keeper.Kept): Next returns those
	// messages first. nil: none.
	Carry []byte
}

// Consumer is one upstream consumer: one (cluster, group, topic). It is used
// by one goroutine at a time for Next; Pause, Resume and Close may be called
// from another goroutine and make a blocked Next return.
type Consumer interface {
	// Next blocks until a delivery is available, ctx ends (ctx.Err()), the
	// consumer is paused (ErrPaused) or closed (ErrClosed).
	Next(ctx context.Context) (Delivery, error)
	// Pause stops fetching from the broker and hands back any message
	// fetched but not yet returned by Next. Deliveries already returned stay
	// valid. Idempotent.
	Pause(ctx context.Context) error
	// Resume undoes Pause. Idempotent.
	Resume(ctx context.Context) error
	// Close stops the consumer for good and hands back prefetched messages.
	// The group's position stays with the broker (the durable consumer or
	// committed offsets are not deleted), so a later Consume resumes it.
	Close(ctx context.Context) error
}

// Broker is one broker cluster.
type Broker interface {
	// Publish sends msg and returns only after the broker acknowledged it
	// durably (JetStream ack, Kafka acks=all, RocketMQ SEND_OK).
	Publish(ctx context.Context, msg *Message) (PublishResult, error)
	// Consume starts (or resumes) the group's consumer on the topic.
	Consume(ctx context.Context, spec ConsumerSpec) (Consumer, error)
	// Close releases the client. Consumers must be closed first.
	Close() error
}

// Errors adapters return so the sidecar can branch on them.
var (
	// ErrClosed: the consumer or broker was closed.
	ErrClosed = errors.New("broker: closed")
	// ErrPaused: the consumer is paused; Next returns it until Resume.
	ErrPaused = errors.New("broker: consumer paused")
	// ErrUnavailable: the broker cannot be reached right now; retrying
	// later may succeed. Adapters wrap their client's error with it.
	ErrUnavailable = errors.New("broker: unavailable")
	// ErrRejected: the broker refused the request for good (bad topic,
	// message too large for the broker, permissions).
	ErrRejected = errors.New("broker: rejected")
	// ErrStorageFull: the broker refused to store the message because its
	// storage (a stream's byte or message limit, or its disk) is full.
	// Nothing was stored; the same publish may succeed once consumers
	// catch up or space is freed.
	ErrStorageFull = errors.New("broker: storage full")
	// ErrOutcomeUnknown: the message left the sidecar but no answer came
	// back (timeout, connection lost mid-request): the broker may or may
	// not have stored it. Adapters wrap it only when they cannot tell;
	// a publish they know was not stored wraps ErrUnavailable instead.
	ErrOutcomeUnknown = errors.New("broker: outcome unknown")
	// ErrTooLarge: the message (body, key and headers) is larger than the
	// cluster takes; nothing was stored. It is a refusal for good, so it
	// wraps ErrRejected. The sidecar bounds messages below every
	// cluster's limit (SizeLimiter), so it only meets this when a broker's
	// limit is lower than the adapter learnt (a topic's own limit, a
	// server reconfigured while the sidecar ran).
	ErrTooLarge = fmt.Errorf("%w: message too large", ErrRejected)
)

// Checker is implemented by adapters that can tell whether their cluster
// is usable right now. The sidecar's readiness (GET /readyz) and
// GET /v1/upstreams ask it; a nil error means ready. Check must return
// within ctx and must not block on a broker that does not answer.
type Checker interface {
	Check(ctx context.Context) error
}

// Refusals of what a broker cannot store; both wrap ErrRejected.
var (
	// ErrNullBody: the broker has no null body (NATS, RocketMQ).
	ErrNullBody = fmt.Errorf("%w: this broker has no null body (only Kafka stores tombstones)", ErrRejected)
	// ErrEmptyKey: the broker has no empty key (RocketMQ).
	ErrEmptyKey = fmt.Errorf("%w: this broker has no empty key (RocketMQ keeps no empty KEYS)", ErrRejected)
)

// ErrTopicConflict: the cluster cannot hold a topic under this name, alone
// or next to another topic it holds or is asked to hold (Kafka refuses a
// topic whose name differs from another's only in '.' versus '_').
// Returned by TopicChecker.CheckTopics.
var ErrTopicConflict = errors.New("broker: topic name conflict")

// TopicChecker is implemented by adapters whose cluster refuses some topic
// names that the sidecar's own naming rules allow: alone (too long for the
// broker) or next to other topics. The sidecar calls it when an app
// registers, with topics, every topic the registration puts on the cluster
// (produced, consumed and dead-letter topics), and registered, the topics
// the cluster's other registrations use; it refuses the registration when
// the error wraps ErrTopicConflict, so that a name fails there, with both
// topics named, instead of at the first publish.
//
// CheckTopics refuses a topic of topics that the cluster cannot hold
// alone, next to another of topics, next to one of registered, or next to
// a topic the cluster has. Conflicts among registered alone are not the
// new registration's and are not reported. Any error not wrapping
// ErrTopicConflict (the cluster cannot be asked right now) does not block
// the registration. CheckTopics must return within ctx.
type TopicChecker interface {
	CheckTopics(ctx context.Context, topics, registered []string) error
}

// GroupNameChecker is implemented by adapters whose broker allows fewer names
// for a consumer group than the registry does (ConsumerSpec.BrokerGroup).
// The sidecar calls it when an app registers a consume binding that names
// its broker group, and refuses the registration when it returns an error
// (which says why). It sends no request.
type GroupNameChecker interface {
	CheckBrokerGroup(name string) error
}

// SizeLimiter is implemented by adapters whose cluster bounds the size of
// a message. The sidecar asks each cluster's adapter when it starts and
// lowers its body limit for that cluster's topics until the largest
// message it accepts fits (docs/protocol.md §5.3), so a message that is
// too big is refused by the sidecar with MESSAGE_TOO_BIG, not by the
// broker.
type SizeLimiter interface {
	// MaxBody returns the largest body the cluster stores together with a
	// key and headers of headerBytes bytes as HeaderBytes counts them,
	// whatever their content (the adapter accounts for its own encoding
	// of key and headers), or a negative number when a key and headers
	// that large do not fit at all. It sends no request: the adapter
	// learns its cluster's limits when it connects.
	MaxBody(headerBytes int) int
}
