package broker

import (
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
	for range 8 { // wrappers nest a few levels at most
		if p, isPos := d.(Positioner); isPos {
			partition, offset = p.Position()
			return partition, offset, true
		}
		u, isWrapper := d.(interface{ Unwrap() Delivery })
		if !isWrapper {
			break
		}
		d = u.Unwrap()
	}
	return 0, 0, false
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
