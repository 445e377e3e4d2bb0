package kafkabroker

import (
	"math"
	"slices"

	"github.com/msgmesh/msgmesh/broker"
)

// BlockedInNext reports whether a Next of c is waiting for the reader (or
// for a nacked message to become due), for tests that must act on a
// blocked Next without sleeping.
func BlockedInNext(c broker.Consumer) bool {
	cc := c.(*consumer)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.cancelFetch != nil
}

// Assigned lists the partitions the group assigned to c in its current
// generation (none while it rebalances).
func Assigned(c broker.Consumer) []int {
	cc := c.(*consumer)
	cc.tmu.Lock()
	defer cc.tmu.Unlock()
	var ps []int
	for p, t := range cc.parts {
		if t.owned {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	return ps
}

// IsLeader reports whether c assigned the group's current generation.
func IsLeader(c broker.Consumer) bool { return c.(*consumer).leader.Load() }

// ReadTo is one past the last offset of partition that c recorded as
// handed out (0: none), or -1 when c does not track the partition. A
// partition read under an inheritance records each offset as its fetcher
// reads it, so tests can wait for the fetcher to get that far.
func ReadTo(c broker.Consumer, partition int) int64 {
	cc := c.(*consumer)
	cc.tmu.Lock()
	defer cc.tmu.Unlock()
	if t := cc.parts[partition]; t != nil {
		return t.next
	}
	return -1
}

// RoundsOversized lets messages of any size share a publish round, so that
// a message the Writer refuses for its size reaches the round fallback.
func RoundsOversized(b *Broker) { b.pq.roundBytes = math.MaxInt64 }

// PublishRounds is how many rounds the publish queue wrote, and how many
// messages of refused rounds it gave back to be written alone.
func PublishRounds(b *Broker) (rounds, givenBack int64) {
	return b.pq.rounds.Load(), b.pq.givenBack.Load()
}
