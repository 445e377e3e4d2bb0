package procstat

import (
	"errors"
	"os"
	"testing"
	"time"
)

// Reading this very process: it has memory, descriptors (stdin/out/err at
// least, and the file opened here) and, after some work, CPU time.
func TestReadSelf(t *testing.T) {
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	deadline := time.Now().Add(50 * time.Millisecond)
	for n := 0; time.Now().Before(deadline); n++ { // burn a little CPU
		_ = n * n
	}
	st, err := Read(os.Getpid())
	if errors.Is(err, ErrUnsupported) {
		t.Skip("no /proc on this system")
	}
	if err != nil {
		t.Fatal(err)
	}
	if st.RSSKiB <= 0 || st.PeakRSSKiB < st.RSSKiB || st.AnonKiB <= 0 || st.FileKiB <= 0 || st.AnonKiB+st.FileKiB > st.RSSKiB ||
		st.FDs < 4 || st.CPU <= 0 || st.ReadCalls <= 0 || st.Switches <= 0 {
		t.Fatalf("Read(self) = %+v", st)
	}
	// A read and a write syscall are counted.
	if _, err := f.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(t.TempDir()+"/x", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	st2, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st2.ReadCalls <= st.ReadCalls || st2.WriteCalls <= st.WriteCalls {
		t.Fatalf("syscalls read %d → %d, write %d → %d: a read and a write not counted", st.ReadCalls, st2.ReadCalls, st.WriteCalls, st2.WriteCalls)
	}
	if _, err := Read(1 << 30); err == nil {
		t.Fatal("Read of a process that does not exist succeeded")
	}
}
