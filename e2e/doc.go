// Package e2e replays the whole msgmesh system in docker-compose: the
// control plane, the three brokers, three pods of app "orders" and one of
// app "billing" (each pod a demo app on the Go SDK plus its sidecar in the
// same network namespace), and runs the scenarios of docs/e2e.md against
// it, asserting counts by message id.
//
// The driver is the test files of this package, behind the build tag e2e,
// so that "go test ./..." does not run them. "make e2e" builds the static
// binaries and the FROM-scratch images, then runs
//
//	go test -tags e2e -count=1 -v ./e2e/
//
// whose TestMain brings the system up, runs the scenarios in order, saves
// every container's log under e2e/logs/ (and prints them on failure), and
// tears the system down, whatever happened.
package e2e
