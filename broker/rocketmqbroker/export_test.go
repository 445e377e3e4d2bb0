package rocketmqbroker

// Test-only access to the name mapping and internals.
var (
	ConsumerGroup = consumerGroup
	RocketTopic   = rocketTopic
	DelayLevel    = delayLevel
	Classify      = classify
	ToRocket      = toRocket
	FromRocket    = fromRocket
	// RaceBuild says whether the race detector is on.
	RaceBuild = raceBuild
)

// PendingSends counts the publishes waiting for their queue's request in
// flight (batch.go), over every topic.
func PendingSends(b *Broker) int {
	n := 0
	b.sel.routes.Range(func(_, v any) bool {
		for _, q := range v.(*queueRoute).queues {
			n += q.Pending()
		}
		return true
	})
	return n
}
