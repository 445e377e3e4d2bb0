//go:build race

package upgrade_test

// raceEnabled: the binary under test is built with -race too.
const raceEnabled = true
