package natsbroker

// NoStoreReserve makes e's store watch keep no free space in reserve, so
// that tests can fill the disk up to the write errors the reserve avoids.
func NoStoreReserve(e *Embedded) {
	e.store.checkMu.Lock()
	defer e.store.checkMu.Unlock()
	e.store.reserve = func(int64) int64 { return 0 }
}

// ShutdownJetStream shuts e's JetStream down the way nats-server does
// itself when it runs out of space under a mirror or a replicated stream
// ("JetStream out of resources, will be DISABLED").
func ShutdownJetStream(e *Embedded) error { return e.server().ShutdownJetStream() }
