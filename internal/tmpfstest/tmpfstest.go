// Package tmpfstest gives tests a small real file system to fill: a
// size-limited tmpfs, mounted for one test. Tests of what msgmesh does on a
// full disk use it instead of faking write errors. Mounting needs root (or
// CAP_SYS_ADMIN); where the kernel refuses, the test is skipped with a
// message that says so.
package tmpfstest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Mount mounts a tmpfs of size (as mount(8) reads it: "16m") on a new
// directory and unmounts it in t.Cleanup (registered first, so it runs
// after the cleanups of whatever the test starts on it).
func Mount(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("needs a size-limited tmpfs to fill, and mounting one was refused (run as root, or with CAP_SYS_ADMIN): mount -t tmpfs: %v: %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

func unmount(t testing.TB, dir string) {
	var out []byte
	var err error
	for try := 0; try < 20; try++ {
		if out, err = exec.Command("umount", dir).CombinedOutput(); err == nil {
			return
		}
		runtime.GC() // closes files nobody references any more
		time.Sleep(50 * time.Millisecond)
	}
	// nats-server v2.15.2 keeps the descriptor of a message block it
	// deleted when creating a stream fails on a full disk, for the life
	// of the process; detach the mount anyway (the kernel frees it with
	// the last descriptor).
	held, _ := exec.Command("sh", "-c", "ls -l /proc/"+strconv.Itoa(os.Getpid())+"/fd | grep -F "+dir).CombinedOutput()
	if lout, lerr := exec.Command("umount", "-l", dir).CombinedOutput(); lerr != nil {
		t.Errorf("umount %s: %v: %s; umount -l: %v: %s\nfiles this process holds there:\n%s", dir, err, out, lerr, lout, held)
		return
	}
	t.Logf("umount %s: busy (%s); detached it lazily. Files this process still holds there:\n%s", dir, bytes.TrimSpace(out), held)
}

// Fill writes the file path until the file system refuses with ENOSPC
// (or, with leave > 0, until at most leave bytes are free) and returns
// how many bytes it wrote. Removing the file gives the space back.
func Fill(t testing.TB, path string, leave int64) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		chunk := buf
		if leave > 0 {
			free := Free(t, filepath.Dir(path))
			if free <= leave {
				return n
			}
			chunk = buf[:min(int64(len(buf)), free-leave)]
		}
		m, err := f.Write(chunk)
		n += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		if err != nil {
			t.Fatalf("filling %s: %v", path, err)
		}
	}
}

// Free is the space available on dir's file system.
func Free(t testing.TB, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
