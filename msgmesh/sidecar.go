// Package msgmesh is the sidecar: it serves apps on a local mesh-protocol
// listener and an HTTP API, persists their registrations, keeps exactly one
// upstream consumer per (cluster, group, topic), and moves messages between
// apps and brokers with at-least-once delivery.
//
// How the parts fit (docs/design.md flows 1–6):
//
//   - registrations (http.go, aggregate.go): the HTTP API writes a
//     registration to the registry store (fsync) and then reconciles the set
//     of running upstream consumers with the union of all registrations;
//   - upstream consumers (aggregate.go): one goroutine per (group, topic)
//     that takes a free delivery slot on some app connection, then one
//     message from the broker, then hands it over, so a slow app stops the
//     flow from the broker;
//   - routes (route.go): the dispatch point of one (group, topic): the
//     connections that declared it and the pending pull requests;
//   - sessions (session.go): one app connection: its read loop, publish
//     lanes, deliveries in flight and their timeouts; an app pulling over
//     HTTP gets a session without a connection (httppull.go), so its
//     deliveries are bounded, timed out and settled the same way;
//   - HTTP push subscriptions (push.go, cloudevents.go): consume bindings
//     with a push_url get a push session whose workers POST each delivery
//     as a CloudEvent and ack or nack it from the answer; reconcile starts
//     and stops them with the registrations;
//   - capacity (capacity.go): the bounds on connections, registrations,
//     upstream consumers and HTTP clients, and how a request past one is
//     refused;
//   - poison messages (deadletter.go): a group's failed attempts end, after
//     its last allowed one, with a copy on its dead-letter topic and an
//     ack of the original; registration checks across apps and clusters
//     (register.go) keep one policy per group and topic names a cluster
//     can hold;
//   - identity (identity.go): the one registered app a connection (or an
//     HTTP publish, or a sibling) acts as, its secret, and what its
//     registration lets it publish and consume (docs/protocol.md §9);
//   - readiness (readiness.go): each broker cluster checked in the
//     background, and the upstream consumers' states, for GET /readyz,
//     GET /v1/upstreams and the readiness metrics, read without locks.
//
// Lock order, outermost first; a lock is taken only while holding locks to
// its left on the same line, never the other way round:
//
//	Sidecar.regMu → Sidecar.reconcileMu → upstream.mu
//	route.mu → pullWaiter.mu → session.mu
//	Sidecar.sessMu → session.mu (and the forwarder's own lock: Outstanding)
//	Sidecar.routesMu, alone or under detachedSessions.mu (routes are
//	  signalled under it, not locked)
//	detachedSessions.mu → route.mu → pullWaiter.mu → session.mu (an HTTP
//	  pull joins its route and starts under it: httppull.go, detached.go)
//
// Broker calls and network writes happen under two locks only, both on
// control paths: Register holds regMu across its checks (which may ask a
// cluster about topic and group names), its store write and the
// reconciliation that follows; reconcileMu is held while upstream
// consumers start, stop, pause and resume (broker calls). Nothing on the
// data path waits for them, and neither do the introspection endpoints:
// /v1/upstreams, /readyz and /metrics read the view reconciliation
// publishes (readiness.go). No other lock is held across a broker call or
// a network write: a PULL_RESULT is written after pullWaiter.finish has
// released every lock, and code that acts on every session lists them
// under sessMu and acts after releasing it (sessionsNow).
package msgmesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/flowctl"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
	"github.com/msgmesh/msgmesh/observe"
	"github.com/msgmesh/msgmesh/pipeline"
	"github.com/msgmesh/msgmesh/schema"
	"github.com/msgmesh/msgmesh/topology"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
)

// Config configures a Sidecar. The zero value of every field but DataDir and
// Broker is a usable default.
type Config struct {
	// DataDir holds the registration store (registrations.db). Required.
	DataDir string
	// Listen is the mesh-protocol address: host:port, or unix:/path for a
	// unix-domain socket (UnixPrefix; the file is made UnixSocketMode, a
	// stale one left by a dead process is replaced, and a clean Shutdown
	// removes it; a hot upgrade moves it like a TCP listener). Zero:
	// 127.0.0.1:7600.
	Listen string
	// HTTPListen is the HTTP API address. Zero: 127.0.0.1:7601.
	HTTPListen string
	// HTTPAllowedHosts are the Host names the HTTP API answers besides
	// loopback ones (localhost, 127.0.0.0/8, ::1): host names, IP addresses
	// or CIDR prefixes, any port. It refuses every other Host, as DNS
	// rebinding would send it (httpguard.go). Zero: loopback only.
	HTTPAllowedHosts []string
	// GRPCListen is the gRPC API's address (grpc.go, docs/grpc.md). Zero:
	// no gRPC API (the msgmesh binary's --grpc defaults to 127.0.0.1:7603).
	GRPCListen string
	// Pprof serves Go's runtime profiles (net/http/pprof) under
	// /debug/pprof/ on the HTTP API, behind the same guard as the rest of
	// it (loopback Host, no browser): for profiling a sidecar under load
	// (docs/benchmarks.md). Zero: not served; a profile shows what the
	// process runs, so it is off unless asked for.
	Pprof bool
	// Brokers are the broker clusters topics live on, by cluster name; the
	// caller opens them (brokers.Open) and closes them after Shutdown.
	// Required, unless Broker is set.
	Brokers map[string]broker.Broker
	// Broker is a shorthand for one cluster, named "default", that every
	// topic lives on. Set Broker or Brokers, not both.
	Broker broker.Broker
	// Routes map topics to clusters of Brokers; the first match wins
	// (package topology).
	Routes []topology.Route
	// DefaultCluster holds every topic no route matches. Zero: the only
	// cluster when there is one.
	DefaultCluster string
	// MaxInflight bounds unanswered deliveries per connection; an app may
	// ask for fewer in HELLO. Zero: 1024.
	MaxInflight int
	// DeliveryTimeout is how long an app may take to answer a delivery
	// before it goes back to the broker. The broker's own ack wait is set to
	// twice this. Zero: 30s.
	DeliveryTimeout time.Duration
	// PublishTimeout bounds one publish to the broker. A mesh connection's
	// publishes share deadlines (publish.go), so theirs may run up to 1%
	// longer, never shorter. Zero: 10s.
	PublishTimeout time.Duration
	// MaxAttempts is how many times a message is delivered to a consumer
	// group (an attempt fails on a nack or a delivery timeout) before the
	// sidecar moves it to the group's dead-letter topic, for consume
	// bindings that set no max_attempts of their own (docs/protocol.md
	// §5.7). 1 to registry.MaxAttemptsLimit. Zero: DefaultMaxAttempts (10).
	MaxAttempts int
	// MaxNackDelay caps the delay an app asks for in a NACK, on every
	// broker, so that a nacked message comes back within it: a Kafka
	// partition's commits wait for a nacked message (docs/brokers.md).
	// Zero: DefaultMaxNackDelay (1 minute).
	MaxNackDelay time.Duration
	// MaxMessageSize bounds a published body. A cluster whose broker
	// takes no body this large with MaxHeaderBytes of headers lowers it
	// for its topics (New logs a warning; MaxBody tells the limit in
	// force). Zero: DefaultMaxMessageSize (1 MiB).
	MaxMessageSize int
	// MaxHeaderBytes bounds a published message's key and headers, counted
	// as broker.HeaderBytes counts them (the key, plus name, value and 4
	// bytes per header). Zero: DefaultMaxHeaderBytes (8 KiB).
	MaxHeaderBytes int
	// MaxFrameSize bounds one frame from an app; it must leave room for a
	// PUBLISH of MaxMessageSize and MaxHeaderBytes (and 4 KiB for the
	// topic and framing). A larger frame is refused with FRAME_TOO_LARGE
	// and skipped; the connection goes on. Zero: 4 MiB
	// (mesh.DefaultMaxFrameSize), or what the message limits need.
	MaxFrameSize int
	// PublishLanes is how many publishes of one connection may wait for the
	// broker at once. Publishes with the same key share a lane, so their
	// order is kept. Zero: 128.
	PublishLanes int
	// IdleTimeout closes a connection that sent nothing for this long, or
	// at most a 64th longer (the read deadline moves in steps); the SDK
	// heartbeats well within it. Zero: 60s.
	IdleTimeout time.Duration
	// MaxConns bounds the app connections served at once; past it a new
	// connection's HELLO is answered ERROR UNAVAILABLE and the connection
	// closed, while those served go on (docs/protocol.md). Zero:
	// DefaultMaxConns; New lowers it to fit the process's open-file limit.
	MaxConns int
	// HelloTimeout closes a connection that has not said HELLO this long
	// after connecting, so idle connections do not hold a slot of MaxConns
	// for IdleTimeout. Zero: 5s.
	HelloTimeout time.Duration
	// MaxRegistrations bounds the stored registrations (apps); a
	// registration past it is refused with a *LimitError (HTTP 409
	// LIMIT_EXCEEDED). Zero: DefaultMaxRegistrations.
	MaxRegistrations int
	// MaxUpstreams bounds the upstream consumers, one per (cluster, group,
	// topic) the registrations consume; a registration that would need
	// more is refused like one past MaxRegistrations. Zero:
	// DefaultMaxUpstreams.
	MaxUpstreams int
	// HTTP bounds the HTTP API's clients: timeouts, header size and
	// connections at once. Zero fields: DefaultHTTPLimits.
	HTTP core.HTTPLimits
	// PullLinger is how long a PULL waits for more messages after the first
	// one arrived before it answers with what it has. Zero: 5ms.
	PullLinger time.Duration
	// Prefetch is passed to the broker adapter as ConsumerSpec.Prefetch.
	// Zero: the adapter's default.
	Prefetch int
	// Logger receives structured logs. Zero: slog.Default().
	Logger *slog.Logger
	// Forwarding, when set, forwards deliveries between the sidecars of
	// one app by weight (docs/design.md flows 7 and 8). Zero: every delivery
	// stays local.
	Forwarding *Forwarding
	// RequireAppSecrets makes every app prove who it is with its secret, on
	// HELLO and on the HTTP API, for hosts where apps do not trust each
	// other (docs/protocol.md §9): registering a new app issues one, and
	// an app without one cannot connect. Zero: an app needs its secret only
	// if it registered with one.
	RequireAppSecrets bool
	// Stages are more stages for the sidecar's pipeline (package
	// pipeline): values implementing its publish, fetch or deliver hooks.
	// They run after schema validation and before tracing and flow
	// control (New has the whole order). A stage refusing a publish fails
	// it with the stage's error. Zero: none, at no cost.
	Stages []pipeline.Stage
	// Telemetry traces publishes, deliveries, forwards and pulls and counts
	// them for GET /metrics (package observe). Zero: no spans, no /metrics.
	Telemetry *observe.Telemetry
	// Flow applies per-topic publish rate and size limits, per-group
	// delivery rate and in-flight bounds, and a circuit breaker per broker
	// cluster (package flowctl); Flow.Apply changes them while running.
	// Zero: no limits beyond MaxMessageSize and MaxInflight.
	Flow *flowctl.Controller
	// Health, when set, is asked by GET /healthz and GET /readyz besides
	// the sidecar's own state (the RPC proxy's ingress health, say); an
	// error makes them 503.
	Health func() error
	// ProbeInterval is how often each broker cluster is checked, in the
	// background, for GET /readyz, GET /v1/upstreams and the readiness
	// metrics (adapters implementing broker.Checker). Zero: 2s.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one check; a cluster that does not answer in
	// time is not ready. Zero: 2s.
	ProbeTimeout time.Duration
	// PushAllowHosts are the hosts push subscriptions may POST to besides
	// loopback ones (localhost, 127.0.0.0/8, ::1): host names, IP
	// addresses or CIDR prefixes, any port, as HTTPAllowedHosts. A
	// registration whose push_url names another host is refused (400
	// INVALID), so an app cannot make the sidecar send messages off the
	// host. Zero: loopback only.
	PushAllowHosts []string
	// PushTimeout bounds one POST of a push subscription that sets no
	// push_timeout; it must stay below DeliveryTimeout. Zero: 10s, or
	// half of DeliveryTimeout when that is 20s or less.
	PushTimeout time.Duration
	// Inherit is the state a predecessor handed over in a hot upgrade
	// (Sidecar.Handoff): Start adopts its listeners and app connections
	// instead of listening. The sidecar owns its files from New on.
	Inherit *HandoffState
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return fmt.Errorf("msgmesh: config: DataDir is required")
	}
	switch {
	case c.Broker != nil && c.Brokers != nil:
		return fmt.Errorf("msgmesh: config: set Broker or Brokers, not both")
	case c.Broker != nil:
		c.Brokers = map[string]broker.Broker{"default": c.Broker}
	case len(c.Brokers) == 0:
		return fmt.Errorf("msgmesh: config: a broker is required")
	}
	if c.DefaultCluster == "" && len(c.Brokers) == 1 {
		for name := range c.Brokers {
			c.DefaultCluster = name
		}
	}
	if err := topology.ValidateRoutes(c.Routes, c.DefaultCluster, func(n string) bool { return c.Brokers[n] != nil }); err != nil {
		return fmt.Errorf("msgmesh: config: %w", err)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7600"
	}
	if c.HTTPListen == "" {
		c.HTTPListen = "127.0.0.1:7601"
	}
	def(&c.MaxInflight, 1024)
	def(&c.MaxMessageSize, DefaultMaxMessageSize)
	def(&c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	def(&c.MaxFrameSize, defaultFrameSize(c.MaxMessageSize, c.MaxHeaderBytes))
	def(&c.PublishLanes, 128)
	defDur(&c.DeliveryTimeout, 30*time.Second)
	defDur(&c.PublishTimeout, 10*time.Second)
	defDur(&c.IdleTimeout, 60*time.Second)
	defDur(&c.PullLinger, 5*time.Millisecond)
	def(&c.MaxConns, DefaultMaxConns)
	def(&c.MaxRegistrations, DefaultMaxRegistrations)
	def(&c.MaxUpstreams, DefaultMaxUpstreams)
	defDur(&c.HelloTimeout, DefaultHelloTimeout)
	def(&c.MaxAttempts, DefaultMaxAttempts)
	defDur(&c.MaxNackDelay, DefaultMaxNackDelay)
	defDur(&c.ProbeInterval, defaultProbeInterval)
	defDur(&c.ProbeTimeout, defaultProbeTimeout)
	defDur(&c.PushTimeout, min(defaultPushTimeout, c.DeliveryTimeout/2))
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if err := c.capacityDefaults(); err != nil {
		return err
	}
	if c.Forwarding != nil && c.Forwarding.App == "" {
		return fmt.Errorf("msgmesh: config: Forwarding.App is required: the app whose consumer groups siblings share")
	}
	switch {
	case c.MaxInflight < 0, c.MaxMessageSize < 0, c.MaxHeaderBytes < 0, c.PublishLanes < 0, c.Prefetch < 0:
		return fmt.Errorf("msgmesh: config: negative limit")
	case c.MaxFrameSize < c.MaxMessageSize+c.MaxHeaderBytes+frameSlack:
		return fmt.Errorf("msgmesh: config: MaxFrameSize %d leaves no room for MaxMessageSize %d and MaxHeaderBytes %d (it needs at least %d)",
			c.MaxFrameSize, c.MaxMessageSize, c.MaxHeaderBytes, c.MaxMessageSize+c.MaxHeaderBytes+frameSlack)
	case c.DeliveryTimeout < 0, c.PublishTimeout < 0, c.IdleTimeout < 0, c.PullLinger < 0, c.MaxNackDelay < 0, c.ProbeInterval < 0, c.ProbeTimeout < 0:
		return fmt.Errorf("msgmesh: config: negative duration")
	case c.PushTimeout < 0 || c.PushTimeout >= c.DeliveryTimeout:
		return fmt.Errorf("msgmesh: config: PushTimeout %s must be above 0 and below DeliveryTimeout %s", c.PushTimeout, c.DeliveryTimeout)
	case c.MaxAttempts < 1 || c.MaxAttempts > registry.MaxAttemptsLimit:
		return fmt.Errorf("msgmesh: config: MaxAttempts %d is out of range 1 to %d", c.MaxAttempts, registry.MaxAttemptsLimit)
	}
	return nil
}

// Sidecar is one msgmesh sidecar. Create it with New, run it with Start,
// stop it with Shutdown.
type Sidecar struct {
	cfg   Config
	log   *slog.Logger
	store *registry.Store

	ctx    context.Context // cancelled by Shutdown; parent of upstream consumers
	cancel context.CancelFunc

	meshSrv *core.Server
	httpSrv *http.Server
	meshLn  net.Listener
	httpLn  net.Listener
	// meshSock is meshLn's socket file when it is a unix socket
	// (unixsock.go); set by Prepare.
	meshSock *meshSocket
	guard    *httpGuard    // in front of the HTTP API
	bg       core.Routines // the two serve loops, the reconcile retry loop and the probe loops
	// httpConns are the HTTP API's connections, which move in a handoff
	// (httpmove.go); set by Prepare.
	httpConns *httpConns

	prepared, served bool // Prepare and Serve ran (Start's two halves; one goroutine calls them)

	// The gRPC API (grpc.go); all nil without Config.GRPCListen.
	grpcLn     net.Listener
	grpcSrv    *grpc.Server
	grpcAPI    *grpcServer
	grpcHealth *health.Server
	// deadLetters are the dead-letter publishes in progress (deadletter.go);
	// Shutdown and Handoff wait for them.
	deadLetters core.Routines
	// regMu serialises Register's checks (capacity.go, register.go)
	// against the other registrations with its store write, so two apps
	// cannot each pass them alone.
	regMu sync.Mutex

	draining atomic.Bool

	// reconcileMu serialises reconciliation, so the running upstream set is
	// always the one the latest registration state asks for.
	reconcileMu sync.Mutex
	upstreams   map[upstreamKey]*upstream // guarded by reconcileMu
	failed      map[upstreamKey]error     // desired but not running; guarded by reconcileMu
	// carried are the messages the predecessor's consumers kept
	// (HandoffState.Carried), until the upstream they belong to starts;
	// guarded by reconcileMu.
	carried    map[upstreamKey][]byte
	capLog     capacityLog // guarded by reconcileMu
	paused     bool        // delivery paused; guarded by reconcileMu
	pausedFlag atomic.Bool // paused, readable without reconcileMu
	stats      stats
	ruleStats  sync.Map      // routing rule name -> *ruleStats (forwarding.go)
	retry      chan struct{} // wakes the retry loop

	// Readiness (readiness.go): the clusters' last checks, and the
	// upstream consumers as reconcile last published them.
	clusters     map[string]*cluster // read-only after New
	upstreamView atomic.Pointer[[]upstreamEntry]
	clearHealth  func() // takes the readiness off the metrics

	snap atomic.Pointer[snapshot] // registrations, for per-request checks

	maxBody map[string]int // by cluster: the body limit in force (limits.go); read-only

	schemas   atomic.Pointer[compiledSchemas] // SetSchemaSet
	validator *schema.Validator
	pipe      *pipeline.Pipeline // the stages every publish and delivery passes (New)
	deadlines *deadlines         // of the mesh connections' publishes (publish.go)
	// wireMsgs are the *mesh.Message a push encodes its DELIVER from
	// (session.push): the frame is encoded before Queue returns, so one
	// is needed only for that call, and a fresh one, passed by address as
	// a mesh.Encoder, moved to the heap for every delivery.
	wireMsgs sync.Pool
	// settleDeadlines are those of the broker calls settling the answers
	// apps send on their mesh connections (session.settleAnswer).
	settleDeadlines *deadlines

	routesMu sync.Mutex
	routes   map[routeKey]*route

	sessMu     sync.Mutex
	sessions   map[*session]struct{}
	handingOff bool        // guarded by sessMu: new sessions freeze at once
	frozen     []ConnState // guarded by sessMu: sessions frozen for handoff
	sessWG     sync.WaitGroup

	detached detachedSessions // sessions without a connection: HTTP pull, push (detached.go)
	push     *pushManager     // HTTP push subscriptions (push.go)

	shutdownOnce sync.Once
	shutdownErr  error
}

// snapshot is an immutable view of the registrations, swapped atomically
// after every change, so publishes and declarations check it without locks.
type snapshot struct {
	produce map[string]string // topics someone produces → their cluster
	consume map[routeKey]bool // (group, topic) someone consumes
	policy  map[routeKey]deadLetterPolicy

	apps        map[string]*grant // per app: what its registration allows (identity.go)
	anonProduce map[string]string // topics an app without a secret produces → cluster
}

// New validates cfg and opens the registration store in cfg.DataDir. It
// does not touch the network; Start does.
func New(cfg Config) (*Sidecar, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	maxBody, err := clusterLimits(&cfg)
	if err != nil {
		return nil, err
	}
	guard, err := newHTTPGuard(cfg.HTTPAllowedHosts, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("msgmesh: config: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("msgmesh: data dir: %w", err)
	}
	store, err := registry.Open(filepath.Join(cfg.DataDir, "registrations.db"))
	if err != nil {
		return nil, fmt.Errorf("msgmesh: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sidecar{
		cfg:             cfg,
		log:             cfg.Logger,
		store:           store,
		maxBody:         maxBody,
		ctx:             ctx,
		cancel:          cancel,
		upstreams:       make(map[upstreamKey]*upstream),
		failed:          make(map[upstreamKey]error),
		retry:           make(chan struct{}, 1),
		routes:          make(map[routeKey]*route),
		sessions:        make(map[*session]struct{}),
		validator:       schema.NewValidator(schema.ValidatorOptions{}),
		deadlines:       newDeadlines(cfg.PublishTimeout),
		settleDeadlines: newDeadlines(settleTimeout),
		clusters:        newClusters(cfg.Brokers),
		guard:           guard,
	}
	if s.push, err = newPushManager(s, cfg.PushAllowHosts); err != nil {
		_ = store.Close()
		cancel()
		return nil, fmt.Errorf("msgmesh: config: %w", err)
	}
	s.snap.Store(&snapshot{produce: map[string]string{}, consume: map[routeKey]bool{}, policy: map[routeKey]deadLetterPolicy{}})
	if s.cfg.Flow == nil {
		if s.cfg.Flow, err = flowctl.New(flowctl.Config{}); err != nil {
			_ = store.Close()
			cancel()
			return nil, err
		}
	}
	// The pipeline, composed once: every publish and delivery meets its
	// stages in this order, outermost first (docs/design.md "The
	// pipeline"). Metrics come first so they count every outcome, the
	// refusals of the later stages included; schema validation refuses a
	// bad body before anything is traced, waited for or sent; the plugins
	// of Config.Stages come next; the publish span covers the wait for a
	// rate limit, the breaker and the broker call; flow control is
	// innermost, right around the broker call (publish) and the broker
	// read (delivery). A delivery ends up wrapped in the same order:
	// metrics{plugins{flow control{the adapter's delivery}}}.
	stages := []pipeline.Stage{cfg.Telemetry.MetricsStage(), schemaStage{s}}
	stages = append(stages, cfg.Stages...)
	stages = append(stages, cfg.Telemetry.TracingStage(), s.cfg.Flow.Stage())
	if s.pipe, err = pipeline.New(stages...); err != nil {
		_ = store.Close()
		cancel()
		return nil, fmt.Errorf("msgmesh: config: %w", err)
	}
	s.cfg.Telemetry.SetEndpoints(s.endpointOf)
	s.meshSrv = core.NewServer(s.serveConn, s.log)
	s.meshSrv.LimitConns(core.ConnLimit{Max: s.cfg.MaxConns, Refuse: s.refuseConn, RefuseTimeout: s.cfg.HelloTimeout, Name: "max_conns (--max-conns)"})
	return s, nil
}

// endpointOf describes the cluster topic lives on, for telemetry; zero when
// its adapter cannot say.
func (s *Sidecar) endpointOf(topic string) broker.Endpoint {
	if d, ok := s.cfg.Brokers[s.clusterOf(topic)].(broker.Describer); ok {
		return d.Endpoint()
	}
	return broker.Endpoint{}
}

// Start reloads the stored registrations and starts their upstream
// consumers, then opens the listeners, so after a crash the sidecar is
// consuming again before apps reconnect. An upstream consumer that cannot
// start (broker down) does not fail Start: it is retried in the background.
// It is Prepare followed by Serve.
func (s *Sidecar) Start(ctx context.Context) error {
	if err := s.Prepare(ctx); err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Prepare is the half of Start that can fail and that nothing outside the
// process sees: it takes over the deliveries a predecessor's apps hold
// (Config.Inherit) and opens or adopts the listeners, without accepting,
// reading an app's connection or reading from a broker. A hot upgrade's
// successor says ready between Prepare and Serve, so that if it dies before
// ready the predecessor resumes on exactly the state it handed over: no app
// answer was read and no delivery was sent by the dead process. After a
// Prepare, Shutdown closes what it opened whether or not Serve ran.
func (s *Sidecar) Prepare(ctx context.Context) error {
	if s.prepared {
		return errors.New("msgmesh: Prepare called twice")
	}
	s.adoptInheritedHeld() // before the consumers read their partitions again
	if err := s.listen(); err != nil {
		return err
	}
	var adopted []HTTPConnState
	if inh := s.cfg.Inherit; inh != nil {
		adopted = inh.HTTPConns
	}
	s.httpConns = newHTTPConns(s.httpLn, adopted, s.log)
	s.prepared = true
	return nil
}

// Serve starts what Prepare made ready: the upstream consumers (stored
// registrations; a predecessor's carried messages first), then accepting
// on the listeners and reading the adopted connections.
func (s *Sidecar) Serve(ctx context.Context) error {
	if !s.prepared {
		return errors.New("msgmesh: Serve before Prepare")
	}
	if err := s.reconcile(ctx); err != nil {
		return err
	}
	s.served = true
	s.httpSrv = s.cfg.HTTP.Server(s.httpConns.serve(s.httpHandler()))
	s.httpSrv.ConnState, s.httpSrv.ConnContext = s.httpConns.connState, s.httpConns.connContext
	s.bg.Go(func() {
		if err := s.meshSrv.Serve(s.meshLn); err != nil {
			s.log.Error("mesh listener stopped", "err", err)
		}
	})
	s.bg.Go(func() {
		// A handoff closes the listener (httpConns.freeze) before the server.
		if err := s.httpSrv.Serve(s.cfg.HTTP.Listener(s.httpConns)); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.log.Error("http listener stopped", "err", err)
		}
	})
	s.startGRPC()
	s.bg.Go(s.retryLoop)
	s.startProbes()
	if inh := s.cfg.Inherit; inh != nil {
		for _, cs := range inh.Conns {
			if !s.meshSrv.Go(func(ctx context.Context) { s.adopt(ctx, cs) }) {
				_ = cs.File.Close()
			}
		}
		s.log.Info("adopted connections from the previous process", "connections", len(inh.Conns))
	}
	grpcAddr := "off"
	if a := s.GRPCAddr(); a != nil {
		grpcAddr = a.String()
	}
	s.log.Info("msgmesh started", "mesh", s.MeshAddr(), "http", s.httpLn.Addr().String(), "grpc", grpcAddr,
		"registrations", len(s.snap.Load().consume)+len(s.snap.Load().produce))
	return nil
}

// closeUnserved closes what Prepare opened when Serve did not take it
// over: the listeners and the predecessor's connections.
func (s *Sidecar) closeUnserved() {
	if !s.prepared || s.served {
		return
	}
	for _, ln := range []net.Listener{s.meshLn, s.httpLn, s.grpcLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	if inh := s.cfg.Inherit; inh != nil {
		for _, cs := range inh.Conns {
			_ = cs.File.Close()
		}
	}
	s.removeMeshSocket()
	s.httpConns.discard()
}

// listen opens the listeners, or adopts the inherited ones.
func (s *Sidecar) listen() error {
	if inh := s.cfg.Inherit; inh != nil {
		var err error
		if s.meshLn, err = s.adoptMesh(inh.Mesh); err != nil {
			return fmt.Errorf("msgmesh: adopting the mesh listener: %w", err)
		}
		if s.httpLn, err = net.FileListener(inh.HTTP); err != nil {
			_ = s.meshLn.Close()
			return fmt.Errorf("msgmesh: adopting the http listener: %w", err)
		}
		_ = inh.Mesh.Close()
		_ = inh.HTTP.Close()
		return s.listenGRPC()
	}
	var err error
	if s.meshLn, err = s.listenMesh(); err != nil {
		return fmt.Errorf("msgmesh: mesh listener: %w", err)
	}
	if s.httpLn, err = net.Listen("tcp", s.cfg.HTTPListen); err != nil {
		_ = s.meshLn.Close()
		s.removeMeshSocket()
		return fmt.Errorf("msgmesh: http listener: %w", err)
	}
	return s.listenGRPC()
}

// listenGRPC opens the gRPC listener, or adopts the inherited one; with
// Config.GRPCListen empty an inherited one is closed. On error it closes
// the other listeners.
func (s *Sidecar) listenGRPC() error {
	var inherited *os.File
	if inh := s.cfg.Inherit; inh != nil {
		inherited = inh.GRPC
	}
	var err error
	switch {
	case s.cfg.GRPCListen == "":
		if inherited != nil {
			_ = inherited.Close() // the predecessor served gRPC; this one does not
		}
		return nil
	case inherited != nil:
		s.grpcLn, err = net.FileListener(inherited)
		_ = inherited.Close()
	default:
		s.grpcLn, err = net.Listen("tcp", s.cfg.GRPCListen)
	}
	if err != nil {
		_ = s.meshLn.Close()
		_ = s.httpLn.Close()
		s.removeMeshSocket() // one this sidecar bound; an adopted one stays
		return fmt.Errorf("msgmesh: grpc listener: %w", err)
	}
	return nil
}

// Addr is the mesh listener's address (useful with port 0).
func (s *Sidecar) Addr() net.Addr { return s.meshLn.Addr() }

// HTTPAddr is the HTTP API's address.
func (s *Sidecar) HTTPAddr() net.Addr { return s.httpLn.Addr() }

// Shutdown stops the sidecar gracefully:
//  1. stop accepting connections; refuse new publishes, registrations and
//     pulls (HTTP ones answered 503 SHUTTING_DOWN), and answer pending HTTP
//     pulls with what they hold;
//  2. stop every upstream consumer (prefetched messages go back to the broker);
//  3. finish the publishes already read, and wait for apps to answer the
//     deliveries they hold; the HTTP API still takes acks and nacks of
//     HTTP-pulled deliveries meanwhile;
//  4. when all is settled or ctx ends, stop the HTTP API, hand unanswered
//     deliveries back to the broker, close every connection, and close the
//     store.
//
// It is safe to call more than once; later calls return the first result.
func (s *Sidecar) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() { s.shutdownErr = s.shutdown(ctx) })
	return s.shutdownErr
}

func (s *Sidecar) shutdown(ctx context.Context) error {
	s.log.Info("msgmesh shutting down")
	s.draining.Store(true)
	s.closeUnserved()
	s.meshSrv.Close()
	if s.served {
		s.removeMeshSocket() // new apps find no socket rather than one nobody accepts on
	}
	s.grpcNotServing()
	s.grpcStopAccepting()
	s.detached.finishPulls()
	// Stop upstreams under reconcileMu so a concurrent reconcile cannot
	// start new ones; cancelling s.ctx first makes any retry loop give up.
	s.cancel()
	s.bg.Stop()
	s.reconcileMu.Lock()
	_ = eachUpstream(s.upstreams, func(u *upstream) error { u.stop(ctx); return nil })
	clear(s.upstreams)
	clear(s.failed)
	s.publishUpstreamsLocked(nil)
	s.reconcileMu.Unlock()

	// Wait for apps to settle what they hold, then close what is left
	// (closing flushes each connection's writer: not under sessMu).
	s.waitSettled(ctx) // push subscriptions keep answering what their sessions hold
	s.push.stop(ctx)
	if s.httpSrv != nil {
		_ = s.httpSrv.Shutdown(ctx) // no long poll is left to wait for
	}
	if s.httpConns != nil {
		s.httpConns.discard()
	}
	s.detached.stopAll() // Subscribe streams end UNAVAILABLE
	s.stopGRPC(ctx)
	for _, ss := range s.sessionsNow() {
		ss.close(errors.New("sidecar shutting down"))
	}
	err := s.meshSrv.Shutdown(ctx)
	s.sessWG.Wait()
	s.bg.Wait()
	s.deadLetters.Stop() // each ends within PublishTimeout
	s.deadLetters.Wait()
	s.stopHealth()
	if cerr := s.store.Close(); cerr != nil && err == nil {
		err = cerr
	}
	s.log.Info("msgmesh stopped")
	return err
}

// sessionsNow lists the open sessions. Callers act on them after sessMu
// is released, so that nothing that writes to a connection or takes a
// route's or a pull's lock runs under sessMu. A session that starts after
// the listing is not in it: shutdown refuses new sessions first
// (draining), and in a handoff a later session finishes its own pulls
// when it freezes (freezeCleanup).
func (s *Sidecar) sessionsNow() []*session {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	return slices.Collect(maps.Keys(s.sessions))
}

// waitSettled polls until no session holds deliveries or publishes in
// flight, or ctx ends.
func (s *Sidecar) waitSettled(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		busy := false
		s.sessMu.Lock()
		for ss := range s.sessions {
			if ss.busy() {
				busy = true
				break
			}
		}
		s.sessMu.Unlock()
		if !busy && s.detached.inflight() == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// metrics returns the sidecar's instruments; nil (valid and inert) without
// telemetry.
func (s *Sidecar) metrics() *observe.Metrics {
	if s.cfg.Telemetry == nil {
		return nil
	}
	return s.cfg.Telemetry.Metrics
}

// countSessions reports connected apps; sessMu held.
func (s *Sidecar) countSessions() {
	s.metrics().ConnectedApps(len(s.sessions))
}
