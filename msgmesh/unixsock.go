package msgmesh

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/msgmesh/msgmesh/internal/upgrade"
)

// UnixPrefix starts a Config.Listen that names a unix-domain socket
// instead of a TCP address: "unix:/run/msgmesh/mesh.sock". Apps on the
// same host then connect through the file (the Go SDK's Dial takes the
// same address), which costs less per round trip than loopback TCP and
// lets file permissions say who may connect (docs/protocol.md).
const UnixPrefix = "unix:"

// UnixSocketMode is the mode of the mesh listener's socket file: only the
// sidecar's user may connect (connecting needs write permission). Group
// access (0660) would also admit every other process of that group, which
// on a shared host is more than the local app; an app that runs as
// another user connects over loopback TCP instead, with app secrets where
// users do not trust each other (docs/protocol.md).
const UnixSocketMode os.FileMode = 0o600

// UnixPath returns the socket path of a listen address in the unix:
// form, and whether it is one.
func UnixPath(addr string) (string, bool) {
	return strings.CutPrefix(addr, UnixPrefix)
}

// meshSocket is the mesh listener's socket file, when it is a unix
// socket: what shutdown removes.
type meshSocket struct {
	path string
	// fi is the file as this sidecar saw it when it bound or adopted the
	// socket; shutdown removes the path only while it is still that file
	// (nil: the file was gone already; not removed).
	fi os.FileInfo
}

// listenMesh opens the mesh listener on Config.Listen: TCP, or a unix
// socket (upgrade.ListenUnix: a stale file replaced, a live one refused,
// the file made UnixSocketMode).
func (s *Sidecar) listenMesh() (net.Listener, error) {
	path, ok := UnixPath(s.cfg.Listen)
	if !ok {
		return net.Listen("tcp", s.cfg.Listen)
	}
	if path == "" {
		return nil, errors.New("unix: needs a socket path, as in unix:/run/msgmesh/mesh.sock")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	ln, err := upgrade.ListenUnix(abs, UnixSocketMode)
	if err != nil {
		return nil, err
	}
	s.meshSock = &meshSocket{path: abs}
	s.meshSock.fi, _ = os.Stat(abs)
	return ln, nil
}

// adoptMesh turns a predecessor's mesh listener back into one. A unix
// listener made from a file never unlinks its socket file when closed, so
// this process removes it itself on a clean shutdown, as listenMesh's do.
func (s *Sidecar) adoptMesh(f *os.File) (net.Listener, error) {
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		path := ul.Addr().String()
		s.meshSock = &meshSocket{path: path}
		s.meshSock.fi, _ = os.Stat(path)
	}
	return ln, nil
}

// removeMeshSocket removes the mesh listener's socket file when this
// sidecar stops for good: it bound the socket itself, or it served an
// adopted one. A successor that adopted the socket but never served
// leaves it to the predecessor, which resumes on it; a handoff
// (Handoff does not come here) leaves it to the successor.
func (s *Sidecar) removeMeshSocket() {
	ms := s.meshSock
	if ms == nil || ms.fi == nil || !s.served && s.cfg.Inherit != nil {
		return
	}
	if fi, err := os.Stat(ms.path); err != nil || !os.SameFile(fi, ms.fi) {
		return // replaced or removed by someone else: not ours
	}
	if err := os.Remove(ms.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("removing the mesh socket file", "path", ms.path, "err", err)
	}
}

// MeshAddr is the mesh listener's address as Config.Listen spells it:
// host:port, or unix:/path for a unix socket. Apps and the Go SDK dial it.
func (s *Sidecar) MeshAddr() string {
	return ListenAddr(s.meshLn.Addr())
}

// ListenAddr spells a listener's address as Config.Listen does: a unix
// socket's path with UnixPrefix, any other address as it is.
func ListenAddr(a net.Addr) string {
	if a.Network() == "unix" {
		return UnixPrefix + a.String()
	}
	return a.String()
}
