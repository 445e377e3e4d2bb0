// Package testbin builds the repository's binaries for tests that run them
// as processes (a sidecar to kill, to upgrade, to reload), once per test
// binary run, with the race detector when the tests have it, so that a
// race in the binary shows up in its output.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
)

var (
	mu    sync.Mutex
	built = map[string]func() (string, error){}
)

// Build compiles the main package pkg (an import path, such as
// "github.com/msgmesh/msgmesh/cmd/msgmesh") into a temporary directory on
// the first call for pkg, and returns the binary's path; later calls
// return the same path (or the same error). Run it from inside the module
// (a test's working directory is).
func Build(pkg string) (string, error) {
	mu.Lock()
	once, ok := built[pkg]
	if !ok {
		once = sync.OnceValues(func() (string, error) { return build(pkg) })
		built[pkg] = once
	}
	mu.Unlock()
	return once()
}

func build(pkg string) (string, error) {
	dir, err := os.MkdirTemp("", path.Base(pkg)+"-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, path.Base(pkg))
	args := []string{"build", "-o", bin}
	if Race {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, pkg)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}
