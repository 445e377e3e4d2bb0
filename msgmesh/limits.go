package msgmesh

import (
	"fmt"
	"slices"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// Size limits. The sidecar's limits are the only ones an app meets: New
// asks every cluster how large a message it takes (broker.SizeLimiter)
// and lowers the body limit of a cluster's topics until the largest
// message the sidecar accepts fits, so a message too big for a broker is
// refused here with MESSAGE_TOO_BIG, before anything is sent.
const (
	// DefaultMaxMessageSize is Config.MaxMessageSize's default: 1 MiB.
	DefaultMaxMessageSize = 1 << 20
	// DefaultMaxHeaderBytes is Config.MaxHeaderBytes's default: 8 KiB of
	// key and headers, which every broker carries (RocketMQ allows about
	// 16 KiB once the key is stored twice; NATS 64 KiB).
	DefaultMaxHeaderBytes = 8 << 10
	// AddedHeaderBytes is the room kept, beyond MaxHeaderBytes, for the
	// headers the sidecar adds itself (the trace context it injects): a
	// cluster must take MaxHeaderBytes + AddedHeaderBytes of headers.
	AddedHeaderBytes = 256
	// frameSlack is what a PUBLISH frame holds beyond the body, key and
	// headers: the frame header, the topic and the length prefixes.
	frameSlack = 4 << 10
)

// clusterLimits returns the largest body each cluster of cfg takes with
// MaxHeaderBytes of key and headers: MaxMessageSize, or less (with a
// warning) for a cluster whose broker takes no larger message. A cluster
// that cannot take MaxHeaderBytes of headers at all is a configuration
// error.
func clusterLimits(cfg *Config) (map[string]int, error) {
	names := make([]string, 0, len(cfg.Brokers))
	for name := range cfg.Brokers {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make(map[string]int, len(names))
	headerBytes := cfg.MaxHeaderBytes + AddedHeaderBytes
	for _, name := range names {
		limit := cfg.MaxMessageSize
		if sl, ok := cfg.Brokers[name].(broker.SizeLimiter); ok {
			switch mb := sl.MaxBody(headerBytes); {
			case mb < 1:
				return nil, fmt.Errorf("msgmesh: config: cluster %q cannot store a message with %d bytes of key and headers "+
					"(MaxHeaderBytes %d plus %d for the trace context the sidecar adds): lower MaxHeaderBytes or raise the broker's message size limit",
					name, headerBytes, cfg.MaxHeaderBytes, AddedHeaderBytes)
			case mb < limit:
				cfg.Logger.Warn("the broker takes smaller messages than the sidecar's limit; bodies published to this cluster's topics are limited to max_body",
					"cluster", name, "max_body", mb, "max_message_size", cfg.MaxMessageSize, "max_header_bytes", cfg.MaxHeaderBytes)
				limit = mb
			}
		}
		out[name] = limit
	}
	return out, nil
}

// MaxBody is the largest body a publish to topic may carry: the
// Config.MaxMessageSize, or less when the topic's cluster takes no larger
// message with MaxHeaderBytes of key and headers (New logs a warning for
// such a cluster). A topic's own limit (Config.Flow) may be lower still.
func (s *Sidecar) MaxBody(topic string) int {
	return s.maxBody[s.clusterOf(topic)]
}

// checkSize refuses a message larger than the sidecar takes for cluster:
// its body over the cluster's limit, or its key and headers over
// MaxHeaderBytes.
func (s *Sidecar) checkSize(m *broker.Message, cluster string) error {
	if limit := s.maxBody[cluster]; len(m.Body) > limit {
		why := ""
		if limit < s.cfg.MaxMessageSize {
			why = fmt.Sprintf(" (cluster %q takes no larger body with %d bytes of headers)", cluster, s.cfg.MaxHeaderBytes)
		}
		return fmt.Errorf("%w: body of %d bytes exceeds the limit of %d bytes%s", ErrMessageTooBig, len(m.Body), limit, why)
	}
	if n := broker.HeaderBytes(m); n > s.cfg.MaxHeaderBytes {
		return fmt.Errorf("%w: key and headers take %d bytes (the key, plus name, value and 4 bytes per header), over the limit of %d bytes",
			ErrMessageTooBig, n, s.cfg.MaxHeaderBytes)
	}
	return nil
}

// defaultFrameSize is the frame limit that fits the largest PUBLISH the
// limits allow, and at least the protocol's default.
func defaultFrameSize(maxMessage, maxHeader int) int {
	return max(mesh.DefaultMaxFrameSize, maxMessage+maxHeader+frameSlack)
}
