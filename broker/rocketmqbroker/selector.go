package rocketmqbroker

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

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
//
// It also keeps, per topic, the queue list the client last selected from,
// so that the adapter can pick a message's queue before sending (pick)
// and group the publishes to one queue (batch.go). A batch's queue is the
// one the adapter picked, carried in the batch message's Queue.
type javaHashSelector struct {
	rr     producer.QueueSelector
	next   atomic.Uint32 // round robin of pick, for messages without a key
	routes sync.Map      // RocketMQ topic → *queueRoute
}

// queueRoute is a topic's queues in Java's order, as the client last
// selected among them, and a sendQueue for each.
type queueRoute struct {
	src    []*primitive.MessageQueue // the client's list, to notice a new route
	mqs    []*primitive.MessageQueue
	queues []*sendQueue
}

func newJavaHashSelector() *javaHashSelector {
	return &javaHashSelector{rr: producer.NewRoundRobinQueueSelector()}
}

// Select implements producer.QueueSelector. The key is the message's
// SHARDING_KEY property, which toRocket sets to the message key.
// A message whose queue the adapter picked (pick, batch.go) goes to that
// queue, without hashing its key again. When the route no longer has that
// queue, a single message is placed by the rule below, and a batch goes
// to none (the client then fails the send with "route info not found",
// and the members are sent alone).
func (s *javaHashSelector) Select(msg *primitive.Message, mqs []*primitive.MessageQueue, lastBrokerName string) *primitive.MessageQueue {
	if len(mqs) == 0 {
		return s.rr.Select(msg, mqs, lastBrokerName)
	}
	route := s.record(msg.Topic, mqs)
	if q := msg.Queue; q != nil {
		for _, mq := range mqs {
			if mq == q || mq.BrokerName == q.BrokerName && mq.QueueId == q.QueueId {
				return mq
			}
		}
	}
	if msg.Batch {
		return nil
	}
	key := msg.GetShardingKey()
	if key == "" {
		return s.rr.Select(msg, mqs, lastBrokerName)
	}
	return route.mqs[javahash.Index(javahash.String(key), len(route.mqs))]
}

// record returns topic's route for the client's queue list mqs, making a
// new one when the list is not the one recorded last (the client makes a
// new list for each route it learns).
func (s *javaHashSelector) record(topic string, mqs []*primitive.MessageQueue) *queueRoute {
	if v, ok := s.routes.Load(topic); ok {
		r := v.(*queueRoute)
		if len(r.src) == len(mqs) && &r.src[0] == &mqs[0] {
			return r
		}
	}
	r := &queueRoute{src: mqs, mqs: mqs, queues: make([]*sendQueue, len(mqs))}
	if !javaOrdered(mqs) {
		r.mqs = slices.Clone(mqs)
		slices.SortFunc(r.mqs, compareQueues)
	}
	for i := range r.queues {
		r.queues[i] = new(sendQueue)
	}
	s.routes.Store(topic, r)
	return r
}

// pick is Select's choice for msg, a message to be sent alone, made
// before sending, from the queue list the client last selected from for
// its topic; messages without a key take turns. It returns the queue's
// sendQueue, or nil when no send to the topic selected a queue yet.
func (s *javaHashSelector) pick(msg *primitive.Message) (*primitive.MessageQueue, *sendQueue) {
	v, ok := s.routes.Load(msg.Topic)
	if !ok {
		return nil, nil
	}
	r := v.(*queueRoute)
	var i int
	if key := msg.GetShardingKey(); key != "" {
		i = javahash.Index(javahash.String(key), len(r.mqs))
	} else {
		i = int(s.next.Add(1) % uint32(len(r.mqs)))
	}
	return r.mqs[i], r.queues[i]
}

func compareQueues(a, b *primitive.MessageQueue) int {
	return cmp.Or(strings.Compare(a.BrokerName, b.BrokerName), cmp.Compare(a.QueueId, b.QueueId))
}

// javaOrdered reports whether mqs is in Java's order already (the usual
// case, one broker), so Select need not copy it.
func javaOrdered(mqs []*primitive.MessageQueue) bool {
	return slices.IsSortedFunc(mqs, compareQueues)
}
