package core

import (
	"math"
	"syscall"
)

// FileLimit returns the process's limit on open files (the soft
// RLIMIT_NOFILE). On Linux the Go runtime raises the soft limit to the
// hard one at start, so this is as many as the process can open; ok is
// false when there is no limit or it cannot be read.
func FileLimit() (n int, ok bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, false
	}
	if r.Cur > math.MaxInt32 { // RLIM_INFINITY included
		return 0, false
	}
	return int(r.Cur), true
}

// MinFitConns is the least FitFiles lowers a connection limit to.
const MinFitConns = 16

// FitFiles returns want, lowered if need be so that want connections plus
// reserve other open files (brokers, stores, other listeners) fit in the
// process's file limit, and the limit it read. lowered says whether it
// lowered want; it never goes below MinFitConns.
func FitFiles(want, reserve int) (n, limit int, lowered bool) {
	limit, ok := FileLimit()
	if !ok {
		return want, 0, false
	}
	avail := max(limit-reserve, MinFitConns)
	if want > avail {
		return avail, limit, true
	}
	return want, limit, false
}
