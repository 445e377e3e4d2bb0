package upgrade

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// A reload (msgmesh reload, SIGHUP) is a hot upgrade inside one process,
// as Caddy reloads: the running components freeze into a Set, and
// components built from the new configuration adopt it. App connections,
// the deliveries apps hold and the RPC callers' connections move as in
// an upgrade; nothing is closed. If the new configuration does not start,
// the old one adopts a copy of the same Set and serves on.

// ErrReloadRefused: the running msgmesh did not apply the config file;
// the error says why, and the old configuration serves on.
var ErrReloadRefused = errors.New("reload refused")

// Reload freezes the running components into a Set and has start (the
// components of the new configuration) adopt it. If start fails, restore
// (the old configuration's) adopts a copy taken before, and Reload returns
// start's error; if restore fails too, the process serves nothing and the
// error says so.
func Reload(ctx context.Context, freeze Freezer, start, restore func(context.Context, *Set) error) error {
	set, err := freezeSet(ctx, freeze)
	if err != nil {
		return fmt.Errorf("%w: the sidecar could not stop for it, and stopped: %w", ErrHandoffFailed, err)
	}
	spare, err := set.Clone()
	if err != nil {
		// Without a spare copy a failed start could not fall back: use
		// the old configuration now.
		if rerr := restore(ctx, set); rerr != nil {
			return errors.Join(err, rerr)
		}
		return fmt.Errorf("%w: %w", ErrReloadRefused, err)
	}
	if err := start(ctx, set); err != nil {
		if rerr := restore(ctx, spare); rerr != nil {
			return fmt.Errorf("%w: the new configuration did not start (%w), nor did the old one again: %w", ErrHandoffFailed, err, rerr)
		}
		return fmt.Errorf("%w: the new configuration did not start; the old one serves again: %w", ErrReloadRefused, err)
	}
	spare.Close()
	return nil
}

// Clone returns a Set with a duplicate of every file (the same sockets)
// and the same states.
func (s *Set) Clone() (*Set, error) {
	c := NewSet()
	for k, v := range s.states {
		c.states[k] = v
	}
	for _, n := range s.names {
		fd, err := dupCloseOnExec(s.files[n])
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("upgrade: duplicating %q: %w", n, err)
		}
		if err := c.Add(n, os.NewFile(uintptr(fd), s.files[n].Name())); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func dupCloseOnExec(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(orig uintptr) {
		syscall.ForkLock.RLock()
		defer syscall.ForkLock.RUnlock()
		if fd, derr = syscall.Dup(int(orig)); derr == nil {
			syscall.CloseOnExec(fd)
		}
	}); err != nil {
		return -1, err
	}
	return fd, derr
}

// RequestReload asks the msgmesh running on the control socket sock to
// apply its config file again, and waits for its answer: nil when the new
// configuration serves; ErrNoPredecessor when none runs; an error
// wrapping ErrReloadRefused, with the reason, when the old one stays.
func RequestReload(ctx context.Context, sock string) error {
	c, err := Dial(sock, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if err := Write(c, Msg{Op: OpReload, PID: os.Getpid()}); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(SettleTimeout + ReadyTimeout))
	m, err := Read(c)
	switch {
	case err != nil:
		return fmt.Errorf("waiting for the running msgmesh's answer: %w", err)
	case m.Op == OpRefused:
		return fmt.Errorf("%w: %s", ErrReloadRefused, m.Error)
	case m.Op != OpReady:
		return fmt.Errorf("the running msgmesh answered %q", m.Op)
	}
	return nil
}
