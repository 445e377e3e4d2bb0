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
	"sync"
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
//
// A port handed out is not handed out again by this process for the next
// keep picks: its caller binds it only later, and a second pick before
// that (the next address of the same server, say) would find it free.
func Addr() (string, error) {
	for range 64 {
		addr, err := pick()
		if err != nil {
			return "", err
		}
		if given.take(addr) {
			return addr, nil
		}
	}
	return "", fmt.Errorf("freeport: no free port found that this process did not just hand out")
}

// pick is a port that is free now (Addr without the check against its
// latest picks).
func pick() (string, error) {
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

// keep is how many of its latest picks Addr does not hand out again.
const keep = 1024

// given is the process's latest picks. It is process-wide on purpose: the
// ports it keeps apart are one machine's, and every caller in the process
// picks from the same span.
var given recentPicks

// recentPicks is a set of the latest keep addresses, oldest first out.
type recentPicks struct {
	mu    sync.Mutex
	set   map[string]bool
	order []string
}

// take records addr and reports whether it was not among the latest picks.
func (r *recentPicks) take(addr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set[addr] {
		return false
	}
	if r.set == nil {
		r.set = make(map[string]bool, keep)
	}
	if len(r.order) == keep {
		delete(r.set, r.order[0])
		r.order = r.order[1:]
	}
	r.set[addr] = true
	r.order = append(r.order, addr)
	return true
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
