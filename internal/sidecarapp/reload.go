package sidecarapp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"time"

	"github.com/msgmesh/msgmesh/flowctl"
	"github.com/msgmesh/msgmesh/internal/upgrade"
	"github.com/msgmesh/msgmesh/observe"
	"github.com/msgmesh/msgmesh/rpcproxy"
	"github.com/msgmesh/msgmesh/topology"
)

// settings are what the runtime takes from the config file (and the
// flags that stand in for parts of it): what a reload applies.
type settings struct {
	topo      *topology.Topology // nil: the embedded server
	embedded  *Embedded          // settings of the embedded server; nil: defaults
	rpc       *rpcproxy.Config   // nil: no RPC proxy
	limits    flowctl.Config
	telemetry observe.Config
}

// settingsOf checks a loaded config file against the flags that stand in
// for parts of it (--nats-url, --otlp-endpoint) and returns its settings.
func settingsOf(file *File, natsURL, otlp string) (settings, error) {
	s := settings{topo: file.Brokers, embedded: file.Embedded, rpc: file.RPC}
	switch {
	case s.topo != nil && natsURL != "":
		return s, errors.New("--nats-url and a brokers section in --config both say where topics live; use one")
	case file.Embedded != nil && natsURL != "":
		return s, errors.New("--nats-url and an embedded section in --config: the embedded server runs only without an external one; drop one")
	case s.topo == nil && natsURL != "":
		s.topo = &topology.Topology{Clusters: []topology.Cluster{{Name: "nats", Kind: topology.KindNATS, Endpoints: []string{natsURL}}}}
		if err := s.topo.Validate(); err != nil {
			return s, err
		}
	}
	if file.Telemetry != nil {
		s.telemetry = *file.Telemetry
	}
	if otlp != "" {
		s.telemetry.OTLPEndpoint = otlp
	}
	if file.Limits != nil {
		s.limits = *file.Limits
	}
	return s, nil
}

// reloadOpts is what a reload needs besides the runtime: the config file
// and the flags that stand in for parts of it.
type reloadOpts struct {
	path          string // --config; empty: nothing to reload
	natsURL, otlp string
	started       *File // as loaded at start: the sections a reload does not apply
}

// applyConfig re-reads the config file and applies it in-process on the
// freeze/adopt path of a hot upgrade (upgrade.Reload): the brokers and
// routes, the RPC proxy, telemetry and limits of the new file take over
// the app connections, the deliveries apps hold and the RPC callers'
// connections of the old. A file that does not load or validate, or a
// configuration that does not start, leaves the old one serving, and the
// error says why. An error wrapping upgrade.ErrHandoffFailed means the
// sidecar stopped and the process must exit.
func (rt *runtime) applyConfig(ctx context.Context, by string) error {
	err := rt.reloadFile(ctx)
	switch {
	case err == nil:
		rt.log.Info(by+": configuration reloaded", "config", rt.reload.path)
	case errors.Is(err, upgrade.ErrHandoffFailed):
		rt.log.Error(by+": reload failed and the sidecar stopped; start it again", "config", rt.reload.path, "err", err)
	default:
		rt.log.Error(by+": configuration not reloaded; the old one stays", "config", rt.reload.path, "err", err)
	}
	return err
}

func (rt *runtime) reloadFile(ctx context.Context) error {
	refuse := func(err error) error { return fmt.Errorf("%w: %w", upgrade.ErrReloadRefused, err) }
	if rt.reload.path == "" {
		return refuse(errors.New("msgmesh runs without --config: there is no file to reload"))
	}
	file, err := LoadFile(rt.reload.path)
	if err != nil {
		return refuse(err)
	}
	next, err := settingsOf(file, rt.reload.natsURL, rt.reload.otlp)
	if err != nil {
		return refuse(err)
	}
	if next.rpc != nil {
		p, err := rpcproxy.New(*next.rpc, rt.log)
		if err != nil {
			return refuse(fmt.Errorf("rpc: %w", err))
		}
		_ = p.Shutdown(ctx) // never started: releases its clusters
	}
	for name, same := range map[string]bool{
		"capacity": reflect.DeepEqual(file.Capacity, rt.reload.started.Capacity),
		"access":   reflect.DeepEqual(file.Access, rt.reload.started.Access),
	} {
		if !same {
			rt.log.Warn("reload: the "+name+" section changed; it is read at start only and applies at the next restart or upgrade", "config", rt.reload.path)
		}
	}
	oldTel, tel := rt.cfg.Telemetry, rt.cfg.Telemetry
	if !reflect.DeepEqual(next.telemetry, rt.telemetry) {
		if tel, err = observe.New(ctx, next.telemetry); err != nil {
			return refuse(fmt.Errorf("telemetry: %w", err))
		}
	}
	old := rt.settings
	running := rt.status().Listeners
	use := func(s settings, t *observe.Telemetry) error {
		rt.settings, rt.cfg.Telemetry = s, t
		return rt.cfg.Flow.Apply(s.limits)
	}
	err = upgrade.Reload(ctx, rt.freeze,
		func(ctx context.Context, set *upgrade.Set) error {
			dropMovedRPCListeners(ctx, set, next.rpc, running)
			if err := use(next, tel); err != nil {
				set.Close()
				return err
			}
			return rt.start(ctx, set)
		},
		func(ctx context.Context, set *upgrade.Set) error {
			_ = use(old, oldTel)
			return rt.start(ctx, set)
		})
	drop := tel // the telemetry that no longer serves
	if err == nil {
		drop = oldTel
	}
	if drop != rt.cfg.Telemetry {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = drop.Shutdown(sctx)
		cancel()
	}
	return err
}

// dropMovedRPCListeners closes the RPC listeners that the new RPC config
// puts on another address (the proxy opens those anew); the callers'
// connections move all the same.
func dropMovedRPCListeners(ctx context.Context, set *upgrade.Set, rpc *rpcproxy.Config, running map[string]string) {
	for _, l := range []struct{ status, file, want string }{
		{"rpc egress", rpcPrefix + "egress", rpcListen(rpc, true)},
		{"rpc ingress", rpcPrefix + "ingress", rpcListen(rpc, false)},
	} {
		if bound, ok := running[l.status]; ok && (l.want == "" || !upgrade.SameAddr(ctx, l.want, bound)) {
			if f := set.Take(l.file); f != nil {
				_ = f.Close()
			}
		}
	}
}

// rpcListen is the address the RPC config gives its egress (or ingress)
// listener; empty when it has none.
func rpcListen(rpc *rpcproxy.Config, egress bool) string {
	if rpc == nil {
		return ""
	}
	addr, def := rpc.Ingress.Listen, rpcproxy.DefaultIngressListen
	if egress {
		addr, def = rpc.Egress.Listen, rpcproxy.DefaultEgressListen
	}
	switch addr {
	case rpcproxy.Off:
		return ""
	case "":
		return def
	}
	return addr
}

// runReload is "msgmesh reload [--data-dir DIR]": it asks the msgmesh
// running on the data directory to apply its config file again, waits for
// the outcome, and returns the reason when the old configuration stays
// (the binary then exits 1).
func runReload(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("msgmesh reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "./data", "the data directory of the msgmesh to reload")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("reload: unexpected arguments %q", fs.Args())
	}
	sock := filepath.Join(*dataDir, upgrade.SocketName)
	err := upgrade.RequestReload(ctx, sock)
	switch {
	case errors.Is(err, upgrade.ErrNoPredecessor):
		return fmt.Errorf("reload: no msgmesh runs on %s", *dataDir)
	case err != nil:
		return fmt.Errorf("reload: %w", err)
	}
	fmt.Fprintln(stderr, "msgmesh: configuration reloaded")
	return nil
}
