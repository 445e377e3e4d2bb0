package rocketmqbroker

import "github.com/msgmesh/msgmesh/broker"

var _ broker.SizeLimiter = (*Broker)(nil)

// DefaultMaxMessageSize is RocketMQ's default maxMessageSize: the largest
// body (as sent, compressed or not) a broker stores.
const DefaultMaxMessageSize = 4 << 20

// compressOver is the client's default CompressMsgBodyOverHowmuch: it
// zlib-compresses larger bodies before sending them, and the broker's
// limit applies to what it receives.
const compressOver = 4 << 10

// MaxBody implements broker.SizeLimiter. RocketMQ bounds a message's body
// (Config.MaxMessageSize, which the client cannot ask the broker for) and,
// separately, its properties, where the key travels twice (KEYS and
// SHARDING_KEY) and each header as name 0x01 value 0x02. A body the
// client compresses may grow when it does not compress (zlib's stored
// blocks: 5 bytes per block of at most 64 KiB, counted here per 16 KiB,
// and 11 bytes of header and trailer).
func (b *Broker) MaxBody(headerBytes int) int {
	// Properties: at most 2 × key + Σ(name + value + 2) ≤ 2 × headerBytes.
	if 2*headerBytes > maxPropertiesLen-clientProperties {
		return -1
	}
	m := b.cfg.MaxMessageSize
	if m <= compressOver {
		return m
	}
	return max(compressOver, (m-16)*16384/16389)
}
