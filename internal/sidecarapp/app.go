// Package sidecarapp is the msgmesh binary: flags and config file in, a
// running sidecar out. cmd/msgmesh only calls Run. It is internal because
// it is wiring, not an API: embedders use package msgmesh directly.
package sidecarapp

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/flowctl"
	"github.com/msgmesh/msgmesh/internal/upgrade"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/observe"
	"github.com/msgmesh/msgmesh/rpcproxy"
	"github.com/msgmesh/msgmesh/topology"
)

// File is the sidecar's YAML config file (--config). Every section is
// optional; docs/config.md documents each field and config/msgmesh.example.yaml
// shows them all.
type File struct {
	// Brokers are the broker clusters and topic routes. Zero: an embedded
	// NATS JetStream server in <data-dir>/nats holds every topic.
	Brokers *topology.Topology `yaml:"brokers"`
	// RPC runs the RPC proxy on the same core (docs/rpc.md): egress for
	// the app's calls, ingress for its siblings'. Zero: no RPC proxy.
	RPC *rpcproxy.Config `yaml:"rpc"`
	// Limits are the flow-control limits (docs/flow-control.md). They are
	// re-read on SIGHUP and applied without a restart.
	Limits *flowctl.Config `yaml:"limits"`
	// Telemetry configures tracing export and metrics
	// (docs/observability.md). Zero: metrics on GET /metrics, no export.
	Telemetry *observe.Config `yaml:"telemetry"`
	// Capacity bounds connections, registrations and HTTP clients
	// (capacity.go). Zero: the defaults of package msgmesh.
	Capacity *Capacity `yaml:"capacity"`
	// Access says which listeners may leave loopback and which Host names
	// the HTTP API answers (exposure.go). Zero: loopback only.
	Access *Access `yaml:"access"`
	// Embedded configures the embedded NATS JetStream server, which runs
	// when there is no brokers section (and no --nats-url).
	Embedded *Embedded `yaml:"embedded"`
}

// Embedded is the config file's embedded section (docs/config.md).
type Embedded struct {
	// MaxStore bounds the bytes the store keeps ("10GiB"). Zero: 75% of
	// what its file system could give it at start.
	MaxStore topology.ByteSize `yaml:"max_store,omitempty"`
	// Sync is when the store fsyncs: "always" (zero value: before every
	// publish ack) or a duration ("1s": every second).
	Sync string `yaml:"sync,omitempty"`
	// Streams are the settings of the streams it creates for new topics,
	// as for a NATS cluster (docs/brokers.md).
	Streams *topology.Streams `yaml:"streams,omitempty"`
}

// config validates e and returns the embedded server's and the adapter's
// settings from it.
func (e *Embedded) config() (natsbroker.EmbeddedConfig, *topology.Streams, error) {
	var cfg natsbroker.EmbeddedConfig
	if e == nil {
		return cfg, nil, nil
	}
	if e.MaxStore < 0 {
		return cfg, nil, fmt.Errorf("max_store %d: must not be negative", e.MaxStore)
	}
	cfg.MaxStore = int64(e.MaxStore)
	if e.Sync != "" && e.Sync != "always" {
		d, err := time.ParseDuration(e.Sync)
		if err != nil || d <= 0 {
			return cfg, nil, fmt.Errorf("sync %q: want always or a positive duration such as 1s", e.Sync)
		}
		cfg.SyncInterval = d
	}
	if err := e.Streams.Validate("streams"); err != nil {
		return cfg, nil, err
	}
	if e.Streams != nil {
		for i, s := range append([]topology.StreamSettings{e.Streams.StreamSettings}, topicSettings(e.Streams)...) {
			if s.Replicas > 1 {
				return cfg, nil, fmt.Errorf("streams: replicas %d (entry %d): the embedded server is a single server; replicas need a NATS cluster", s.Replicas, i)
			}
		}
	}
	return cfg, e.Streams, nil
}

func topicSettings(s *topology.Streams) []topology.StreamSettings {
	out := make([]topology.StreamSettings, len(s.Topics))
	for i, t := range s.Topics {
		out[i] = t.StreamSettings
	}
	return out
}

// LoadFile reads and validates a config file. Unknown fields are errors.
func LoadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if f.Brokers != nil {
		if err := f.Brokers.Validate(); err != nil {
			return nil, fmt.Errorf("config %s: brokers: %w", path, err)
		}
	}
	if f.Limits != nil {
		if err := f.Limits.Validate(); err != nil {
			return nil, fmt.Errorf("config %s: limits: %w", path, err)
		}
	}
	if f.Embedded != nil && f.Brokers != nil {
		return nil, fmt.Errorf("config %s: embedded and brokers sections both set: the embedded server runs only without brokers", path)
	}
	if _, _, err := f.Embedded.config(); err != nil {
		return nil, fmt.Errorf("config %s: embedded: %w", path, err)
	}
	if f.Access != nil {
		if err := f.Access.validate(); err != nil {
			return nil, fmt.Errorf("config %s: access.allow_remote: %w", path, err)
		}
	}
	return &f, nil
}

// Run parses args, starts the sidecar and its brokers, and serves until ctx
// ends; then it shuts down gracefully. "msgmesh reload ..." instead asks
// the running sidecar to apply its config file again (runReload).
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "reload" {
		return runReload(ctx, args[1:], stderr)
	}
	fs := flag.NewFlagSet("msgmesh", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: msgmesh [flags]\n       msgmesh reload [--data-dir DIR]   apply the running sidecar's config file again (docs/upgrade.md)\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var (
		cfg        msgmesh.Config
		configPath = fs.String("config", "", "YAML config file (broker clusters and routes); see docs/config.md")
		natsURL    = fs.String("nats-url", "", "external NATS server URL (nats://host:4222), a shorthand for a one-cluster config; empty and no --config: run an embedded JetStream server in <data-dir>/nats")
		natsListen = fs.String("nats-listen", "", "host:port on which the embedded NATS server also accepts TCP clients, with the credentials in <data-dir>/"+natsCredsFile+"; empty: in-process only")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		logJSON    = fs.Bool("log-json", false, "log JSON lines instead of text")
		grace      = fs.Duration("shutdown-grace", 30*time.Second, "how long shutdown waits for apps to answer deliveries they hold")
		cp         cpOptions
		upgradeFl  = fs.Bool("upgrade", false, "hot upgrade: take over the listeners and app connections of the msgmesh running on --data-dir (docs/upgrade.md); without it this process refuses to start while one runs there")
		otlp       = fs.String("otlp-endpoint", "", "export traces over OTLP/gRPC to this endpoint (http://host:4317 plaintext, https:// or host:port TLS); overrides telemetry.otlp_endpoint")
	)
	fs.StringVar(&cp.URLs, "ctrlplane", "", "control plane URL(s), comma-separated; enables weights and forwarding between the app's sidecars (needs --app and MSGMESH_APP_CREDENTIAL)")
	fs.StringVar(&cp.App, "app", "", "the app this sidecar serves, as named at the control plane")
	fs.StringVar(&cp.Listen, "forward-listen", "0.0.0.0:7602", "forwarding listener for sibling sidecars (mutual TLS)")
	fs.StringVar(&cp.Advertise, "forward-advertise", "", "this sidecar's forwarding address as siblings reach it, host:port: its instance id at the control plane (default: --forward-listen when its host is not 0.0.0.0)")
	instLabels := api.LabelFlag{}
	fs.Var(instLabels, "instance-label", "a label KEY=VALUE (repeatable) this sidecar registers its instance with at the control plane, merged into the instance's labels (docs/ctrlplane.md)")
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "directory for registrations and the embedded broker's data")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7600", "mesh-protocol listener: host:port, or unix:/path for a unix-domain socket (mode 0600: apps of the sidecar's user only; docs/protocol.md)")
	fs.StringVar(&cfg.HTTPListen, "http", "127.0.0.1:7601", "HTTP API listener")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve Go's runtime profiles under /debug/pprof/ on the HTTP API (loopback and its guard, like the rest of it); docs/benchmarks.md says how to profile a sidecar under load")
	fs.StringVar(&cfg.GRPCListen, "grpc", "127.0.0.1:7603", "gRPC API listener (docs/grpc.md); empty: none")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", 1024, "unanswered deliveries per app connection")
	fs.DurationVar(&cfg.DeliveryTimeout, "delivery-timeout", 30*time.Second, "time an app has to answer a delivery before it is redelivered")
	fs.IntVar(&cfg.MaxMessageSize, "max-message-size", msgmesh.DefaultMaxMessageSize, "largest message body accepted from apps, in bytes (lower for a cluster that takes no larger message; the sidecar logs it)")
	fs.IntVar(&cfg.MaxHeaderBytes, "max-header-bytes", msgmesh.DefaultMaxHeaderBytes, "largest key and headers of a published message, in bytes (name + value + 4 per header, plus the key)")
	capacityFlags(fs, &cfg)
	fs.IntVar(&cfg.MaxAttempts, "max-attempts", msgmesh.DefaultMaxAttempts, "deliveries of a message to a consumer group before it is moved to the group's dead-letter topic, for consume bindings that set no max_attempts")
	fs.DurationVar(&cfg.MaxNackDelay, "max-nack-delay", msgmesh.DefaultMaxNackDelay, "longest redelivery delay a NACK may ask for; longer delays are cut to it")
	fs.BoolVar(&cfg.RequireAppSecrets, "require-app-secrets", false, "every app must prove who it is with its secret (HELLO, HTTP Authorization: Bearer), for hosts where apps do not trust each other; registering a new app issues one (docs/protocol.md §9)")
	allowRemote := fs.String("allow-remote", "", "listeners that may bind an address beyond loopback, comma-separated: http, mesh, nats, grpc (docs/config.md)")
	httpHosts := fs.String("http-allowed-hosts", "", "Host names, addresses or CIDR prefixes the HTTP API answers besides localhost, 127.0.0.0/8 and [::1], comma-separated")
	pushHosts := fs.String("push-allow-hosts", "", "host names, addresses or CIDR prefixes that push subscriptions may POST to besides localhost, 127.0.0.0/8 and [::1], comma-separated (docs/http-api.md)")
	fs.DurationVar(&cfg.PushTimeout, "push-timeout", 0, "longest a push subscription's POST may take when its registration sets no push_timeout; below --delivery-timeout (0: 10s, or half of --delivery-timeout when that is 20s or less)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (flags start with --)", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	if *logJSON {
		cfg.Logger = slog.New(slog.NewJSONHandler(stderr, hopts))
	} else {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, hopts))
	}
	log := cfg.Logger

	file := &File{}
	if *configPath != "" {
		var err error
		if file, err = LoadFile(*configPath); err != nil {
			return err
		}
	}
	applyCapacity(fs, &cfg, file.Capacity)
	if path, ok := msgmesh.UnixPath(cfg.Listen); ok {
		// Absolute, so that a hot upgrade's successor started from
		// another directory names the same socket (upgrade.Options.Want
		// against the running one's status).
		if path == "" {
			return errors.New("--listen unix: needs a socket path, as in unix:/run/msgmesh/mesh.sock")
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		cfg.Listen = msgmesh.UnixPrefix + abs
	}
	access, err := checkAccess(log, file, *allowRemote, *httpHosts, cfg.HTTPListen, cfg.Listen, *natsListen, *natsURL != "",
		listener{remoteGRPC, "--grpc", cfg.GRPCListen, "the gRPC API, which authenticates no one without app secrets, would let them publish and consume as any app"})
	if err != nil {
		return err
	}
	cfg.HTTPAllowedHosts = access.HTTPAllowedHosts
	cfg.PushAllowHosts = splitList(*pushHosts)
	fromFile, err := settingsOf(file, *natsURL, *otlp)
	if err != nil {
		return err
	}
	tel, err := observe.New(ctx, fromFile.telemetry)
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	flow, err := flowctl.New(fromFile.limits)
	if err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	cfg.Telemetry, cfg.Flow = tel, flow
	rt := &runtime{cfg: cfg, natsListen: *natsListen, log: log, settings: fromFile,
		reload:  reloadOpts{path: *configPath, natsURL: *natsURL, otlp: *otlp, started: file},
		upgrade: upgrade.Options{Upgrade: *upgradeFl, Want: map[string]string{"mesh": cfg.Listen, "http": cfg.HTTPListen}}}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rt.cfg.Telemetry.Shutdown(sctx)
	}()
	if cfg.GRPCListen != "" {
		rt.upgrade.Want["grpc"] = cfg.GRPCListen
	}
	for name, egress := range map[string]bool{"rpc egress": true, "rpc ingress": false} {
		if addr := rpcListen(file.RPC, egress); addr != "" {
			rt.upgrade.Want[name] = addr
		}
	}
	if cp.URLs != "" {
		cp.Credential = os.Getenv("MSGMESH_APP_CREDENTIAL")
		cp.DeliveryTimeout = cfg.DeliveryTimeout
		if cp.Advertise == "" {
			if host, _, err := net.SplitHostPort(cp.Listen); err == nil && host != "0.0.0.0" && host != "" && host != "::" {
				cp.Advertise = cp.Listen
			}
		}
		switch {
		case cp.App == "":
			return errors.New("--ctrlplane needs --app")
		case cp.Credential == "":
			return errors.New("--ctrlplane needs the app's credential in MSGMESH_APP_CREDENTIAL")
		case cp.Advertise == "":
			return errors.New("--ctrlplane needs --forward-advertise (the host:port siblings reach this sidecar's --forward-listen on)")
		}
		if len(instLabels) > 0 {
			if err := api.ValidateLabels(instLabels); err != nil {
				return fmt.Errorf("--instance-label: %w", err)
			}
			cp.Labels = instLabels
		}
		rt.cp = &cp
		rt.upgrade.Want["forwarding"] = cp.Listen
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return rt.serve(ctx, *grace, hup)
}

// runtime is the sidecar in this process: its brokers, its Sidecar and its
// RPC proxy. A hot upgrade ends it; a failed one starts it again on the
// set it handed over; a reload freezes it and starts it again, in place,
// from the config file's new settings (reload.go).
type runtime struct {
	cfg        msgmesh.Config
	natsListen string
	log        *slog.Logger
	settings   // from the config file: what a reload applies
	reload     reloadOpts

	sc     *msgmesh.Sidecar
	closer []func()

	cp   *cpOptions    // nil: no control plane
	link *controlPlane // this incarnation's control-plane link

	proxy *rpcproxy.Proxy // this incarnation's RPC proxy

	// listeners answers status requests on the control socket, whose
	// goroutine must not read the runtime while a reload replaces it:
	// set after each start.
	listeners atomic.Pointer[upgrade.Msg]

	upgrade upgrade.Options // whether and onto what this process takes over
}

// openBrokers opens the configured clusters, or the embedded NATS server.
func (rt *runtime) openBrokers(ctx context.Context) error {
	rt.cfg.Brokers = map[string]broker.Broker{}
	if rt.topo == nil {
		storeDir := filepath.Join(rt.cfg.DataDir, "nats")
		ecfg, streams, err := rt.embedded.config()
		if err != nil {
			return fmt.Errorf("embedded: %w", err)
		}
		ecfg.StoreDir, ecfg.Listen, ecfg.Logger = storeDir, rt.natsListen, rt.log
		// The embedded server takes the largest message the sidecar's
		// limits allow, so they are the only ones apps meet.
		ecfg.MaxPayload = natsbroker.PayloadFor(rt.cfg.MaxMessageSize, rt.cfg.MaxHeaderBytes+msgmesh.AddedHeaderBytes)
		var creds string // the credentials file, when the server listens on TCP
		if rt.natsListen != "" {
			var err error
			if ecfg.User, ecfg.Password, creds, err = ensureNATSCredentials(rt.cfg.DataDir); err != nil {
				return err
			}
		}
		emb, err := natsbroker.StartEmbedded(ecfg)
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		rt.closer = append(rt.closer, emb.Shutdown)
		nc, err := emb.Connect()
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		rt.closer = append(rt.closer, nc.Close)
		b, err := natsbroker.New(ctx, natsbroker.Config{Conn: nc, Logger: rt.log, Streams: streams, Embedded: emb})
		if err != nil {
			return err
		}
		rt.cfg.Brokers["embedded"] = b
		rt.closer = append(rt.closer, func() { _ = b.Close() })
		if creds == "" {
			rt.log.Info("embedded NATS JetStream started", "store", storeDir,
				"max_store", topology.ByteSize(emb.MaxStore()), "sync", emb.Sync())
		} else {
			rt.log.Info("embedded NATS JetStream started; its TCP clients need the credentials in the file", "store", storeDir, "client_url", emb.ClientURL(),
				"max_store", topology.ByteSize(emb.MaxStore()), "sync", emb.Sync(), "credentials", creds)
		}
		return nil
	}
	for _, c := range rt.topo.Clusters {
		b, err := brokers.Open(ctx, c, rt.log)
		if err != nil {
			return err
		}
		rt.cfg.Brokers[c.Name] = b
		rt.closer = append(rt.closer, func() { _ = b.Close() })
		rt.log.Info("broker cluster connected", "cluster", c.Name, "kind", c.Kind, "endpoints", c.Endpoints)
	}
	rt.cfg.Routes, rt.cfg.DefaultCluster = rt.topo.Routes, rt.topo.Default
	return nil
}

// closeBrokers releases the brokers, last opened first, so acks are
// flushed before the embedded server stops.
func (rt *runtime) closeBrokers() {
	for i := len(rt.closer) - 1; i >= 0; i-- {
		rt.closer[i]()
	}
	rt.closer = nil
}

// start is prepare followed by run: the adopt half of freeze/adopt.
func (rt *runtime) start(ctx context.Context, inherit *upgrade.Set) error {
	if err := rt.prepare(ctx, inherit); err != nil {
		return err
	}
	return rt.run(ctx)
}

// prepare opens the brokers and the control-plane link and builds the
// sidecar and the RPC proxy, each adopting from inherit (a predecessor's,
// or this process's own after a successor failed) what it registered
// there; files nobody takes are closed. It does what can fail, and nothing
// an app, a caller or a broker's consumer group sees: no listener accepts,
// no connection is read and no upstream consumer runs until run. A hot
// upgrade's successor says ready between the two (serve).
func (rt *runtime) prepare(ctx context.Context, inherit *upgrade.Set) error {
	var (
		sidecar *msgmesh.HandoffState
		rpc     *rpcproxy.Handover
		fwdLn   *os.File
	)
	if inherit != nil {
		defer func() {
			if left := inherit.Names(); len(left) > 0 {
				rt.log.Info("handed-over sockets this configuration has no use for are closed", "names", left)
			}
			inherit.Close()
		}()
		var err error
		if sidecar, err = adoptSidecar(inherit); err != nil {
			return err
		}
		if rpc, err = adoptRPC(inherit); err != nil {
			if sidecar != nil {
				sidecar.Close()
			}
			return err
		}
		fwdLn = inherit.Take(forwardName)
	}
	// Until the sidecar and the proxy adopt them, their files are ours to
	// close if starting fails (the caller may adopt copies of them again).
	release := func() {
		if sidecar != nil {
			sidecar.Close()
		}
		if rpc != nil {
			rpc.Close()
		}
	}
	if err := rt.openBrokers(ctx); err != nil {
		rt.closeBrokers()
		release()
		if fwdLn != nil {
			fwdLn.Close()
		}
		return err
	}
	cfg := rt.cfg
	cfg.Inherit = sidecar
	if rt.cp != nil {
		link, err := startControlPlane(ctx, *rt.cp, rt.cfg.DataDir, fwdLn, rt.cfg.Flow, rt.log)
		if err != nil {
			rt.closeBrokers()
			release()
			return err
		}
		rt.link = link
		cfg.Forwarding = link.forwarding()
	} else if fwdLn != nil {
		fwdLn.Close()
	}
	fail := func(err error) error {
		rt.stopRPC(context.Background())
		if rt.link != nil {
			rt.link.close(context.Background())
			rt.link = nil
		}
		rt.closeBrokers()
		return err
	}
	if rt.rpc != nil {
		p, err := rpcproxy.New(*rt.rpc, rt.log.With("component", "rpc"))
		if err != nil {
			release()
			return fail(fmt.Errorf("rpc: %w", err))
		}
		if rpc != nil {
			p.Adopt(rpc)
			rpc = nil // the proxy's now
		}
		if err := p.Prepare(ctx); err != nil {
			return fail(fmt.Errorf("rpc: %w", err))
		}
		rt.proxy = p
		if err := serveRPCMetrics(rt.cfg.Telemetry.Registerer(), p); err != nil {
			return fail(fmt.Errorf("rpc: metrics: %w", err))
		}
		cfg.Health = func() error {
			if !p.Healthy() {
				return errors.New("rpc ingress: the local app does not answer its heartbeat")
			}
			return nil
		}
	} else if rpc != nil {
		rpc.Close() // the predecessor ran the RPC proxy; this one does not
		rpc = nil
	}
	sc, err := msgmesh.New(cfg)
	if err != nil {
		return fail(err)
	}
	if rt.link != nil {
		rt.link.attach(sc) // the pushed schemas, before the first publish
	}
	if err := sc.Prepare(ctx); err != nil {
		_ = sc.Shutdown(context.Background())
		return fail(err)
	}
	if rt.link != nil {
		if err := rt.link.prepare(sc); err != nil {
			_ = sc.Shutdown(context.Background())
			return fail(err)
		}
	}
	rt.sc = sc
	return nil
}

// run starts serving what prepare built: the RPC proxy, the sidecar (its
// upstream consumers, then its listeners and adopted connections) and the
// forwarding listener. On error everything is stopped.
func (rt *runtime) run(ctx context.Context) error {
	if rt.proxy != nil {
		if err := rt.proxy.Serve(ctx); err != nil {
			rt.stopAll()
			return fmt.Errorf("rpc: %w", err)
		}
	}
	if err := rt.sc.Serve(ctx); err != nil {
		rt.stopAll()
		return err
	}
	if rt.link != nil {
		rt.link.serve()
	}
	st := rt.status()
	rt.listeners.Store(&st)
	return nil
}

// stopAll stops what prepare built, at once (nothing waits for apps).
func (rt *runtime) stopAll() {
	_ = rt.sc.Shutdown(context.Background())
	rt.stopRPC(context.Background())
	rt.stopLink(context.Background())
	rt.closeBrokers()
}

// Names in the upgrade.Set of what the runtime's components hand over.
// The sidecar's files keep the names a msgmesh from before named files
// sent by position ("mesh", "http", "conn/<i>"; "grpc", "forward" and
// "control" as extras), so that either side may be of that version.
const (
	sidecarState = "msgmesh" // msgmesh.HandoffState; its files unprefixed
	rpcPrefix    = "rpc/"    // rpcproxy.Handover's files; its state "rpc"
	rpcState     = "rpc"     //
	forwardName  = "forward" // the forwarding listener
)

// adoptSidecar takes the sidecar's state and files from set; nil if the
// predecessor handed over none.
func adoptSidecar(set *upgrade.Set) (*msgmesh.HandoffState, error) {
	var hs msgmesh.HandoffState
	if ok, err := set.State(sidecarState, &hs); !ok || err != nil {
		return nil, err
	}
	fs := map[string]*os.File{}
	for _, n := range []string{"mesh", "http", "grpc"} {
		if f := set.Take(n); f != nil {
			fs[n] = f
		}
	}
	for _, prefix := range []string{"conn/", "http/conn/"} {
		for n, f := range set.TakePrefix(prefix) {
			fs[prefix+n] = f
		}
	}
	if err := hs.SetFiles(fs); err != nil {
		for _, f := range fs {
			_ = f.Close()
		}
		return nil, fmt.Errorf("hot upgrade: %w", err)
	}
	return &hs, nil
}

// adoptRPC takes the RPC proxy's listeners and connections from set; nil
// if the predecessor handed over none.
func adoptRPC(set *upgrade.Set) (*rpcproxy.Handover, error) {
	var h rpcproxy.Handover
	if ok, err := set.State(rpcState, &h); !ok || err != nil {
		return nil, err
	}
	fs := set.TakePrefix(rpcPrefix)
	if err := h.SetFiles(fs); err != nil {
		for _, f := range fs {
			_ = f.Close()
		}
		return nil, fmt.Errorf("hot upgrade: %w", err)
	}
	return &h, nil
}

// freeze is the freeze half of freeze/adopt: it stops every component
// where what it holds can move and registers it in into by name: the
// sidecar (its settle wait bounded by ctx), then the RPC proxy (calls in
// flight answered, connections cut at a request boundary) and the
// forwarding listener; then the brokers close. When the sidecar cannot
// stop cleanly, everything is stopped and nothing moves.
func (rt *runtime) freeze(ctx context.Context, into *upgrade.Set) error {
	st, err := rt.sc.Handoff(ctx)
	if err != nil {
		rt.stopRPC(context.Background())
		rt.stopLink(context.Background())
		rt.closeBrokers()
		return err
	}
	errs := []error{into.SetState(sidecarState, st)}
	for n, f := range st.Files() {
		errs = append(errs, into.Add(n, f))
	}
	if rt.proxy != nil {
		// Its own bound: the sidecar's settle wait may have used ctx up.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), upgrade.SettleTimeout)
		h, err := rt.proxy.Freeze(rctx)
		cancel()
		rt.proxy = nil
		if err != nil {
			rt.log.Error("the RPC proxy's sockets cannot move; the successor opens its own", "err", err)
		} else {
			errs = append(errs, into.SetState(rpcState, h))
			for n, f := range h.Files() {
				errs = append(errs, into.Add(rpcPrefix+n, f))
			}
		}
	}
	// The forwarding listener moves too: keep a copy of its socket, then
	// stop its server (nothing is outstanding: Handoff waited). Its
	// connections are TLS sessions, which cannot move: siblings redial.
	if rt.link != nil {
		if fwd, err := rt.link.listenerFile(); err != nil {
			rt.log.Error("forwarding listener cannot move; the successor opens its own", "err", err)
		} else {
			errs = append(errs, into.Add(forwardName, fwd))
		}
		rt.stopLink(context.Background())
	}
	rt.closeBrokers()
	if err := errors.Join(errs...); err != nil {
		// Every socket is still open here: the successor gets what was
		// registered; this is a bug worth a loud log, not a lost sidecar.
		rt.log.Error("registering a socket for the successor", "err", err)
	}
	return nil
}

// serveRPCMetrics puts the proxy's exchange counters on the sidecar's
// /metrics, in place of those of a proxy this process ran before (one
// that froze for a hot upgrade or a reload that fell back).
func serveRPCMetrics(reg prometheus.Registerer, p *rpcproxy.Proxy) error {
	err := reg.Register(p.Metrics())
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		reg.Unregister(are.ExistingCollector)
		err = reg.Register(p.Metrics())
	}
	return err
}

// stopRPC shuts the RPC proxy down, if any.
func (rt *runtime) stopRPC(ctx context.Context) {
	if rt.proxy != nil {
		_ = rt.proxy.Shutdown(ctx)
		rt.cfg.Telemetry.Registerer().Unregister(rt.proxy.Metrics())
		rt.proxy = nil
	}
}

// stopLink closes the control-plane link, if any.
func (rt *runtime) stopLink(ctx context.Context) {
	if rt.link != nil {
		rt.link.close(ctx)
		rt.link = nil
	}
}

// serve runs the sidecar: it takes over from a running predecessor on the
// same data directory if asked to (--upgrade; without it a running one
// makes it refuse), then serves until ctx ends or a successor takes over.
// A reload (msgmesh reload on the control socket, or hup) applies the
// config file again in-process.
func (rt *runtime) serve(ctx context.Context, grace time.Duration, hup <-chan os.Signal) error {
	sock := filepath.Join(rt.cfg.DataDir, upgrade.SocketName)
	if err := os.MkdirAll(rt.cfg.DataDir, 0o700); err != nil {
		return err
	}
	inherit, pred, err := upgrade.Takeover(ctx, sock, rt.upgrade, rt.log)
	if err != nil {
		return err
	}
	ctl, err := upgrade.OpenControl(sock, inherit, rt.log)
	if err != nil {
		if pred != nil {
			pred.Abandon()
			inherit.Close()
		}
		return err
	}
	defer ctl.Close()
	if err := rt.prepare(ctx, inherit); err != nil {
		if pred != nil {
			pred.Abandon() // the predecessor resumes
		}
		return err
	}
	if pred != nil {
		// Everything that can fail is done and nothing was served yet:
		// dying before this point, this process leaves the predecessor
		// exactly the state it handed over, so it resumes with nothing
		// lost or doubled; after it, a death is a crash.
		if os.Getenv(upgrade.TestKillAfterReceive) == upgrade.TestKillAdopted {
			// Test hook: die after adopting everything, before saying
			// ready; half a second later, so that anything started
			// too early (a consumer, a connection's reader) would
			// have done harm the test sees.
			time.Sleep(500 * time.Millisecond)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		pred.Ready()
	}
	if err := rt.run(ctx); err != nil {
		return err
	}
	if pred != nil {
		rt.log.Info("hot upgrade complete: serving the predecessor's connections")
	}
	req := ctl.Serve(rt.lastStatus)
	for {
		select {
		case <-ctx.Done():
			ctl.Close()
			sctx, cancel := context.WithTimeout(context.Background(), grace)
			defer cancel()
			err := rt.sc.Shutdown(sctx)
			rt.stopRPC(sctx)
			rt.stopLink(sctx)
			rt.closeBrokers()
			return err
		case <-hup:
			if err := rt.applyConfig(ctx, "SIGHUP"); errors.Is(err, upgrade.ErrHandoffFailed) {
				return err
			}
		case r := <-req:
			if r.IsReload() {
				err := rt.applyConfig(ctx, "msgmesh reload")
				r.Answer(err)
				if errors.Is(err, upgrade.ErrHandoffFailed) {
					return err
				}
				req = ctl.Serve(rt.lastStatus)
				continue
			}
			set, err := r.HandOver(context.Background(), rt.freeze)
			if err != nil {
				return err // this process stopped; nothing moved
			}
			if set == nil {
				return nil // the successor serves now
			}
			// The successor failed: adopt again what we handed over.
			if err := rt.start(ctx, set); err != nil {
				return fmt.Errorf("%w: resuming after the successor failed: %w", upgrade.ErrHandoffFailed, err)
			}
			req = ctl.Serve(rt.lastStatus)
		}
	}
}

// lastStatus is the status answer of the runtime as it last started.
func (rt *runtime) lastStatus() upgrade.Msg { return *rt.listeners.Load() }

// status is this runtime's answer to a status request: its listeners.
func (rt *runtime) status() upgrade.Msg {
	ls := map[string]string{
		"mesh": rt.sc.MeshAddr(),
		"http": rt.sc.HTTPAddr().String(),
	}
	if rt.link != nil {
		ls["forwarding"] = rt.link.ln.Addr().String()
	}
	if a := rt.sc.GRPCAddr(); a != nil {
		ls["grpc"] = a.String()
	}
	if rt.proxy != nil {
		if a := rt.proxy.EgressAddr(); a != nil {
			ls["rpc egress"] = a.String()
		}
		if a := rt.proxy.IngressAddr(); a != nil {
			ls["rpc ingress"] = a.String()
		}
	}
	return upgrade.Status(ls)
}
