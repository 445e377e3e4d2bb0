// Package upgrade owns msgmesh's hot upgrade (docs/upgrade.md, docs/design.md
// flow 10): who may take over a running sidecar, the control socket the two
// processes talk over, and what moves between them.
//
// What moves is a Set: open files (listeners and connections) and JSON
// states, each under a name ("mesh", "http", "conn/3", "rpc/egress",
// "control", ...), as in cloudflare/tableflip's file registry. The running
// process freezes its components into a Set (each stops at a point where
// what it holds can move, and registers it by name); the successor adopts
// from it, each component taking its own names. A failed successor leaves
// the old process its Set (SCM_RIGHTS duplicates every file), from which
// it adopts again: the same freeze/adopt path.
//
// The running process listens on <data-dir>/msgmesh.sock; a new process
// that finds a live socket there first asks who runs, then, if it was
// started to upgrade (msgmesh --upgrade), asks it to take over:
//
//	new → old  {"op":"status","pid":P}
//	old → new  {"op":"status","pid":P,"listeners":{"mesh":…,"http":…}}
//	new → old  {"op":"takeover","pid":P}, or it closes the socket
//	old → new  {"op":"state","names":[…],"states":{…},"files":N}, then N
//	           files (SCM_RIGHTS), or {"op":"refused","error":…}
//	new → old  {"op":"ready"} once it serves; anything else (or the socket
//	           closing) tells the old process to resume
//
// msgmesh reload asks the running process to apply its config file again,
// in-process, on the same freeze/adopt path (reload.go):
//
//	cli → run  {"op":"reload","pid":P}
//	run → cli  {"op":"ready"}, or {"op":"refused","error":…} (the old
//	           configuration stays)
//
// Messages are a 4-byte big-endian length and JSON. Files travel after the
// message that announces them, in batches, each attached to one marker
// byte, and are read with recvmsg only, so no read ever drops them.
package upgrade

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// SocketName is the control socket's name in the data directory.
const SocketName = "msgmesh.sock"

// maxFilesPerMsg stays below the kernel's SCM_MAX_FD (253).
const maxFilesPerMsg = 200

// maxMsg bounds one JSON message (connection states carry buffered bytes).
const maxMsg = 64 << 20

// Msg is one control message.
type Msg struct {
	Op string `json:"op"`
	// Files is how many files follow the message.
	Files int `json:"files,omitempty"`
	// Names names each file that follows, in order (a Set's names).
	Names []string `json:"names,omitempty"`
	// States are a Set's states by name.
	States map[string]json.RawMessage `json:"states,omitempty"`
	// State and Extra are how a msgmesh from before named files (Names)
	// laid out a state message: the sidecar's state, then its files by
	// position (mesh, http, one per connection), then the files Extra
	// names. A state message still carries them, so that either side may
	// be of that version (legacy.go).
	State json.RawMessage `json:"state,omitempty"`
	Extra []string        `json:"extra,omitempty"`
	Error string          `json:"error,omitempty"`
	// PID is the sender's process id.
	PID int `json:"pid,omitempty"`
	// Listeners are the running process's listening addresses by name
	// ("mesh", "http", "forwarding", ...), in a status answer.
	Listeners map[string]string `json:"listeners,omitempty"`
}

// Ops.
const (
	// OpStatus asks the running process who it is; it answers with its
	// PID and Listeners and waits for the next message. A process older
	// than this op closes the socket instead.
	OpStatus   = "status"
	OpTakeover = "takeover"
	OpState    = "state"
	OpRefused  = "refused"
	OpReady    = "ready"
	// OpReload asks the running process to apply its config file again
	// in-process (msgmesh reload); it answers OpReady when the new
	// configuration serves, or OpRefused with the reason the old one
	// stays.
	OpReload = "reload"
)

// ErrNoPredecessor: nothing is listening on the control socket.
var ErrNoPredecessor = errors.New("upgrade: no running msgmesh on this data directory")

// Dial connects to a running process's control socket. A missing socket or
// one nobody listens on (a crashed predecessor) gives ErrNoPredecessor.
func Dial(path string, timeout time.Duration) (*net.UnixConn, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, ErrNoPredecessor
		}
		return nil, fmt.Errorf("upgrade: dial %s: %w", path, err)
	}
	return c.(*net.UnixConn), nil
}

// Listen opens the control socket, replacing a stale socket file left by a
// process that died. It must only be called when no live process listens
// (Dial said ErrNoPredecessor). A file at path that is not a socket is
// refused, not removed: a mistyped path must not delete someone's file.
func Listen(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("upgrade: %s exists and is not a socket (%s); remove it or choose another path", path, fi.Mode().Type())
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("upgrade: listen %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // a successor may hold the same socket
	return ln, nil
}

// ErrSocketInUse: a live process accepts connections on the socket file.
var ErrSocketInUse = errors.New("a running process listens on the socket")

// ListenUnix opens a unix listener at path whose file has mode perm, for
// a socket other than the control socket (the sidecar's mesh listener).
// Like the control socket it replaces a stale file left by a process that
// died, found with Dial and removed by Listen, but it refuses with
// ErrSocketInUse while a process still accepts there (another sidecar
// given the same path), since no takeover guards that path. The listener
// does not unlink the file when closed: after a hot upgrade a successor
// serves the same socket, so its owner removes the file itself on a clean
// shutdown.
//
// The file is made with the process's umask and then chmod'ed to perm
// before the listener is returned, so before anything is accepted; a
// client that connected in between waits in the backlog with the access
// the umask gave it. Keep the socket in a directory only its users can
// enter to close that gap (docs/protocol.md).
func ListenUnix(path string, perm os.FileMode) (*net.UnixListener, error) {
	c, err := Dial(path, time.Second)
	if err == nil {
		c.Close()
		return nil, fmt.Errorf("upgrade: %s: %w", path, ErrSocketInUse)
	}
	if !errors.Is(err, ErrNoPredecessor) {
		return nil, err
	}
	ln, err := Listen(path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, perm); err != nil {
		ln.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	return ln, nil
}

// Write sends one message.
func Write(c *net.UnixConn, m Msg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	hdr := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
	if _, err := c.Write(append(hdr, b...)); err != nil {
		return fmt.Errorf("upgrade: write %s: %w", m.Op, err)
	}
	return nil
}

// Read receives one message.
func Read(c *net.UnixConn) (Msg, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return Msg{}, fmt.Errorf("upgrade: read: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxMsg {
		return Msg{}, fmt.Errorf("upgrade: message of %d bytes is over the limit", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		return Msg{}, fmt.Errorf("upgrade: read: %w", err)
	}
	var m Msg
	if err := json.Unmarshal(b, &m); err != nil {
		return Msg{}, fmt.Errorf("upgrade: bad message: %w", err)
	}
	return m, nil
}

// SendFiles sends files; the receiver must know how many to expect.
func SendFiles(c *net.UnixConn, files []*os.File) error {
	for len(files) > 0 {
		batch := files[:min(len(files), maxFilesPerMsg)]
		files = files[len(batch):]
		fds := make([]int, len(batch))
		for i, f := range batch {
			fds[i] = int(f.Fd())
		}
		if _, _, err := c.WriteMsgUnix([]byte{'F'}, syscall.UnixRights(fds...), nil); err != nil {
			return fmt.Errorf("upgrade: send files: %w", err)
		}
	}
	return nil
}

// RecvFiles receives n files sent with SendFiles.
func RecvFiles(c *net.UnixConn, n int) ([]*os.File, error) {
	files := make([]*os.File, 0, n)
	fail := func(err error) ([]*os.File, error) {
		for _, f := range files {
			_ = f.Close()
		}
		return nil, err
	}
	oob := make([]byte, syscall.CmsgSpace(maxFilesPerMsg*4))
	for len(files) < n {
		var one [1]byte
		_, oobn, _, _, err := c.ReadMsgUnix(one[:], oob)
		if err != nil {
			return fail(fmt.Errorf("upgrade: receive files: %w", err))
		}
		msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return fail(fmt.Errorf("upgrade: receive files: %w", err))
		}
		got := 0
		for _, m := range msgs {
			fds, err := syscall.ParseUnixRights(&m)
			if err != nil {
				return fail(fmt.Errorf("upgrade: receive files: %w", err))
			}
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("upgrade-%d", len(files))))
				got++
			}
		}
		if got == 0 {
			return fail(errors.New("upgrade: receive files: a batch carried no files"))
		}
	}
	if len(files) != n {
		return fail(fmt.Errorf("upgrade: received %d files, expected %d", len(files), n))
	}
	return files, nil
}
