package kafkabroker

import (
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
