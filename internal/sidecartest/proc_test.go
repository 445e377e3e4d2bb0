package sidecartest

import (
	"strings"
	"testing"
)

// TestRaceInside: the filter that lets a known third-party race through
// must still catch a race whose access is in msgmesh's own code.
func TestRaceInside(t *testing.T) {
	const client = "github.com/apache/rocketmq-client-go/"
	known := `WARNING: DATA RACE
Write at 0x00c0001e7040 by main goroutine:
  runtime.closechan()
      /usr/local/go/src/runtime/chan.go:414 +0x0
  github.com/apache/rocketmq-client-go/v2/consumer.(*defaultConsumer).shutdown.func1()
      /x/consumer.go:302 +0x1a8
  github.com/msgmesh/msgmesh/broker/rocketmqbroker.(*consumer).shutdown()
      /x/consumer.go:277 +0x183

Previous read at 0x00c0001e7040 by goroutine 182:
  runtime.chansend()
      /usr/local/go/src/runtime/chan.go:176 +0x0
  github.com/apache/rocketmq-client-go/v2/consumer.(*processQueue).putMessage()
      /x/process_queue.go:128 +0x4a4
`
	ours := strings.Replace(known, "github.com/apache/rocketmq-client-go/v2/consumer.(*processQueue).putMessage()",
		"github.com/msgmesh/msgmesh/msgmesh.(*session).push()", 1)
	if !raceInside(known, client) {
		t.Error("a race wholly inside the client was not recognised")
	}
	if raceInside(ours, client) {
		t.Error("a race with one access in msgmesh was let through")
	}
}
