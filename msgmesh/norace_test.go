//go:build !race

package msgmesh_test

const raceEnabled = false
