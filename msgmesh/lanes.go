package msgmesh

import (
	"hash/maphash"
	"sync/atomic"
)

// lanePicker picks the publish lane of each message of one stream of
// publishes (a mesh connection, a gRPC publish stream, a CloudEvents
// batch): a message with a key goes to its key's lane, so that messages
// with the same key reach the broker one after the other in the order
// read; one without goes round robin. Each lane publishes one message at
// a time, so a stream has at most as many publishes in flight as lanes
// (Config.PublishLanes).
type lanePicker struct {
	seed maphash.Seed
	rr   atomic.Uint32
}

func newLanePicker() *lanePicker { return &lanePicker{seed: maphash.MakeSeed()} }

// pick is the lane, of n, of a message with key ("" for none).
func (p *lanePicker) pick(key string, n int) int {
	if key != "" {
		return int(maphash.String(p.seed, key) % uint64(n))
	}
	return int(p.rr.Add(1) % uint32(n))
}
