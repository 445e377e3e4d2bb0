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
