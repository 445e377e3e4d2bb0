package rocketmqbroker

import (
	"cmp"
	"slices"
	"strings"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/msgmesh/msgmesh/internal/javahash"
)

// javaHashSelector picks a message's queue as Java producers do with
// SelectMessageQueueByHash and the key as its argument, so that messages
// with one key land on one queue whichever client (Java or the sidecar)
// produced them, and keep their order:
//
//	queues[abs(key.hashCode() % len(queues))]
//
// with Java's String.hashCode over the key's UTF-16 code units
// (internal/javahash), and the queue list in the order Java builds it
// from the topic's route: by broker name, then queue id (the Go client
// keeps the route's order instead, so the list is sorted here). A message
// without a key goes round robin.
type javaHashSelector struct {
	rr producer.QueueSelector
}

func newJavaHashSelector() *javaHashSelector {
	return &javaHashSelector{rr: producer.NewRoundRobinQueueSelector()}
}

// Select implements producer.QueueSelector. The key is the message's
// SHARDING_KEY property, which toRocket sets to the message key.
func (s *javaHashSelector) Select(msg *primitive.Message, mqs []*primitive.MessageQueue, lastBrokerName string) *primitive.MessageQueue {
	key := msg.GetShardingKey()
	if key == "" || len(mqs) == 0 {
		return s.rr.Select(msg, mqs, lastBrokerName)
	}
	if !javaOrdered(mqs) {
		mqs = slices.Clone(mqs)
		slices.SortFunc(mqs, compareQueues)
	}
	return mqs[javahash.Index(javahash.String(key), len(mqs))]
}

func compareQueues(a, b *primitive.MessageQueue) int {
	return cmp.Or(strings.Compare(a.BrokerName, b.BrokerName), cmp.Compare(a.QueueId, b.QueueId))
}

// javaOrdered reports whether mqs is in Java's order already (the usual
// case, one broker), so Select need not copy it.
func javaOrdered(mqs []*primitive.MessageQueue) bool {
	return slices.IsSortedFunc(mqs, compareQueues)
}
