package upgrade

import (
	"context"
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
// with the flag or config field that sets each. Every one moves to a
// successor.
var listenerNames = []struct{ name, flag string }{
	{"mesh", "--listen"},
	{"http", "--http"},
	{"forwarding", "--forward-listen"},
	{"grpc", "--grpc"},
	{"rpc egress", "rpc.egress.listen"},
	{"rpc ingress", "rpc.ingress.listen"},
}

// Options say whether this process may take over a running msgmesh
// (--upgrade) and which listeners it was told to open: those it would
// inherit must name the same addresses.
type Options struct {
	// Upgrade: take over a running msgmesh (--upgrade). Zero: refuse to
	// start while one runs on the data directory.
	Upgrade bool
	// Want maps a listener name ("mesh", "http", "forwarding", "grpc",
	// "rpc egress", "rpc ingress") to this process's flag or config value;
	// a listener it does not open is absent.
	Want map[string]string
}

// Timeouts of the status exchange. A running msgmesh answers at once; one
// that is handing over to another successor answers after that
const (
	statusTimeout = 10 * time.Second
	// requestTimeout is how long the running side waits for each request
	// on a connection: the successor compares its flags (resolving host
	// names) between the status answer and the takeover request.
	requestTimeout = 30 * time.Second
)

// Takeover looks for a msgmesh running on the data directory (its control
// socket sock). With none it returns all nil and the process starts
// fresh. With one and no Options.Upgrade it refuses with ErrDataDirInUse
// naming the running process; with Upgrade but inherited listeners that
// differ from this process's (Options.Want), with ErrListenersDiffer
// naming each. Either way the running msgmesh goes on untouched.
// Otherwise it asks the running one to hand over and returns what it
// handed over, and the predecessor to tell Ready once this process serves
// (or Abandon, to make it resume).
func Takeover(ctx context.Context, sock string, opts Options, log *slog.Logger) (*Set, *Predecessor, error) {
	c, err := Dial(sock, 2*time.Second)
	if errors.Is(err, ErrNoPredecessor) {
		if opts.Upgrade {
			log.Info("--upgrade: no msgmesh runs on this data directory; starting fresh", "socket", sock)
		}
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	st, err := askStatus(c)
	switch {
	case errors.Is(err, errNoStatus) && opts.Upgrade:
		// A msgmesh from before the status message: it closed the socket.
		// Ask again, for the takeover itself.
		log.Warn("the running msgmesh does not report its listeners (an older version); taking over without comparing them with this process's flags")
		c.Close()
		if c, err = Dial(sock, 2*time.Second); err != nil {
			return nil, nil, fmt.Errorf("hot upgrade: %w", err)
		}
	case errors.Is(err, errNoStatus):
		c.Close()
		return nil, nil, fmt.Errorf("%w: a msgmesh of an older version holds %s; to replace it with this binary (hot upgrade, docs/upgrade.md), start this one with --upgrade; to run another sidecar beside it, give this one its own --data-dir", ErrDataDirInUse, sock)
	case err != nil:
		c.Close()
		return nil, nil, fmt.Errorf("%w: a process holds %s but %v; is a msgmesh hung there, or handing over to another one? Try again, or stop it", ErrDataDirInUse, sock, err)
	case !opts.Upgrade:
		c.Close()
		return nil, nil, fmt.Errorf("%w: %s serves %s; to replace it with this binary (hot upgrade, docs/upgrade.md), start this one with --upgrade and the same listener flags; to run another sidecar beside it, give this one its own --data-dir", ErrDataDirInUse, describe(st), filepath.Dir(sock))
	default:
		if diffs := differing(ctx, opts.Want, st.Listeners); len(diffs) > 0 {
			c.Close()
			return nil, nil, fmt.Errorf("--upgrade: %w (pid %d): %s. A hot upgrade keeps the running sidecar's listening sockets; start this binary with its addresses, or stop it (SIGTERM) and start this one to move them. The running msgmesh goes on unchanged", ErrListenersDiffer, st.PID, strings.Join(diffs, "; "))
		}
		log.Info("--upgrade: taking over from the running msgmesh", "pid", st.PID, "socket", sock)
	}
	fail := func(err error) (*Set, *Predecessor, error) {
		c.Close()
		return nil, nil, fmt.Errorf("hot upgrade: %w", err)
	}
	if err := Write(c, Msg{Op: OpTakeover, PID: os.Getpid()}); err != nil {
		return fail(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(SettleTimeout + 10*time.Second))
	m, err := Read(c)
	if err != nil {
		return fail(err)
	}
	if m.Op != OpState {
		return fail(fmt.Errorf("%w: %s", ErrRefused, m.Error))
	}
	_ = c.SetReadDeadline(time.Time{})
	files, err := RecvFiles(c, m.Files)
	if err != nil {
		return fail(err)
	}
	set, err := setFrom(m, files)
	if err != nil {
		return fail(err)
	}
	if v := os.Getenv(TestKillAfterReceive); v != "" && v != TestKillAdopted {
		// Test hook: die the hardest way at the worst moment, holding
		// every socket and before adopting any of them.
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	log.Info("received the predecessor's sockets", "files", len(files))
	return set, &Predecessor{c: c, log: log}, nil
}

// ErrRefused: the running msgmesh could not hand over (it says why, and
// exits non-zero with ErrHandoffFailed).
var ErrRefused = errors.New("the running msgmesh could not hand over")

// TestKillAfterReceive names the environment variable that makes a new
// process SIGKILL itself right after receiving its predecessor's sockets,
// so tests can show the predecessor resuming. Nothing else reads it.
const TestKillAfterReceive = "MSGMESH_TEST_KILL_AFTER_RECEIVE"

// TestKillAdopted as TestKillAfterReceive's value moves the SIGKILL to
// after the new process adopted the connections, before it says ready.
const TestKillAdopted = "adopted"

// Predecessor is the process a successor took over from, waiting to hear
// whether the successor serves.
type Predecessor struct {
	c   *net.UnixConn
	log *slog.Logger
}

// Ready tells the predecessor this process serves: it exits.
func (p *Predecessor) Ready() {
	if err := Write(p.c, Msg{Op: OpReady}); err != nil {
		p.log.Error("telling the predecessor we are ready", "err", err)
	}
	p.c.Close()
}

// Abandon tells the predecessor this process gives up: it resumes on what
// it handed over.
func (p *Predecessor) Abandon() { p.c.Close() }

// errNoStatus: the running process closed the socket on a status request
// (a msgmesh from before OpStatus).
var errNoStatus = errors.New("no status answer")

// askStatus asks the running msgmesh who it is.
func askStatus(c *net.UnixConn) (Msg, error) {
	if err := Write(c, Msg{Op: OpStatus, PID: os.Getpid()}); err != nil {
		return Msg{}, fmt.Errorf("did not take a request: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(statusTimeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	m, err := Read(c)
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		return Msg{}, errNoStatus
	case errors.As(err, &ne) && ne.Timeout():
		return Msg{}, fmt.Errorf("did not answer within %s", statusTimeout)
	case err != nil:
		return Msg{}, err
	case m.Op != OpStatus:
		return Msg{}, fmt.Errorf("answered %q to a status request", m.Op)
	}
	return m, nil
}

// describe names a running msgmesh: "pid 42 (mesh 127.0.0.1:7600, http
// 127.0.0.1:7601)".
func describe(st Msg) string {
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
func differing(ctx context.Context, want, running map[string]string) []string {
	var out []string
	for _, l := range listenerNames {
		flag, ok := want[l.name]
		bound, inherited := running[l.name]
		if !ok || !inherited {
			continue // not moved: this process opens its own, or none
		}
		if !SameAddr(ctx, flag, bound) {
			out = append(out, fmt.Sprintf("%s %s (the running msgmesh's %s listener is %s)", l.flag, flag, l.name, bound))
		}
	}
	return out
}

// SameAddr reports whether a listener flag (host:port as given) names the
// bound address: the same port (port 0 matches any), and the same IP
// (a name matches any address it resolves to; an empty host, 0.0.0.0 and
// :: all mean every interface).
func SameAddr(ctx context.Context, flag, bound string) bool {
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
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
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
