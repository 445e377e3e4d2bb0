package ctrlplane

import (
	"context"
	"errors"
	"fmt"
	"github.com/msgmesh/msgmesh/internal/pki"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/schema"
)

// DefaultHTTPLimits are the API's limits where Options.HTTP has zeros. The
// write timeout leaves room for the longest long poll (api.MaxWait); the
// connection bound is what the open-file limit leaves after 256 files for
// the stores, since every sidecar holds a connection for its long poll.
func DefaultHTTPLimits() core.HTTPLimits {
	conns, _, _ := core.FitFiles(defaultMaxConns, reservedFiles)
	return core.HTTPLimits{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      api.MaxWait + time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    core.DefaultMaxHeaderBytes,
		MaxConns:          conns,
	}
}

const (
	defaultMaxConns = 1 << 20 // bounded by the open-file limit first
	reservedFiles   = 256
)

// Defaults of Options.
const (
	DefaultRotationGrace = 10 * time.Minute
	DefaultStoreTimeout  = 10 * time.Second
	// MinTokenLen is the shortest operator token New accepts.
	MinTokenLen = 16
	// MinSealKeyLen is the shortest seal key New accepts.
	MinSealKeyLen = 32
)

// Options configure a Server. Store is required, and so is Token unless
// InsecureNoAuth is set.
type Options struct {
	// Store holds the state. The caller opens it and closes it after
	// Shutdown.
	Store store.Store
	// Token is the operator token: every API call but a sidecar's read of
	// its own app's config needs it as "Authorization: Bearer TOKEN". At
	// least MinTokenLen bytes.
	Token string
	// SealKey, when set, encrypts the forwarding CA's private key in the
	// store (AES-256-GCM under a key derived from it with HKDF-SHA256): a
	// copy of the store alone does not give the key. At least
	// MinSealKeyLen bytes; every replica sharing a store needs the same.
	// A key the store holds in clear is sealed when New starts; a sealed
	// one that does not open with SealKey (or without one) makes New fail
	// with ErrSealKey.
	SealKey string
	// InsecureNoAuth lets every request through without a credential. For
	// a throwaway local setup only; New logs a warning.
	InsecureNoAuth bool
	// Log gets the server's logs; every write is logged at Info. Default:
	// discard.
	Log *slog.Logger
	// LongPollWait is how long a config long poll is held open when the
	// request does not say (api.DefaultWait if zero).
	LongPollWait time.Duration
	// RotationGrace is how long an app's previous credential stays valid
	// after a rotation that does not say (DefaultRotationGrace if zero).
	RotationGrace time.Duration
	// StoreTimeout bounds each request's store operations
	// (DefaultStoreTimeout if zero); past it the answer is 503
	// UNAVAILABLE.
	StoreTimeout time.Duration
	// Now is the clock (time.Now if nil); tests move it to expire
	// credentials and instance leases.
	Now func() time.Time
	// LeaseTTL is how long a sidecar's registration or lease renewal
	// keeps its instance online (DefaultLeaseTTL if zero; at least
	// MinLeaseTTL); sidecars renew every third of it. Past it without a
	// renewal the instance is marked offline and its siblings stop
	// forwarding to it (leases.go).
	LeaseTTL time.Duration
	// LeaseSweep is how often lapsed leases are looked for (LeaseTTL/5 if
	// zero): an instance goes offline at most LeaseSweep after its lease
	// lapsed. Tests that move Now shorten it.
	LeaseSweep time.Duration
	// HTTP bounds the API's clients: timeouts, header size and connections
	// at once. Zero fields: DefaultHTTPLimits.
	HTTP core.HTTPLimits
	// SchemaStore holds the schema registry (docs/schemas.md); Run opens
	// schema.OpenBoltStore(--data-dir/SchemaFile). The caller opens it and
	// closes it after Shutdown. Nil: a schema.MemoryStore, whose schemas
	// are gone when the Server is. The registry is this Server's own, even
	// when Store is shared with other replicas (docs/ctrlplane.md).
	SchemaStore schema.Store
}

// Server is the control plane's HTTP API over a Store. Several Servers
// (in several processes) may share one etcd-backed Store: each sees the
// others' writes through the store's watch.
type Server struct {
	opts  Options
	store store.Store
	log   *slog.Logger
	hub   *hub
	// configs shares config reads between the long polls a change wakes.
	configs configCache
	traffic *trafficBook // the sidecars' traffic reports, in memory (traffic.go)

	ctx      context.Context // cancelled by Shutdown: stops the store watch
	cancel   context.CancelFunc
	routines core.Routines
	stopping chan struct{} // closed by Shutdown: long polls answer 503
	started  time.Time     // by opts.Now: no lease is judged in the first LeaseTTL
	parked   atomic.Int64  // long polls waiting for a change
	sweeps   atomic.Uint64 // lease sweeps done (export_test.go)

	caMu   sync.Mutex // guards ca
	ca     *pki.CA    // the forwarding CA, loaded at New or created on first use
	sealer *sealer    // seals the CA key at rest; nil: stored in clear

	schemas     *schema.Registry // the schema registry (schemas.go)
	bumpPending atomic.Bool      // a registry change whose push failed: retried by the next registry request

	mu       sync.Mutex // guards servers and stopped
	servers  []*http.Server
	stopped  bool
	stopOnce sync.Once
	stopErr  error
}

// New checks opts and starts watching the store. The Server serves once
// Serve is called, or through Handler.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("ctrlplane: Options.Store is required")
	}
	switch {
	case opts.InsecureNoAuth && opts.Token != "":
		return nil, errors.New("ctrlplane: an operator token and InsecureNoAuth exclude each other")
	case !opts.InsecureNoAuth && opts.Token == "":
		return nil, errors.New("ctrlplane: no operator token: set MSGMESH_CTRLPLANE_TOKEN or pass --token-file (--insecure-no-auth turns authentication off for a local test setup)")
	case !opts.InsecureNoAuth && len(opts.Token) < MinTokenLen:
		return nil, fmt.Errorf("ctrlplane: the operator token is %d bytes; use at least %d random bytes", len(opts.Token), MinTokenLen)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.LongPollWait <= 0 {
		opts.LongPollWait = api.DefaultWait
	}
	if opts.RotationGrace <= 0 {
		opts.RotationGrace = DefaultRotationGrace
	}
	if opts.StoreTimeout <= 0 {
		opts.StoreTimeout = DefaultStoreTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	switch {
	case opts.LeaseTTL == 0:
		opts.LeaseTTL = DefaultLeaseTTL
	case opts.LeaseTTL < MinLeaseTTL:
		return nil, fmt.Errorf("ctrlplane: the lease TTL %s is shorter than %s", opts.LeaseTTL, MinLeaseTTL)
	}
	if opts.LeaseSweep <= 0 {
		opts.LeaseSweep = opts.LeaseTTL / 5
	}
	if opts.SchemaStore == nil {
		opts.SchemaStore = schema.NewMemoryStore()
	}
	opts.HTTP = opts.HTTP.Or(DefaultHTTPLimits())
	if err := opts.HTTP.Validate(); err != nil {
		return nil, fmt.Errorf("ctrlplane: %w", err)
	}
	if opts.HTTP.WriteTimeout <= api.MaxWait {
		return nil, fmt.Errorf("ctrlplane: the HTTP write timeout (%s) must exceed the longest long poll (%s)", opts.HTTP.WriteTimeout, api.MaxWait)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:     opts,
		store:    opts.Store,
		log:      opts.Log,
		hub:      newHub(),
		traffic:  newTrafficBook(),
		ctx:      ctx,
		cancel:   cancel,
		stopping: make(chan struct{}),
		started:  opts.Now(),
	}
	lctx, lcancel := context.WithTimeout(ctx, opts.StoreTimeout)
	var err error
	s.schemas, err = schema.New(lctx, opts.SchemaStore, schema.RegistryOptions{OnChange: s.schemasChanged})
	lcancel()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("ctrlplane: loading the schema registry: %w", err)
	}
	if opts.SealKey != "" {
		if s.sealer, err = newSealer(opts.SealKey); err != nil {
			cancel()
			return nil, err
		}
	}
	mctx, mcancel := context.WithTimeout(ctx, opts.StoreTimeout)
	_, err = s.secureStore(mctx)
	mcancel()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("ctrlplane: %w", err)
	}
	events, err := s.store.Watch(ctx, "")
	if err != nil {
		cancel()
		return nil, fmt.Errorf("ctrlplane: watching the store: %w", err)
	}
	s.routines.Go(func() { s.hub.run(events) })
	s.routines.Go(s.runSweeper)
	if opts.InsecureNoAuth {
		s.log.Warn("AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach this control plane can change weights, rotate any app's credential and steer every sidecar's traffic; use it for a local test setup only")
	}
	return s, nil
}

func (s *Server) now() time.Time { return s.opts.Now() }

// Serve accepts connections on ln until Shutdown. It returns nil after
// Shutdown, or the error that stopped it.
func (s *Server) Serve(ln net.Listener) error {
	hs := s.opts.HTTP.Server(s.Handler())
	hs.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	hs.BaseContext = func(net.Listener) context.Context { return s.ctx }
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrShuttingDown
	}
	s.servers = append(s.servers, hs)
	s.mu.Unlock()
	s.log.Info("control plane listening", "addr", ln.Addr().String())
	if err := hs.Serve(s.opts.HTTP.Listener(ln)); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the Server: long polls answer 503 SHUTTING_DOWN at once
// (their sidecars reconnect, to another replica if there is one), other
// requests in flight finish until ctx is done, listeners close, and the
// store watch stops. It waits for every goroutine it owns. Safe to call
// more than once; every call returns the first one's result. It does not
// close the Store.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		close(s.stopping)
		s.mu.Lock()
		s.stopped = true
		servers := s.servers
		s.mu.Unlock()
		for _, hs := range servers {
			if err := hs.Shutdown(ctx); err != nil {
				_ = hs.Close()
				s.stopErr = errors.Join(s.stopErr, err)
			}
		}
		s.routines.Stop()
		s.cancel()
		s.routines.Wait()
	})
	return s.stopErr
}

// Close is Shutdown without waiting for requests in flight.
func (s *Server) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.Shutdown(ctx)
}
