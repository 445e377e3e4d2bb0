// Package allocs measures what a function allocates on the heap, for
// tests that bound it. It goes beyond testing.AllocsPerRun in two ways:
// it reports bytes, which tell a 40-byte error value from a 2 GiB buffer,
// and it reports the count of allocations as an average, not rounded down.
// Under the race detector sync.Pool drops a quarter of what is put back at
// random, so an average of 4.99 allocations per run and one of 5.04 are the
// same code; AllocsPerRun would read them as 4 and 5.
package allocs

import "runtime"

// PerRun calls f once to warm up, then runs times, and returns the heap
// allocations (mallocs) and bytes of those runs divided by runs. Like
// testing.AllocsPerRun it sets GOMAXPROCS to 1 while it measures; what
// other goroutines allocate meanwhile counts too.
func PerRun(runs int, f func()) (mallocs float64, bytes uint64) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(runs), (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

// BytesPerRun is PerRun's bytes alone.
func BytesPerRun(runs int, f func()) uint64 {
	_, b := PerRun(runs, f)
	return b
}
