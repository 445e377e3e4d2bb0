package stream

import "testing"

// A host's multiplexed connections fill in order: calls share the first
// connection (and its write syscalls) until spillAt are in flight on it,
// then go to the least busy; failing connections are skipped.
func TestPickFillsFirstConnection(t *testing.T) {
	a, b, c := &uconn{}, &uconn{}, &uconn{}
	h := &host{conns: []*uconn{a, b, c}}
	if got := h.pickLocked(false); got != a {
		t.Fatal("an idle host's pick is not its first connection")
	}
	a.inflight.Store(spillAt - 1)
	if got := h.pickLocked(false); got != a {
		t.Fatal("the first connection below spillAt was passed over")
	}
	a.inflight.Store(spillAt + 3)
	b.inflight.Store(spillAt + 5)
	c.inflight.Store(spillAt + 1)
	if got := h.pickLocked(false); got != c {
		t.Fatal("with every connection at spillAt, the pick is not the least busy")
	}
	a.inflight.Store(0)
	a.dead.Store(true)
	if got := h.pickLocked(false); got != c {
		t.Fatal("a failing connection was picked")
	}
	b.dead.Store(true)
	c.dead.Store(true)
	if got := h.pickLocked(false); got != nil {
		t.Fatal("a pick among failing connections only")
	}
}

// RoundRobinConns (a load generator's way) takes the live connections in
// turn.
func TestPickRoundRobin(t *testing.T) {
	a, b, c := &uconn{}, &uconn{}, &uconn{}
	h := &host{conns: []*uconn{a, b, c}}
	b.dead.Store(true)
	var got []*uconn
	for range 4 {
		got = append(got, h.pickLocked(true))
	}
	if got[0] != a || got[1] != c || got[2] != a || got[3] != c {
		t.Fatal("round robin does not take the live connections in turn")
	}
}
