// Package sidecarapp is the msgmesh binary: flags and config file in, a
// running sidecar out. cmd/msgmesh only calls Run. It is internal because
// it is wiring, not an API: embedders use package msgmesh directly.
package sidecarapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/flowctl"
	"github.com/msgmesh/msgmesh/internal/handoff"
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
// ends; then it shuts down gracefully.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("msgmesh", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg        msgmesh.Config
		configPath = fs.String("config", "", "YAML config file (broker clusters and routes); see docs/config.md")
		natsURL    = fs.String("nats-url", "", "external NATS server URL (nats://host:4222), a shorthand for a one-cluster config; empty and no --config: run an embedded JetStream server in <data-dir>/nats")
		natsListen = fs.String("nats-listen", "", "host:port on which the embedded NATS server also accepts TCP clients, with the credentials in <data-dir>/"+natsCredsFile+"; empty: in-process only")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		logJSON    = fs.Bool("log-json", false, "log JSON lines instead of text")
		grace      = fs.Duration("shutdown-grace", 30*time.Second, "how long shutdown waits for apps to answer deliveries they hold")
		cp         cpOptions
		upgrade    = fs.Bool("upgrade", false, "hot upgrade: take over the listeners and app connections of the msgmesh running on --data-dir (docs/upgrade.md); without it this process refuses to start while one runs there")
		otlp       = fs.String("otlp-endpoint", "", "export traces over OTLP/gRPC to this endpoint (http://host:4317 plaintext, https:// or host:port TLS); overrides telemetry.otlp_endpoint")
	)
	fs.StringVar(&cp.URLs, "ctrlplane", "", "control plane URL(s), comma-separated; enables weights and forwarding between the app's sidecars (needs --app and MSGMESH_APP_CREDENTIAL)")
	fs.StringVar(&cp.App, "app", "", "the app this sidecar serves, as named at the control plane")
	fs.StringVar(&cp.Listen, "forward-listen", "0.0.0.0:7602", "forwarding listener for sibling sidecars (mutual TLS)")
	fs.StringVar(&cp.Advertise, "forward-advertise", "", "this sidecar's forwarding address as siblings reach it, host:port: its instance id at the control plane (default: --forward-listen when its host is not 0.0.0.0)")
	instLabels := api.LabelFlag{}
	fs.Var(instLabels, "instance-label", "a label KEY=VALUE (repeatable) this sidecar registers its instance with at the control plane, merged into the instance's labels (docs/ctrlplane.md)")
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "directory for registrations and the embedded broker's data")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7600", "mesh-protocol listener")
	fs.StringVar(&cfg.HTTPListen, "http", "127.0.0.1:7601", "HTTP API listener")
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
	access, err := checkAccess(log, file, *allowRemote, *httpHosts, cfg.HTTPListen, cfg.Listen, *natsListen, *natsURL != "",
		listener{remoteGRPC, "--grpc", cfg.GRPCListen, "the gRPC API, which authenticates no one without app secrets, would let them publish and consume as any app"})
	if err != nil {
		return err
	}
	cfg.HTTPAllowedHosts = access.HTTPAllowedHosts
	cfg.PushAllowHosts = splitList(*pushHosts)
	topo := file.Brokers
	switch {
	case topo != nil && *natsURL != "":
		return errors.New("--nats-url and a brokers section in --config both say where topics live; use one")
	case file.Embedded != nil && *natsURL != "":
		return errors.New("--nats-url and an embedded section in --config: the embedded server runs only without an external one; drop one")
	case topo == nil && *natsURL != "":
		topo = &topology.Topology{Clusters: []topology.Cluster{{Name: "nats", Kind: topology.KindNATS, Endpoints: []string{*natsURL}}}}
		if err := topo.Validate(); err != nil {
			return err
		}
	}

	telCfg := observe.Config{}
	if file.Telemetry != nil {
		telCfg = *file.Telemetry
	}
	if *otlp != "" {
		telCfg.OTLPEndpoint = *otlp
	}
	tel, err := observe.New(ctx, telCfg)
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	limits := flowctl.Config{}
	if file.Limits != nil {
		limits = *file.Limits
	}
	flow, err := flowctl.New(limits)
	if err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	cfg.Telemetry, cfg.Flow = tel, flow
	if *configPath != "" {
		stop := reloadLimitsOnHUP(*configPath, flow, log)
		defer stop()
	}
	rt := runtime{cfg: cfg, topo: topo, natsListen: *natsListen, embedded: file.Embedded, log: log, rpc: file.RPC,
		upgrade: upgradeOpts{enabled: *upgrade, want: map[string]string{"mesh": cfg.Listen, "http": cfg.HTTPListen}}}
	if cfg.GRPCListen != "" {
		rt.upgrade.want["grpc"] = cfg.GRPCListen
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
		rt.upgrade.want["forwarding"] = cp.Listen
	}
	return rt.serve(ctx, *grace)
}

// runtime is one incarnation of the sidecar in this process: its brokers
// and its Sidecar. A hot upgrade ends it; a failed one starts it again on
// the state it handed over.
type runtime struct {
	cfg        msgmesh.Config
	topo       *topology.Topology
	natsListen string
	embedded   *Embedded // settings of the embedded server; nil: defaults
	log        *slog.Logger

	sc     *msgmesh.Sidecar
	closer []func()

	cp   *cpOptions    // nil: no control plane
	link *controlPlane // this incarnation's control-plane link

	rpc   *rpcproxy.Config // nil: no RPC proxy
	proxy *rpcproxy.Proxy  // this incarnation's RPC proxy

	upgrade upgradeOpts // whether and onto what this process takes over
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

// start opens the brokers and the control-plane link and starts the
// sidecar, adopting inherit (and the forwarding listener fwdLn) if set.
func (rt *runtime) start(ctx context.Context, inherit *msgmesh.HandoffState, fwdLn *os.File) error {
	if err := rt.openBrokers(ctx); err != nil {
		rt.closeBrokers()
		return err
	}
	cfg := rt.cfg
	cfg.Inherit = inherit
	if rt.cp != nil {
		link, err := startControlPlane(ctx, *rt.cp, rt.cfg.DataDir, fwdLn, rt.cfg.Flow, rt.log)
		if err != nil {
			rt.closeBrokers()
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
			return fail(fmt.Errorf("rpc: %w", err))
		}
		if err := p.Start(ctx); err != nil {
			return fail(fmt.Errorf("rpc: %w", err))
		}
		rt.proxy = p
		cfg.Health = func() error {
			if !p.Healthy() {
				return errors.New("rpc ingress: the local app does not answer its heartbeat")
			}
			return nil
		}
	}
	sc, err := msgmesh.New(cfg)
	if err != nil {
		return fail(err)
	}
	if rt.link != nil {
		rt.link.attach(sc) // the pushed schemas, before the first publish
	}
	if err := sc.Start(ctx); err != nil {
		_ = sc.Shutdown(context.Background())
		return fail(err)
	}
	rt.sc = sc
	if rt.link != nil {
		if err := rt.link.serve(sc); err != nil {
			_ = sc.Shutdown(context.Background())
			return fail(err)
		}
	}
	return nil
}

// stopRPC shuts the RPC proxy down, if any.
func (rt *runtime) stopRPC(ctx context.Context) {
	if rt.proxy != nil {
		_ = rt.proxy.Shutdown(ctx)
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

// Step timeouts of a hot upgrade.
const (
	settleTimeout = 30 * time.Second // apps answering what they hold
	readyTimeout  = 60 * time.Second // the successor starting and adopting
)

// serve runs the sidecar: it takes over from a running predecessor on the
// same data directory if asked to (--upgrade; without it a running one
// makes it refuse), then serves until ctx ends or a successor takes over.
func (rt *runtime) serve(ctx context.Context, grace time.Duration) error {
	sock := filepath.Join(rt.cfg.DataDir, handoff.SocketName)
	if err := os.MkdirAll(rt.cfg.DataDir, 0o700); err != nil {
		return err
	}
	inherit, ctl, fwdLn, pred, err := takeover(sock, rt.upgrade, rt.log)
	if err != nil {
		return err
	}
	for {
		if err := rt.start(ctx, inherit, fwdLn); err != nil {
			if pred != nil {
				pred.Close() // the predecessor resumes
			}
			return err
		}
		if pred != nil {
			if err := handoff.Write(pred, handoff.Msg{Op: handoff.OpReady}); err != nil {
				rt.log.Error("telling the predecessor we are ready", "err", err)
			}
			pred.Close()
			pred = nil
			rt.log.Info("hot upgrade complete: serving the predecessor's connections")
		}
		if ctl == nil {
			if ctl, err = handoff.Listen(sock); err != nil {
				_ = rt.sc.Shutdown(context.Background())
				rt.closeBrokers()
				return err
			}
		}
		req := acceptOne(ctl, rt.status(), rt.log)
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
		case c := <-req:
			st, fwd, err := rt.handOver(c, ctl)
			if err != nil {
				return err // this process stopped; nothing moved
			}
			if st == nil {
				return nil // the successor serves now
			}
			inherit, fwdLn = st, fwd // the successor failed: resume on what we handed over
		}
	}
}

// ErrHandoffFailed: this process could not hand over (the sidecar could
// not stop cleanly for it); it stopped, the successor was told, and the
// process exits with the reason.
var ErrHandoffFailed = errors.New("hot upgrade failed")

// handOver runs the old side of a hot upgrade on the successor's request.
// It returns nil state when the successor reported ready; the state (and
// forwarding listener) to resume from when the successor failed; and an
// error wrapping ErrHandoffFailed when this process could not hand over.
func (rt *runtime) handOver(c *net.UnixConn, ctl *net.UnixListener) (*msgmesh.HandoffState, *os.File, error) {
	defer c.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	st, err := rt.sc.Handoff(ctx)
	cancel()
	if err != nil {
		// The sidecar is stopped either way; nothing was sent, so the
		// successor gives up and we cannot resume: exit with the error.
		rt.log.Error("handoff failed", "err", err)
		_ = handoff.Write(c, handoff.Msg{Op: handoff.OpRefused, Error: err.Error()})
		rt.stopRPC(context.Background())
		rt.stopLink(context.Background())
		rt.closeBrokers()
		return nil, nil, fmt.Errorf("%w: the sidecar stopped; start it again (without --upgrade): %w", ErrHandoffFailed, err)
	}
	// The RPC proxy's listeners do not move (docs/upgrade.md): it stops
	// here, finishing calls in flight, and the successor opens its own.
	rctx, rcancel := context.WithTimeout(context.Background(), settleTimeout)
	rt.stopRPC(rctx)
	rcancel()
	// The forwarding listener moves too: keep a copy of its socket, then
	// stop its server (nothing is outstanding: Handoff waited).
	var fwd *os.File
	if rt.link != nil {
		if fwd, err = rt.link.listenerFile(); err != nil {
			rt.log.Error("forwarding listener cannot move; the successor opens its own", "err", err)
		}
		rt.stopLink(context.Background())
	}
	rt.closeBrokers()
	paused := time.Since(start)
	files := append(st.Files(), nil)
	extra := []string{"control"}
	ctlFile, err := ctl.File()
	files[len(files)-1] = ctlFile
	if fwd != nil {
		files, extra = append(files, fwd), append(extra, "forward")
	}
	if st.GRPC != nil {
		files, extra = append(files, st.GRPC), append(extra, "grpc")
	}
	if err == nil {
		err = rt.send(c, st, files, extra)
		ctlFile.Close()
	}
	if err == nil {
		_ = c.SetReadDeadline(time.Now().Add(readyTimeout))
		var m handoff.Msg
		if m, err = handoff.Read(c); err == nil && m.Op != handoff.OpReady {
			err = fmt.Errorf("successor answered %q", m.Op)
		}
	}
	if err != nil {
		rt.log.Error("successor failed before adopting; resuming", "err", err)
		return st, fwd, nil
	}
	st.Close()
	if fwd != nil {
		fwd.Close()
	}
	ctl.Close()
	rt.log.Info("handed over to the successor; exiting", "connections", len(st.Conns), "quiesce", paused, "total", time.Since(start))
	return nil, nil, nil
}

func (rt *runtime) send(c *net.UnixConn, st *msgmesh.HandoffState, files []*os.File, extra []string) error {
	state, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := handoff.Write(c, handoff.Msg{Op: handoff.OpState, State: state, Files: len(files), Extra: extra}); err != nil {
		return err
	}
	return handoff.SendFiles(c, files)
}

// testKillAfterReceive names the environment variable that makes a new
// process SIGKILL itself right after receiving its predecessor's sockets,
// so tests can show the predecessor resuming. Nothing else reads it.
const testKillAfterReceive = "MSGMESH_TEST_KILL_AFTER_RECEIVE"

// reloadLimitsOnHUP re-reads the config file on SIGHUP and applies its
// limits section without a restart; a file that does not load changes
// nothing. The returned func stops listening and waits.
func reloadLimitsOnHUP(path string, flow *flowctl.Controller, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-done:
				return
			case <-hup:
			}
			f, err := LoadFile(path)
			if err == nil {
				limits := flowctl.Config{}
				if f.Limits != nil {
					limits = *f.Limits
				}
				err = flow.Apply(limits)
			}
			if err != nil {
				log.Error("SIGHUP: limits not reloaded; the old ones stay", "config", path, "err", err)
				continue
			}
			log.Info("SIGHUP: limits reloaded", "config", path)
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-exited
	}
}
