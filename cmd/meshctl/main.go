// Command meshctl is the msgmesh command-line tool: it manages an app's
// registrations with its sidecar and publishes and consumes test traffic.
// Run "meshctl help" for the commands and their flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/msgmesh/msgmesh/internal/meshctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := meshctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
