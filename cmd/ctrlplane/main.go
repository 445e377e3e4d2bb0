// Command ctrlplane runs the msgmesh control plane: the operators' HTTP
// API and web page for apps, their sidecar instances, traffic weights and
// broker topology, and the long-poll push of each app's config to its
// sidecars. State lives in an embedded bbolt file under --data-dir, or in
// etcd (--store etcd://...) when several replicas serve behind one
// address. SIGINT and SIGTERM shut it down gracefully. docs/ctrlplane.md
// documents the API; "ctrlplane --help" lists the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/msgmesh/msgmesh/ctrlplane"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := ctrlplane.Run(ctx, os.Args[1:], os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "ctrlplane:", err)
		os.Exit(1)
	}
}
