//go:build !race

package rocketmqbroker

// raceFence is a no-op outside race builds; see race.go.
func raceFence() {}

// raceBuild says whether the race detector is on.
const raceBuild = false
