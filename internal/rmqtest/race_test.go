//go:build race

package rmqtest_test

import "os"

// raceFence: see broker/rocketmqbroker/race.go. Tests call it
// right before shutting a client down, because the client v2.1.2 does not
// synchronise its shutdown with its own goroutines.
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
