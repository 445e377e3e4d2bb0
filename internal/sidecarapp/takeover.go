package sidecarapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/msgmesh/msgmesh/internal/handoff"
	"github.com/msgmesh/msgmesh/msgmesh"
)

// A second msgmesh on a data directory that a running one holds takes
// over only when started with --upgrade, and only onto the listeners it
// was itself told to open (docs/upgrade.md, "Who takes over").
var (
	// ErrDataDirInUse: a msgmesh runs on the data directory and this
	// process was not started with --upgrade.
	ErrDataDirInUse = errors.New("data directory in use by a running msgmesh")
	// ErrListenersDiffer: with --upgrade, this process's listener flags
	// name other addresses than the ones it would inherit.
	ErrListenersDiffer = errors.New("listener flags differ from the running msgmesh's")
)

// Listener names in a status answer, in the order messages list them,
// with the flag that sets each. Only the first four move to a successor;
// the RPC proxy's listeners do not (the successor opens its own).
var listenerNames = []struct{ name, flag string }{
	{"mesh", "--listen"},
	{"http", "--http"},
	{"forwarding", "--forward-listen"},
	{"grpc", "--grpc"},
	{"rpc egress", ""},
	{"rpc ingress", ""},
}

// upgradeOpts say whether this process may take over a running msgmesh
// (--upgrade) and which listeners it was told to open: those it would
// inherit must name the same addresses.
type upgradeOpts struct {
	enabled bool
	// want maps a listener name ("mesh", "http", "forwarding", "grpc") to this
	// process's flag value; a listener it does not open is absent.
	want map[string]string
}

// Timeouts of the status exchange. A running msgmesh answers at once; one
// that is handing over to another successor answers after that handoff.
const (
	statusTimeout = 10 * time.Second
	// requestTimeout is how long the running side waits for each request
	// on a connection: the successor compares its flags (resolving host
	// names) between the status answer and the takeover request.
	requestTimeout = 30 * time.Second
)

// takeover looks for a msgmesh running on the data directory (its control
// socket sock). With none it returns all nil and the process starts
// fresh. With one and no --upgrade it refuses with ErrDataDirInUse naming
// the running process; with --upgrade whose inherited listeners differ
// from this process's flags, with ErrListenersDiffer naming each. Either
// way the running msgmesh goes on untouched. Otherwise it asks the running
// one to hand over and returns its state, control listener, forwarding
// listener and the connection to tell it "ready" on.
func takeover(sock string, up upgradeOpts, log *slog.Logger) (*msgmesh.HandoffState, *net.UnixListener, *os.File, *net.UnixConn, error) {
	c, err := handoff.Dial(sock, 2*time.Second)
	if errors.Is(err, handoff.ErrNoPredecessor) {
		if up.enabled {
			log.Info("--upgrade: no msgmesh runs on this data directory; starting fresh", "socket", sock)
		}
		return nil, nil, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, nil, err
	}
	st, err := askStatus(c)
	switch {
	case errors.Is(err, errNoStatus) && up.enabled:
		// A msgmesh from before the status message: it closed the socket.
		// Ask again, for the takeover itself.
		log.Warn("the running msgmesh does not report its listeners (an older version); taking over without comparing them with this process's flags")
		c.Close()
		if c, err = handoff.Dial(sock, 2*time.Second); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("hot upgrade: %w", err)
		}
	case errors.Is(err, errNoStatus):
		c.Close()
		return nil, nil, nil, nil, fmt.Errorf("%w: a msgmesh of an older version holds %s; to replace it with this binary (hot upgrade, docs/upgrade.md), start this one with --upgrade; to run another sidecar beside it, give this one its own --data-dir", ErrDataDirInUse, sock)
	case err != nil:
		c.Close()
		return nil, nil, nil, nil, fmt.Errorf("%w: a process holds %s but %v; is a msgmesh hung there, or handing over to another one? Try again, or stop it", ErrDataDirInUse, sock, err)
	case !up.enabled:
		c.Close()
		return nil, nil, nil, nil, fmt.Errorf("%w: %s serves %s; to replace it with this binary (hot upgrade, docs/upgrade.md), start this one with --upgrade and the same listener flags; to run another sidecar beside it, give this one its own --data-dir", ErrDataDirInUse, describe(st), filepath.Dir(sock))
	default:
		if diffs := differing(up.want, st.Listeners); len(diffs) > 0 {
			c.Close()
			return nil, nil, nil, nil, fmt.Errorf("--upgrade: %w (pid %d): %s. A hot upgrade keeps the running sidecar's listening sockets; start this binary with its addresses, or stop it (SIGTERM) and start this one to move them. The running msgmesh goes on unchanged", ErrListenersDiffer, st.PID, strings.Join(diffs, "; "))
		}
		log.Info("--upgrade: taking over from the running msgmesh", "pid", st.PID, "socket", sock)
	}
	fail := func(err error) (*msgmesh.HandoffState, *net.UnixListener, *os.File, *net.UnixConn, error) {
		c.Close()
		return nil, nil, nil, nil, fmt.Errorf("hot upgrade: %w", err)
	}
	if err := handoff.Write(c, handoff.Msg{Op: handoff.OpTakeover, PID: os.Getpid()}); err != nil {
		return fail(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(settleTimeout + 10*time.Second))
	m, err := handoff.Read(c)
	if err != nil {
		return fail(err)
	}
	if m.Op != handoff.OpState {
		return fail(fmt.Errorf("predecessor refused: %s", m.Error))
	}
	_ = c.SetReadDeadline(time.Time{})
	files, err := handoff.RecvFiles(c, m.Files)
	if err != nil {
		return fail(err)
	}
	var hs msgmesh.HandoffState
	if err := json.Unmarshal(m.State, &hs); err != nil {
		return fail(err)
	}
	n := len(files) - len(m.Extra)
	if n < 0 || len(m.Extra) == 0 || m.Extra[0] != "control" {
		return fail(fmt.Errorf("unexpected files %v", m.Extra))
	}
	if err := hs.SetFiles(files[:n]); err != nil {
		return fail(err)
	}
	ctl, err := net.FileListener(files[n])
	files[n].Close()
	if err != nil {
		return fail(err)
	}
	var fwd *os.File
	for i, name := range m.Extra[1:] {
		switch name {
		case "forward":
			fwd = files[n+1+i]
		case "grpc":
			hs.GRPC = files[n+1+i]
		default:
			files[n+1+i].Close() // from a newer predecessor: not for us
		}
	}
	if os.Getenv(testKillAfterReceive) != "" {
		// Test hook: die the hardest way at the worst moment, holding
		// every socket and before adopting any of them.
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	log.Info("received the predecessor's sockets", "connections", len(hs.Conns))
	return &hs, ctl.(*net.UnixListener), fwd, c, nil
}

// errNoStatus: the running process closed the socket on a status request
// (a msgmesh from before OpStatus).
var errNoStatus = errors.New("no status answer")

// askStatus asks the running msgmesh who it is.
func askStatus(c *net.UnixConn) (handoff.Msg, error) {
	if err := handoff.Write(c, handoff.Msg{Op: handoff.OpStatus, PID: os.Getpid()}); err != nil {
		return handoff.Msg{}, fmt.Errorf("did not take a request: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(statusTimeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	m, err := handoff.Read(c)
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		return handoff.Msg{}, errNoStatus
	case errors.As(err, &ne) && ne.Timeout():
		return handoff.Msg{}, fmt.Errorf("did not answer within %s", statusTimeout)
	case err != nil:
		return handoff.Msg{}, err
	case m.Op != handoff.OpStatus:
		return handoff.Msg{}, fmt.Errorf("answered %q to a status request", m.Op)
	}
	return m, nil
}

// describe names a running msgmesh: "pid 42 (mesh 127.0.0.1:7600, http
// 127.0.0.1:7601)".
func describe(st handoff.Msg) string {
	var ls []string
	for _, l := range listenerNames {
		if a, ok := st.Listeners[l.name]; ok {
			ls = append(ls, l.name+" "+a)
		}
	}
	return fmt.Sprintf("pid %d (%s)", st.PID, strings.Join(ls, ", "))
}

// differing lists, for each listener this process would inherit, the flag
// whose value names another address than the running one's.
func differing(want, running map[string]string) []string {
	var out []string
	for _, l := range listenerNames {
		flag, ok := want[l.name]
		bound, inherited := running[l.name]
		if !ok || !inherited {
			continue // not moved: this process opens its own, or none
		}
		if !sameAddr(flag, bound) {
			out = append(out, fmt.Sprintf("%s %s (the running msgmesh's %s listener is %s)", l.flag, flag, l.name, bound))
		}
	}
	return out
}

// sameAddr reports whether a listener flag (host:port as given) names the
// bound address: the same port (port 0 matches any), and the same IP
// (a name matches any address it resolves to; an empty host, 0.0.0.0 and
// :: all mean every interface).
func sameAddr(flag, bound string) bool {
	if flag == bound {
		return true
	}
	fh, fp, err1 := net.SplitHostPort(flag)
	bh, bp, err2 := net.SplitHostPort(bound)
	if err1 != nil || err2 != nil {
		return false
	}
	fport, err1 := net.LookupPort("tcp", fp)
	bport, err2 := net.LookupPort("tcp", bp)
	if err1 != nil || err2 != nil || (fport != 0 && fport != bport) {
		return false
	}
	bip, err := netip.ParseAddr(bh)
	if err != nil {
		return fh == bh
	}
	bip = bip.WithZone("").Unmap()
	if fh == "" {
		return bip.IsUnspecified()
	}
	if fip, err := netip.ParseAddr(fh); err == nil {
		fip = fip.WithZone("").Unmap()
		return fip == bip || fip.IsUnspecified() && bip.IsUnspecified()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", fh)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if ip.WithZone("").Unmap() == bip {
			return true
		}
	}
	return false
}

// status is this runtime's answer to a status request.
func (rt *runtime) status() handoff.Msg {
	ls := map[string]string{
		"mesh": rt.sc.Addr().String(),
		"http": rt.sc.HTTPAddr().String(),
	}
	if rt.link != nil {
		ls["forwarding"] = rt.link.ln.Addr().String()
	}
	if a := rt.sc.GRPCAddr(); a != nil {
		ls["grpc"] = a.String()
	}
	if rt.proxy != nil {
		if a := rt.proxy.EgressAddr(); a != nil {
			ls["rpc egress"] = a.String()
		}
		if a := rt.proxy.IngressAddr(); a != nil {
			ls["rpc ingress"] = a.String()
		}
	}
	return handoff.Msg{Op: handoff.OpStatus, PID: os.Getpid(), Listeners: ls}
}

// acceptOne serves requests on the control socket in the background until
// one asks to take over, and hands that connection on. Status requests
// are answered with status.
func acceptOne(ln *net.UnixListener, status handoff.Msg, log *slog.Logger) <-chan *net.UnixConn {
	ch := make(chan *net.UnixConn, 1)
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return // closed: the runtime stopped listening
			}
			if takeoverRequested(c, status, log) {
				ch <- c
				return
			}
			c.Close()
		}
	}()
	return ch
}

// takeoverRequested reads a connection's requests, answering a status
// request, until one asks to take over (true) or the peer goes away or
// dawdles (false).
func takeoverRequested(c *net.UnixConn, status handoff.Msg, log *slog.Logger) bool {
	for range 2 {
		_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
		m, err := handoff.Read(c)
		if err != nil {
			return false
		}
		switch m.Op {
		case handoff.OpStatus:
			log.Debug("control socket: status requested", "by_pid", m.PID)
			if handoff.Write(c, status) != nil {
				return false
			}
		case handoff.OpTakeover:
			_ = c.SetReadDeadline(time.Time{})
			log.Info("a successor asks to take over", "pid", m.PID)
			return true
		default:
			return false
		}
	}
	return false
}
