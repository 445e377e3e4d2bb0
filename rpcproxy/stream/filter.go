package stream

import (
	"context"
	"time"
)

// ExchangeKind says what an exchange carries.
type ExchangeKind uint8

const (
	// ExchangeRPC is a request and its answer, forwarded by the RPC proxy.
	ExchangeRPC ExchangeKind = iota + 1
	// ExchangePublish is a message an app publishes, answered by the
	// broker's acknowledgement.
	ExchangePublish
	// ExchangeDeliver is a message pushed or pulled to an app, answered by
	// its ack or nack.
	ExchangeDeliver
)

func (k ExchangeKind) String() string {
	switch k {
	case ExchangeRPC:
		return "rpc"
	case ExchangePublish:
		return "publish"
	case ExchangeDeliver:
		return "deliver"
	}
	return "unknown"
}

// Exchange is one request and its answer as the filter chain sees it,
// whichever application runs it: an RPC call routed to a cluster, or a
// message published to a topic or delivered from one. The application
// fills the fields it knows before OnRequest and the outcome before
// OnResponse; filters read them and must not keep the Exchange after
// OnResponse returns (applications reuse it).
type Exchange struct {
	// Ctx is the context the exchange runs under (the connection's; it
	// ends when the connection or the proxy shuts down).
	Ctx  context.Context
	Kind ExchangeKind
	// Listener names where the request came in ("egress", "ingress",
	// "mesh"); Protocol is the codec's name.
	Listener string
	Protocol string
	// Route is the key limits and metrics are kept by: the route's name
	// for RPC, the topic for messages. Empty when nothing matched.
	Route string
	// Target is what the request addressed: the RPC service (HTTP host),
	// or the topic. Path is the RPC method or HTTP path, or the consumer
	// group of a delivery.
	Target string
	Path   string
	// Cluster and Upstream say where the request went: the cluster's name
	// (or the broker) and the host address, once known.
	Cluster  string
	Upstream string
	// ReqBytes and RespBytes are the sizes on the wire.
	ReqBytes  int
	RespBytes int
	// Status is the outcome in HTTP terms (200, 404, 503, 504, ...), set
	// before OnResponse; Err is the proxy's error when it answered itself.
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

// Filter is one stage of the chain that every exchange passes through on
// the stream layer. OnRequest runs before the request is forwarded;
// returning an error refuses it, and the application answers with that
// error (a *Error keeps its code; anything else is ErrInternal).
// OnResponse runs once the outcome is known (answered, failed or refused)
// and before the caller is sent the answer, for every filter whose
// OnRequest returned nil, in reverse order, so a filter can release what
// its OnRequest took before the caller can send its next request. Both run on the request's
// goroutine and must be safe for concurrent use.
type Filter interface {
	OnRequest(x *Exchange) error
	OnResponse(x *Exchange)
}

// Chain runs filters in order. The zero value (and nil) is an empty chain.
type Chain struct{ filters []Filter }

// NewChain returns a chain of fs, run in the order given.
func NewChain(fs ...Filter) *Chain { return &Chain{filters: fs} }

// OnRequest runs every filter's OnRequest until one refuses. It returns how
// many passed, to hand to OnResponse, and the refusal.
func (c *Chain) OnRequest(x *Exchange) (passed int, err error) {
	if c == nil {
		return 0, nil
	}
	for i, f := range c.filters {
		if err := f.OnRequest(x); err != nil {
			return i, err
		}
	}
	return len(c.filters), nil
}

// OnResponse runs OnResponse of the first passed filters, last first.
func (c *Chain) OnResponse(x *Exchange, passed int) {
	if c == nil {
		return
	}
	for i := passed - 1; i >= 0; i-- {
		c.filters[i].OnResponse(x)
	}
}

// Len returns the number of filters.
func (c *Chain) Len() int {
	if c == nil {
		return 0
	}
	return len(c.filters)
}
