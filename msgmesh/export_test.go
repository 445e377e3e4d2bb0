package msgmesh

// HTTPPullsWaiting counts HTTP pulls waiting for messages, so tests wait
// for a long poll to be in place instead of sleeping.
func (sc *Sidecar) HTTPPullsWaiting() int {
	return sc.detached.sum(func(s *session) int { return len(s.pulls) })
}

// HTTPConnsRead lists, per HTTP API connection, the bytes read from it
// since it was last idle and whether its handler waits for its body, so
// tests wait for a partly sent request to be read instead of sleeping.
func (sc *Sidecar) HTTPConnsRead() (read []int, inBody []bool) {
	sc.httpConns.mu.Lock()
	conns := make([]*httpConn, 0, len(sc.httpConns.live))
	for c := range sc.httpConns.live {
		conns = append(conns, c)
	}
	sc.httpConns.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		read, inBody = append(read, len(c.since)), append(inBody, c.inBody)
		c.mu.Unlock()
	}
	return read, inBody
}
