package freeport

import (
	"net"
	"testing"
)

// The address is on loopback, below the ephemeral range where Linux has
// one, and can be bound.
func TestAddr(t *testing.T) {
	addr, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr() = %q, %v: want a 127.0.0.1 host:port", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("cannot bind %s: %v", addr, err)
	}
	ln.Close()
}

// Picks not yet bound are never handed out twice: a server told two
// addresses at once (mesh and HTTP) gets two ports, however many picks
// (up to keep) come before either is bound. 1,000 picks from the 10,000
// ports below the ephemeral range would repeat some 50 times by chance.
func TestAddrNeverRepeatsUnboundPicks(t *testing.T) {
	seen := map[string]bool{}
	for range keep {
		addr, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice before it was bound", addr)
		}
		seen[addr] = true
	}
}

// The set forgets its oldest picks past keep, so it stays bounded.
func TestRecentPicksBounded(t *testing.T) {
	var r recentPicks
	if !r.take("a") || r.take("a") {
		t.Fatal("a second take of the same address was not refused")
	}
	for i := range keep {
		r.take(string(rune('b' + i)))
	}
	if len(r.set) != keep || len(r.order) != keep {
		t.Fatalf("%d in the set, %d in order; want %d", len(r.set), len(r.order), keep)
	}
	if !r.take("a") {
		t.Fatal("the oldest pick was not forgotten after keep more")
	}
}
