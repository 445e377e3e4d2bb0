package natsbroker

import "github.com/msgmesh/msgmesh/broker"

// NoStoreReserve makes e's store watch keep no free space in reserve, so
// that tests can fill the disk up to the write errors the reserve avoids.
func NoStoreReserve(e *Embedded) {
	e.store.checkMu.Lock()
	defer e.store.checkMu.Unlock()
	e.store.reserve = func(int64) int64 { return 0 }
}

// ShutdownJetStream shuts e's JetStream down the way nats-server does
// itself when it runs out of space under a mirror or a replicated stream
// ("JetStream out of resources, will be DISABLED").
func ShutdownJetStream(e *Embedded) error { return e.server().ShutdownJetStream() }

// PendingPublishes counts the publishes waiting for their topic's publish
// in flight (batch.go), over every topic.
func PendingPublishes(b *Broker) int {
	b.smu.RLock()
	defer b.smu.RUnlock()
	n := 0
	for _, ref := range b.streams {
		n += ref.sends.Pending()
	}
	return n
}

// Batches counts the atomic batches b sent.
func Batches(b *Broker) uint64 { return b.batches.Load() }

// TopicBusy reports whether a publish to topic is in flight through its
// queue (batch.go).
func TopicBusy(b *Broker, topic string) bool {
	b.smu.RLock()
	defer b.smu.RUnlock()
	ref := b.streams[topic]
	return ref != nil && ref.sends.Busy()
}

// RepliesInUse counts the reply inboxes held by publishes in flight.
func RepliesInUse(b *Broker) int {
	b.replies.mu.Lock()
	defer b.replies.mu.Unlock()
	return b.replies.live - len(b.replies.idle)
}

// PullsGivenUp counts the times c's fetchers took their requests in flight
// as lost (fetchLost) and dropped their inbox; 0 when c has no fetcher.
func PullsGivenUp(c broker.Consumer) int64 {
	cc := c.(*consumer)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.iter == nil {
		return 0
	}
	return cc.iter.given.Load()
}

// ForceReconnect drops b's connection to the server and reconnects, as a
// broken connection would.
func ForceReconnect(b *Broker) error { return b.nc.ForceReconnect() }
