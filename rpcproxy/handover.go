package rpcproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"

	"github.com/msgmesh/msgmesh/core"
)

// Handover is the RPC proxy's part of a hot upgrade (docs/upgrade.md): its
// listening sockets and the callers' connections, each with the bytes read
// from it but not yet parsed. A request/response connection carries
// requests one way only, so once the calls read from it are answered it
// can move as is, cut at a request boundary. Upstream connections (to
// other sidecars, and to the local app) do not move: the successor dials
// its own.
type Handover struct {
	Egress  *os.File    `json:"-"` // nil: no egress listener
	Ingress *os.File    `json:"-"` // nil: none, or closed for an unhealthy app
	Conns   []ConnState `json:"conns"`
}

// ConnState is one caller's connection in flight between two processes.
type ConnState struct {
	File     *os.File `json:"-"`
	Listener string   `json:"listener"` // "egress" or "ingress"
	// Buffered are bytes read from the caller but not yet parsed: the
	// start of its next request.
	Buffered []byte `json:"buffered,omitempty"`
}

// Files names every file: "egress", "ingress" and "conn/<i>" for Conns[i].
func (h *Handover) Files() map[string]*os.File {
	fs := map[string]*os.File{}
	if h.Egress != nil {
		fs["egress"] = h.Egress
	}
	if h.Ingress != nil {
		fs["ingress"] = h.Ingress
	}
	for i, c := range h.Conns {
		fs[fmt.Sprintf("conn/%d", i)] = c.File
	}
	return fs
}

// SetFiles puts back the files by the names Files gave them.
func (h *Handover) SetFiles(fs map[string]*os.File) error {
	h.Egress, h.Ingress = fs["egress"], fs["ingress"]
	for i := range h.Conns {
		if h.Conns[i].File = fs[fmt.Sprintf("conn/%d", i)]; h.Conns[i].File == nil {
			return fmt.Errorf("rpcproxy: handover: connection %d of %d is missing", i, len(h.Conns))
		}
	}
	return nil
}

// Close closes every file; the sockets live on in whoever holds copies.
func (h *Handover) Close() {
	for _, f := range h.Files() {
		_ = f.Close()
	}
}

// Freeze stops the proxy for a successor process and returns what it
// needs: it keeps copies of the listening sockets and stops accepting
// (new connections queue in the kernel), stops reading every caller's
// connection, lets the calls already read finish and answers them, and
// captures each connection with its unread bytes instead of closing it.
// Calls still running when ctx ends fail as at Shutdown, and their
// connections close. Afterwards the proxy is stopped, as after Shutdown.
func (p *Proxy) Freeze(ctx context.Context) (*Handover, error) {
	h, err := &Handover{}, errors.New("rpcproxy: already stopped")
	p.shutOnce.Do(func() {
		h, err = p.freeze(ctx)
		p.shutErr = err
	})
	return h, err
}

func (p *Proxy) freeze(ctx context.Context) (*Handover, error) {
	h := &Handover{}
	var err error
	fail := func(err error) (*Handover, error) {
		h.Close()
		_ = p.shutdown(ctx) // nothing can move: stop as at Shutdown
		return nil, err
	}
	if p.egress != nil {
		if h.Egress, err = core.FileOf(p.egress.ln); err != nil {
			return fail(fmt.Errorf("rpcproxy: egress listener: %w", err))
		}
	}
	if p.ingress != nil {
		if h.Ingress, err = p.ingress.sw.file(); err != nil {
			return fail(fmt.Errorf("rpcproxy: ingress listener: %w", err))
		}
	}
	p.freezing.Store(true)
	if err := p.shutdown(ctx); err != nil {
		p.log.Warn("freeze: calls still running at the deadline failed; their connections closed", "err", err)
	}
	p.connMu.Lock()
	h.Conns, p.frozen = p.frozen, nil
	p.connMu.Unlock()
	p.log.Info("rpc proxy frozen for a successor", "connections", len(h.Conns))
	return h, nil
}

// Adopt makes Start take over h's listeners instead of opening its own,
// and serve h's connections from their unread bytes on. Call it before
// Start; Start owns h's files from then on. A connection of a listener
// this proxy does not run (ingress turned off) is closed.
func (p *Proxy) Adopt(h *Handover) { p.inherit = h }

// adoptListener returns the inherited listener f, or a new one on addr.
func adoptListener(f *os.File, addr string) (net.Listener, error) {
	if f == nil {
		return net.Listen("tcp", addr)
	}
	defer f.Close()
	return net.FileListener(f)
}

// adoptConns serves the inherited connections, each on the server of its
// listener.
func (p *Proxy) adoptConns(conns []ConnState) {
	for _, cs := range conns {
		l := p.egress
		if cs.Listener == "ingress" {
			l = p.ingress
		}
		conn, err := net.FileConn(cs.File)
		_ = cs.File.Close()
		switch {
		case err != nil:
			p.log.Error("adopting a caller's connection", "listener", cs.Listener, "err", err)
			continue
		case l == nil:
			p.log.Warn("a caller's connection came with no listener of its kind here; closing it", "listener", cs.Listener)
			_ = conn.Close()
			continue
		}
		pre := cs.Buffered
		if !l.srv.Go(func(ctx context.Context) { p.serveConn(ctx, l, conn, pre) }) {
			_ = conn.Close()
		}
	}
}

// tapReader records what is read from a caller's connection since the last
// request boundary, so that a connection frozen while a request was only
// partly read carries those bytes to the successor.
type tapReader struct {
	r     io.Reader
	since []byte
	read  atomic.Int64 // bytes read in all, for tests
}

func (t *tapReader) Read(b []byte) (int, error) {
	n, err := t.r.Read(b)
	t.since = append(t.since, b[:n]...)
	t.read.Add(int64(n))
	return n, err
}

// boundary marks a whole request read: of what was read since the last
// boundary, only the buffered bytes (the next request's start) remain.
func (t *tapReader) boundary(buffered int) {
	t.since = append(t.since[:0], t.since[len(t.since)-buffered:]...)
}
