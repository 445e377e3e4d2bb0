package broker

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"
)

// Endpoint describes a broker cluster the way OpenTelemetry's messaging
// conventions name it on spans: messaging.system, server.address and
// server.port.
type Endpoint struct {
	// System is "kafka", "nats" or "rocketmq" (messaging.system).
	System string
	// Address is the host of the cluster's first configured address, the
	// one clients bootstrap from (server.address); Port its port, 0 when
	// unknown.
	Address string
	Port    int
}

// Describer is implemented by adapters that can say what their cluster is,
// for telemetry. It sends no request.
type Describer interface {
	Endpoint() Endpoint
}

// Positioner is implemented by deliveries whose broker gives a message a
// place: the partition (Kafka) or queue (RocketMQ), and the offset in it.
type Positioner interface {
	Position() (partition int32, offset int64)
}

// PositionOf returns d's position when d, or a delivery it wraps (through
// an Unwrap() Delivery method, as the sidecar's wrappers have), is a
// Positioner.
func PositionOf(d Delivery) (partition int32, offset int64, ok bool) {
	p, ok := As[Positioner](d)
	if !ok {
		return 0, 0, false
	}
	partition, offset = p.Position()
	return partition, offset, true
}

// NewEndpoint describes a cluster of system reached at addr: "host:port",
// or a URL ("nats://host:port"). An addr it cannot parse is kept whole as
// the Address, with Port 0.
func NewEndpoint(system, addr string) Endpoint {
	ep := Endpoint{System: system, Address: addr}
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
		ep.Address = addr
	}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		ep.Address = host
		ep.Port, _ = strconv.Atoi(port)
	}
	return ep
}

// StreamInfo is how a cluster stores one topic: on NATS JetStream, the
// stream that captures it and that stream's settings. JSON is the shape
// of the sidecar's GET /v1/streams.
type StreamInfo struct {
	Topic  string `json:"topic"`
	Stream string `json:"stream"`
	// Exists is false when no stream captures the topic yet: the settings
	// are then those the adapter will create it with.
	Exists bool `json:"exists"`
	// CreatedBy is "msgmesh" for a stream the adapter created, "operator"
	// for any other (it is never changed by msgmesh).
	CreatedBy string `json:"created_by,omitempty"`
	// The stream's settings, as the broker reports them (topology's
	// names): retention limits, interest or workqueue; durations in Go's
	// notation, "0s" for none; sizes in bytes, -1 for none.
	Retention  string `json:"retention"`
	MaxAge     string `json:"max_age"`
	MaxBytes   int64  `json:"max_bytes"`
	MaxMsgs    int64  `json:"max_msgs"`
	Discard    string `json:"discard"`
	Storage    string `json:"storage"`
	Replicas   int    `json:"replicas"`
	Duplicates string `json:"duplicates"`
	// Messages and Bytes are what the stream holds now, Consumers how
	// many durable consumers it has (exists only).
	Messages  uint64 `json:"messages"`
	Bytes     uint64 `json:"bytes"`
	Consumers int    `json:"consumers"`
}

// StreamDescriber is implemented by adapters that keep a topic in a
// stream of settings of its own (NATS JetStream), so that operators can see
// the settings in effect (GET /v1/streams, meshctl streams). It must return
// within ctx and must not create anything.
type StreamDescriber interface {
	DescribeStream(ctx context.Context, topic string) (StreamInfo, error)
}

// ErrGroupConflict: the cluster cannot give this consumer group its own
// consumer of the topic next to the groups that consume it already (a
// NATS work-queue stream takes one consumer per subject). Returned by
// GroupChecker.CheckGroups.
var ErrGroupConflict = errors.New("broker: consumer group conflict")

// GroupChecker is implemented by adapters whose cluster can refuse a
// second consumer group on a topic. The sidecar calls it when an app
// registers, with every consumer group its registrations (the new one
// included) would consume topic with, and refuses the registration when
// the error wraps ErrGroupConflict: the group would never receive a
// message, and its upstream consumer would retry for ever. Other errors
// (the cluster cannot be asked) do not block the registration.
// CheckGroups must return within ctx.
type GroupChecker interface {
	CheckGroups(ctx context.Context, topic string, groups []string) error
}

// Lagger is implemented by consumers whose broker says cheaply how far the
// group is behind (NATS JetStream's consumer info). Lag is the number of
// messages of the topic the group has not acked: not yet delivered, plus
// delivered and awaiting an ack. It makes one round trip to the broker and
// must return within ctx; ErrUnavailable while the consumer has not been
// created on the broker yet. Kafka and RocketMQ adapters do not implement
// it: their lag needs the end offsets of every partition or queue.
type Lagger interface {
	Lag(ctx context.Context) (int64, error)
}
