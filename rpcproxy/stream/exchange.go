package stream

import (
	"context"
	"time"
)

// ExchangeKind says what an exchange carries.
type ExchangeKind uint8

const (
	// ExchangeRPC is a request and its answer, forwarded by the RPC proxy.
	// (Publishes and deliveries pass the sidecar's pipeline as events of
	// their own, package pipeline.)
	ExchangeRPC ExchangeKind = iota + 1
)

func (k ExchangeKind) String() string {
	if k == ExchangeRPC {
		return "rpc"
	}
	return "unknown"
}

// Exchange is one RPC call and its answer as the stages of the proxy's
// pipeline see it (pipeline.ExchangeHook, pipeline.ExchangeDoneHook). The
// proxy fills the fields it knows before OnExchange and the outcome
// before OnExchangeDone; stages read them and must not keep the Exchange
// after OnExchangeDone returns (the proxy reuses it).
type Exchange struct {
	// Ctx is the context the exchange runs under (the connection's; it
	// ends when the connection or the proxy shuts down).
	Ctx  context.Context
	Kind ExchangeKind
	// Listener names where the request came in ("egress", "ingress",
	// "mesh"); Protocol is the codec's name.
	Listener string
	Protocol string
	// Route is the key limits and metrics are kept by: the route's name.
	// Empty when nothing matched.
	Route string
	// Target is what the request addressed: the RPC service (HTTP host).
	// Path is the RPC method or HTTP path.
	Target string
	Path   string
	// Cluster and Upstream say where the request went: the cluster's name
	// and the host address, once known.
	Cluster  string
	Upstream string
	// ReqBytes and RespBytes are the sizes on the wire.
	ReqBytes  int
	RespBytes int
	// Status is the outcome in HTTP terms (200, 404, 503, 504, ...), set
	// before OnExchangeDone; Err is the proxy's error when it answered itself.
	Status int
	Err    error
	// Start is when the request was read.
	Start time.Time
	// Headers reads the request's headers; nil when it has none.
	Headers Headers
}

// Headers reads a request's headers.
type Headers interface {
	Get(key string) (string, bool)
}
