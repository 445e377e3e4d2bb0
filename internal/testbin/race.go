//go:build race

package testbin

// Race says the tests run with the race detector, and so do the binaries
// Build makes: their waits stretch by it (and tests shrink their loads).
const Race = true
