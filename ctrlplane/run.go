package ctrlplane

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/schema"
)

// Defaults of the ctrlplane command.
const (
	DefaultListen  = "127.0.0.1:7700"
	DefaultDataDir = "./ctrl-data"
	// TokenEnv is read when neither --token nor --token-file is given.
	TokenEnv = api.TokenEnv
	// SealKeyEnv is read when --seal-key-file is not given.
	SealKeyEnv = "MSGMESH_CTRLPLANE_SEAL_KEY"
	// SchemaFile is the schema registry's bbolt file in the data
	// directory. It is there with every --store: the registry is each
	// replica's own (docs/ctrlplane.md).
	SchemaFile = "schemas.db"
	// shutdownTimeout bounds the graceful part of a shutdown.
	shutdownTimeout = 10 * time.Second
)

// Run is the ctrlplane command: it parses args (without the program name),
// opens the store, serves until ctx is done (cmd/ctrlplane cancels it on
// SIGINT and SIGTERM), then shuts down gracefully. Logs go to stderr.
// "--help" returns flag.ErrHelp.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	return run(ctx, args, stderr, nil)
}

// run is Run; ready, if not nil, gets the listening address once the
// server accepts connections.
func run(ctx context.Context, args []string, stderr io.Writer, ready func(addr string)) error {
	fs := flag.NewFlagSet("ctrlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", DefaultListen, "host:port of the HTTP API and the web page (/ui/)")
	dataDir := fs.String("data-dir", DefaultDataDir, "directory of the embedded store (bbolt file "+store.BoltFile+") and of the schema registry ("+SchemaFile+", with every --store)")
	storeSpec := fs.String("store", "", "state store: empty for the embedded store in --data-dir, or etcd://host:port[,host:port...][/prefix] to share state between replicas")
	token := fs.String("token", "", "operator token, at least 16 bytes; visible to every local user in ps, so prefer $"+TokenEnv+" or --token-file")
	tokenFile := fs.String("token-file", "", "file whose first line is the operator token (default $"+TokenEnv+")")
	sealKeyFile := fs.String("seal-key-file", "", "file whose first line is the seal key, at least 32 bytes, that encrypts the forwarding CA's private key in the store (default $"+SealKeyEnv+"; none: stored in clear)")
	insecure := fs.Bool("insecure-no-auth", false, "serve without any authentication: for a throwaway local setup only")
	wait := fs.Duration("long-poll", api.DefaultWait, "how long a sidecar's config long poll is held open")
	grace := fs.Duration("rotation-grace", DefaultRotationGrace, "how long an app's previous credential stays valid after a rotation")
	leaseTTL := fs.Duration("lease-ttl", DefaultLeaseTTL, "how long a sidecar's self-registration keeps its instance online without a renewal (sidecars renew every third of it); past it the instance is offline and its siblings stop forwarding to it")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	httpLim := DefaultHTTPLimits()
	httpLim.Flags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: ctrlplane [flags]\n\nThe msgmesh control plane: apps, instances, weights and broker topology for sidecars (docs/ctrlplane.md).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", *logLevel, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if !*insecure || *tokenFile != "" {
		tok, warnings, err := api.LoadToken(*token, *tokenFile)
		if err != nil {
			return err
		}
		for _, w := range warnings {
			log.Warn(w)
		}
		*token = tok
	}
	sealKey, warnings, err := api.LoadSecret(api.Secret{FileFlag: "--seal-key-file", File: *sealKeyFile, Env: SealKeyEnv})
	if err != nil {
		return err
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	if sealKey == "" {
		log.Warn("no seal key: the forwarding CA's private key is kept in the store unencrypted; set $" + SealKeyEnv + " or --seal-key-file (docs/ctrlplane.md, \"Secrets at rest\")")
	}

	if *storeSpec == "" || *storeSpec == "bolt" {
		// Before serving: clear-text credentials of an older version are
		// hashed, the CA key sealed if it is not, and the file compacted
		// so the clear values are gone from it.
		if err := secureBolt(ctx, *dataDir, sealKey, log); err != nil {
			return err
		}
	}
	st, err := store.Open(ctx, *storeSpec, *dataDir, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("closing the store", "err", err)
		}
	}()
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return err
	}
	schemas, err := schema.OpenBoltStore(filepath.Join(*dataDir, SchemaFile))
	if err != nil {
		return err
	}
	defer func() {
		if err := schemas.Close(); err != nil {
			log.Error("closing the schema store", "err", err)
		}
	}()
	srv, err := New(Options{
		Store:          st,
		SchemaStore:    schemas,
		SealKey:        sealKey,
		Token:          *token,
		InsecureNoAuth: *insecure,
		Log:            log,
		LongPollWait:   *wait,
		RotationGrace:  *grace,
		LeaseTTL:       *leaseTTL,
		HTTP:           httpLim,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		srv.Close()
		return err
	}
	where := *dataDir
	if *storeSpec != "" {
		where = *storeSpec
	}
	log.Info("control plane starting", "listen", ln.Addr().String(), "store", where, "ui", "http://"+ln.Addr().String()+"/ui/")
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if ready != nil {
		ready(ln.Addr().String())
	}
	select {
	case err = <-served:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	log.Info("control plane shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-served; serr != nil && !errors.Is(serr, ErrShuttingDown) {
		err = errors.Join(err, serr)
	}
	return err
}
