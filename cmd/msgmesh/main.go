// Command msgmesh runs the message-mesh sidecar. With no broker flags it
// starts an embedded NATS JetStream server that keeps its data under
// --data-dir, so one command gives a working mesh; --config names broker
// clusters and topic routes (docs/config.md), and --nats-url is a shorthand
// for one external NATS cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/msgmesh/msgmesh/internal/sidecarapp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := sidecarapp.Run(ctx, os.Args[1:], os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp): // --help printed the usage: not a failure
	case err != nil:
		fmt.Fprintln(os.Stderr, "msgmesh:", err)
		os.Exit(1)
	}
}
