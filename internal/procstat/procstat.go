// Package procstat reads what Linux's /proc says about a process: its
// resident memory, open file descriptors and CPU time. Benchmarks and
// tests that run a msgmesh or ctrlplane binary use it to report what that
// process, not the test, costs. Other systems have no /proc: Read returns
// an error wrapping ErrUnsupported there, which callers turn into a skip.
package procstat

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrUnsupported: this system has no /proc to read.
var ErrUnsupported = errors.New("procstat: no /proc on this system")

// Stat is one reading of a process.
type Stat struct {
	RSSKiB int // resident set size (VmRSS), KiB
	// PeakRSSKiB is the largest RSSKiB the process has had (VmHWM): what
	// a load cost at its worst, read once after it.
	PeakRSSKiB int
	FDs        int           // open file descriptors
	CPU        time.Duration // user plus system CPU time so far
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// Read reads pid's figures.
func Read(pid int) (Stat, error) {
	var st Stat
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat("/proc/self"); serr != nil {
			return st, ErrUnsupported
		}
	}
	if err != nil {
		return st, fmt.Errorf("procstat: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		for _, f := range []struct {
			name string
			dst  *int
		}{{"VmRSS:", &st.RSSKiB}, {"VmHWM:", &st.PeakRSSKiB}} {
			if v, ok := strings.CutPrefix(sc.Text(), f.name); ok {
				if *f.dst, err = strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))); err != nil {
					return st, fmt.Errorf("procstat: %s %q: %w", f.name, v, err)
				}
			}
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return st, fmt.Errorf("procstat: %w", err)
	}
	st.FDs = len(fds)
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, fmt.Errorf("procstat: %w", err)
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(raw, ')')
	f := strings.Fields(string(raw[i+1:]))
	if i < 0 || len(f) < 13 {
		return st, fmt.Errorf("procstat: /proc/%d/stat: %q", pid, raw)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	sy, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return st, fmt.Errorf("procstat: /proc/%d/stat: %w", pid, err)
	}
	st.CPU = time.Duration(ut+sy) * time.Second / clockTicks
	return st, nil
}
