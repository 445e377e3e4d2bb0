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
