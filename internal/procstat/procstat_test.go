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
	if st.RSSKiB <= 0 || st.PeakRSSKiB < st.RSSKiB || st.FDs < 4 || st.CPU <= 0 {
		t.Fatalf("Read(self) = %+v", st)
	}
	if _, err := Read(1 << 30); err == nil {
		t.Fatal("Read of a process that does not exist succeeded")
	}
}
