// Package procstat reads what Linux's /proc says about a process: its
// resident memory, open file descriptors, CPU time, syscalls and context
// switches. Benchmarks and
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
	// AnonKiB and FileKiB split RSSKiB (RssAnon, RssFile): memory the
	// process wrote (heap, stacks, buffers) and pages of files it maps,
	// its executable's above all. File pages stay in the page cache, are
	// shared with every process that maps the same file and can be
	// reclaimed; the kernel maps up to 64 KiB around each page a process
	// touches, so FileKiB grows with the size of the executable more than
	// with the code that runs (docs/benchmarks.md, "Memory").
	AnonKiB, FileKiB int
	FDs              int           // open file descriptors
	CPU              time.Duration // user plus system CPU time so far
	// ReadCalls and WriteCalls count the read and write syscalls the
	// process made so far (syscr and syscw of /proc/<pid>/io: every
	// syscall that reads or writes, on sockets as on files).
	ReadCalls, WriteCalls int64
	// Switches counts the context switches of all the process's threads
	// so far, voluntary (a thread blocked: it waits for a socket or a
	// futex) and not (its time slice ran out): how often the process went
	// to sleep and had to be woken.
	Switches int64
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
		}{{"VmRSS:", &st.RSSKiB}, {"VmHWM:", &st.PeakRSSKiB}, {"RssAnon:", &st.AnonKiB}, {"RssFile:", &st.FileKiB}} {
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
	if err := readIO(pid, &st); err != nil {
		return st, err
	}
	if err := readSwitches(pid, &st); err != nil {
		return st, err
	}
	return st, nil
}

// readIO reads the syscall counts of /proc/<pid>/io.
func readIO(pid int, st *Stat) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return fmt.Errorf("procstat: %w", err)
	}
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"syscr:", &st.ReadCalls}, {"syscw:", &st.WriteCalls}} {
		if *f.dst, err = field(b, f.name); err != nil {
			return fmt.Errorf("procstat: /proc/%d/io: %w", pid, err)
		}
	}
	return nil
}

// readSwitches sums the context switches of every thread of pid. A
// thread that ends while it is read is skipped.
func readSwitches(pid int, st *Stat) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Errorf("procstat: %w", err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("procstat: %w", err)
		}
		for _, name := range []string{"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"} {
			n, err := field(b, name)
			if err != nil {
				return fmt.Errorf("procstat: thread %s of %d: %w", t.Name(), pid, err)
			}
			st.Switches += n
		}
	}
	return nil
}

// field is the number after name at the start of a line of b.
func field(b []byte, name string) (int64, error) {
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte(name)); ok {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s %q: %w", name, v, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no %s line", name)
}
