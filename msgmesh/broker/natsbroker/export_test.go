package natsbroker

// NoStoreReserve makes e's store watch keep no free space in reserve, so
// that tests can fill the disk up to the write errors the reserve avoids.
func NoStoreReserve(e *Embedded) {
	e.store.checkMu.Lock()
	defer e.store.checkMu.Unlock()
	e.store.reserve = func(int64) int64 { return 0 }
}
