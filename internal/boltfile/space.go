package boltfile

import (
	"errors"
	"syscall"
)

// NoSpace reports whether err is a write that failed because the file
// system is full (ENOSPC) or the user is over quota (EDQUOT). bbolt rolls
// such a transaction back and stays usable, so callers report it as a
// "storage full" error that clears once space is freed.
func NoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
