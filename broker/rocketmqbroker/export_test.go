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
