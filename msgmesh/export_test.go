package msgmesh

// HTTPPullsWaiting counts HTTP pulls waiting for messages, so tests wait
// for a long poll to be in place instead of sleeping.
func (sc *Sidecar) HTTPPullsWaiting() int {
	hp := &sc.httpPulls
	hp.mu.Lock()
	defer hp.mu.Unlock()
	n := 0
	for _, s := range hp.sessions {
		s.mu.Lock()
		n += len(s.pulls)
		s.mu.Unlock()
	}
	return n
}
