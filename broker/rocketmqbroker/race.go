//go:build race

package rocketmqbroker

import "os"

// raceFence exists for the race detector only (norace.go has an empty
// one). The RocketMQ client v2.1.2 shuts a consumer down without waiting
// for its own goroutines: it sets a plain bool that its rebalance
// goroutines read. (It also closed the channels its pull goroutines send
// to; third_party/rocketmq-client-go has that patched out, see its
// PATCHES.md.) Those goroutines follow each such read with a socket write
// (their next request) within microseconds, long before the adapter shuts
// down, but nothing synchronizes them with the shutdown, so the race
// detector reports the client's accesses. The detector treats a
// successful read system call as acquiring every earlier write system
// call of the process (package syscall, ioSync); raceFence does such a
// read, so that client accesses followed by a socket write happen before
// the shutdown as far as the detector can tell. It adds no other ordering.
func raceFence() {
	r, w, err := os.Pipe()
	if err != nil {
		return
	}
	defer r.Close()
	defer w.Close()
	if _, err := w.Write([]byte{0}); err != nil {
		return
	}
	var b [1]byte
	_, _ = r.Read(b[:])
}

// raceBuild says whether the race detector is on.
const raceBuild = true
