package kafkabroker

import "github.com/msgmesh/msgmesh/broker"

// BlockedInNext reports whether a Next of c is waiting for the reader (or
// for a nacked message to become due), for tests that must act on a
// blocked Next without sleeping.
func BlockedInNext(c broker.Consumer) bool {
	cc := c.(*consumer)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.cancelFetch != nil
}
