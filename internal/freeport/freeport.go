// Package freeport picks loopback TCP addresses for servers that must be
// told their address before they bind it: a process started with a
// --listen flag, or a server that must come back on the same address
// after a stop. Tests (through brokertest.FreeAddr) and the benchmark
// use it.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
)

// Addr returns a loopback host:port that was free a moment ago.
//
// Between this check and the caller's bind the port is nobody's, so
// another socket may take it. A port the kernel hands out for ":0" comes
// from the ephemeral range, where every outgoing connection on the
// machine also takes its local port: a test suite that opens thousands of
// connections hit that (a sidecar failed to start with "address already
// in use"). So the port is picked at random among the span ports below
// that range, where only listeners that chose their port live; the
// kernel's ":0" is the fallback.
func Addr() (string, error) {
	if addr, ok := belowEphemeral(); ok {
		return addr, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("freeport: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// span is how many ports below the ephemeral range Addr picks from.
const span = 10000

// belowEphemeral picks a free loopback port below Linux's ephemeral
// range; false where that range is unknown.
func belowEphemeral() (string, bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return "", false
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo <= 1024+span {
		return "", false
	}
	for range 64 {
		addr := fmt.Sprintf("127.0.0.1:%d", lo-1-rand.IntN(span))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // someone's listener
		}
		ln.Close()
		return addr, true
	}
	return "", false
}
