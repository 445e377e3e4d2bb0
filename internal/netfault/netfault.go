// Package netfault injects network faults between two real TCP endpoints,
// for tests and benchmarks that must see what a sidecar does when the
// network, not the peer, fails (docs/forwarding.md §3.3).
//
// A Relay listens on loopback and passes bytes both ways between each
// accepted connection and a fresh connection to its target. Cut stops the
// passing in both directions without closing anything: no FIN, no RST,
// no error; writes still succeed until kernel buffers fill, reads just
// wait. That is what a silent partition (a dropped link, a firewall that
// drops, a host that froze) looks like to both ends. Heal resumes it: the
// bytes held meanwhile go through in order, as TCP retransmission would
// deliver them once the path is back.
//
// It is a test helper: it trusts its target and has no limits.
package netfault

import (
	"fmt"
	"net"
	"sync"
)

// Relay is a TCP relay that can be cut silently. Safe for concurrent use.
type Relay struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	cut    bool
	healed chan struct{} // closed while not cut
	closed chan struct{} // closed by Close
	conns  []net.Conn
}

// NewRelay listens on a fresh loopback port and relays each connection to
// target. Close stops it.
func NewRelay(target string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("netfault: listen: %w", err)
	}
	r := &Relay{ln: ln, target: target, healed: make(chan struct{}), closed: make(chan struct{})}
	close(r.healed)
	r.wg.Go(r.accept)
	return r, nil
}

// Addr is the address to dial instead of the target.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Cut stops passing bytes on every connection, present and future, until
// Heal. A connection accepted during a cut completes its TCP handshake with
// the relay (the kernel does that) and then hears nothing.
func (r *Relay) Cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.cut {
		r.cut = true
		r.healed = make(chan struct{})
	}
}

// Heal resumes passing bytes; what was held during the cut goes through.
func (r *Relay) Heal() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cut {
		r.cut = false
		close(r.healed)
	}
}

// Close stops listening, closes every relayed connection and waits for the
// relay's goroutines.
func (r *Relay) Close() error {
	r.mu.Lock()
	select {
	case <-r.closed:
		r.mu.Unlock()
		return nil
	default:
	}
	close(r.closed)
	conns := r.conns
	r.conns = nil
	r.mu.Unlock()
	err := r.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	r.wg.Wait()
	return err
}

// wait blocks while the relay is cut; false once it is closed.
func (r *Relay) wait() bool {
	r.mu.Lock()
	ch := r.healed
	r.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-r.closed:
		return false
	}
}

// track remembers c for Close; false (and c closed) if Close came first.
func (r *Relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.closed:
		_ = c.Close()
		return false
	default:
	}
	r.conns = append(r.conns, c)
	return true
}

func (r *Relay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		if !r.track(c) {
			return
		}
		r.wg.Go(func() { r.connect(c) })
	}
}

// connect dials the target once the relay is not cut (a partition lets no
// SYN through either) and relays both ways.
func (r *Relay) connect(c net.Conn) {
	if !r.wait() {
		return
	}
	u, err := net.Dial("tcp", r.target)
	if err != nil {
		_ = c.Close()
		return
	}
	if !r.track(u) {
		return
	}
	r.wg.Go(func() { r.pipe(u, c) })
	r.wg.Go(func() { r.pipe(c, u) })
}

// pipe copies src to dst, holding bytes while the relay is cut. The end of
// src (EOF or error) closes dst, once the relay is not cut.
func (r *Relay) pipe(dst, src net.Conn) {
	defer func() {
		if r.wait() {
			_ = dst.Close()
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		if !r.wait() {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			// Bytes read just as a cut began are held until Heal.
			if !r.wait() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, reset or Close: the other side sees a close
		}
	}
}
