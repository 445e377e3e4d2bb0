//go:build race

package testbin

// raceEnabled: the tests run with the race detector, and so do the
// binaries they build.
const raceEnabled = true
