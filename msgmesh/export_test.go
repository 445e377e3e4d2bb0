package msgmesh

// HTTPPullsWaiting counts HTTP pulls waiting for messages, so tests wait
// for a long poll to be in place instead of sleeping.
func (sc *Sidecar) HTTPPullsWaiting() int {
	return sc.detached.sum(func(s *session) int { return len(s.pulls) })
}
