package ctrlclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/internal/atomicfile"
)

// Watch defaults.
const (
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second
)

// WatchOption configures a Watcher.
type WatchOption interface{ applyWatch(*watchOptions) }

type watchOptions struct {
	stateFile  string
	backoffMin time.Duration
	backoffMax time.Duration
	wait       time.Duration
	log        *slog.Logger
}

type watchOptionFunc func(*watchOptions)

func (f watchOptionFunc) applyWatch(o *watchOptions) { f(o) }

// WithStateFile makes the Watcher write every config it receives to path
// (atomically, mode 0600: it holds the app's credential) before handing
// it to onChange, and start from the config in that file. The directory
// must exist. Default: no file.
func WithStateFile(path string) WatchOption {
	return watchOptionFunc(func(o *watchOptions) { o.stateFile = path })
}

// WithBackoff sets the delays between failed polls: the n-th failure in a
// row waits a random time between d/2 and d, with d = lo·2ⁿ⁻¹ capped at
// hi. Defaults DefaultBackoffMin and DefaultBackoffMax.
func WithBackoff(lo, hi time.Duration) WatchOption {
	return watchOptionFunc(func(o *watchOptions) { o.backoffMin, o.backoffMax = lo, hi })
}

// WithWait sets how long each long poll asks the control plane to wait
// for a change. Default 0: the server's default (30 s).
func WithWait(d time.Duration) WatchOption {
	return watchOptionFunc(func(o *watchOptions) { o.wait = d })
}

// WithLogger sets where the Watcher logs failed polls (Warn) and configs
// it receives (Info). Default: discard.
func WithLogger(l *slog.Logger) WatchOption {
	return watchOptionFunc(func(o *watchOptions) { o.log = l })
}

// Watcher keeps one app's config current; see Client.Watch.
type Watcher struct {
	c        *Client
	app      string
	onChange func(api.AppConfig)
	o        watchOptions

	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once

	mu     sync.Mutex // guards last, have and status
	last   api.AppConfig
	have   bool
	status WatchStatus
}

// WatchStatus is a Watcher's view of its connection.
type WatchStatus struct {
	// Version is the version of the newest config (0: none yet).
	Version uint64
	// Connected: the last poll was answered (200 or 304).
	Connected bool
	// Failures counts polls failed in a row; LastError is the newest.
	Failures  int
	LastError error
}

// Watch starts watching app's config and returns at once. onChange gets
// configs one at a time, oldest first, never concurrently: if the state
// file (WithStateFile) holds a config of app, onChange gets it before
// Watch returns; then it gets every config whose version differs from the
// previous one, from the Watcher's goroutine. A slow onChange delays the
// next poll, nothing queues. onChange must not call Stop.
//
// The Watcher runs until Stop is called or ctx is done. A control plane
// that is down, unreachable, or refuses the credential never stops it: it
// retries with backoff (WithBackoff), and the last config stays in effect.
// Watch fails only for an invalid app name or options.
func (c *Client) Watch(ctx context.Context, app string, onChange func(api.AppConfig), opts ...WatchOption) (*Watcher, error) {
	if err := api.ValidateAppName(app); err != nil {
		return nil, fmt.Errorf("ctrlclient: watch: %w", err)
	}
	if onChange == nil {
		return nil, errors.New("ctrlclient: watch: onChange is nil")
	}
	o := watchOptions{backoffMin: DefaultBackoffMin, backoffMax: DefaultBackoffMax}
	for _, opt := range opts {
		opt.applyWatch(&o)
	}
	if o.backoffMin <= 0 || o.backoffMax < o.backoffMin {
		return nil, fmt.Errorf("ctrlclient: watch: backoff %v..%v: need 0 < min <= max", o.backoffMin, o.backoffMax)
	}
	if o.wait < 0 || o.wait > api.MaxWait {
		return nil, fmt.Errorf("ctrlclient: watch: wait %v is outside 0..%v", o.wait, api.MaxWait)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{c: c, app: app, onChange: onChange, o: o, done: make(chan struct{})}
	if o.stateFile != "" {
		switch cfg, err := LoadLast(o.stateFile); {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			o.log.Warn("ignoring the saved control-plane config", "path", o.stateFile, "err", err)
		case cfg.App != app:
			o.log.Warn("ignoring the saved control-plane config: it is another app's", "path", o.stateFile, "saved_app", cfg.App, "app", app)
		default:
			w.last, w.have, w.status.Version = cfg, true, cfg.Version
			o.log.Info("loaded the saved control-plane config", "app", app, "version", cfg.Version)
			onChange(cfg)
		}
	}
	ctx, w.cancel = context.WithCancel(ctx)
	go func() {
		defer close(w.done)
		w.run(ctx)
	}()
	return w, nil
}

// Stop stops the Watcher and waits for its goroutine. Safe to call more
// than once, and after the context ended it.
func (w *Watcher) Stop() {
	w.stopOnce.Do(w.cancel)
	<-w.done
}

// Done is closed when the Watcher's goroutine has returned.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Last returns the newest config the Watcher has, and false if it has
// none yet.
func (w *Watcher) Last() (api.AppConfig, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last, w.have
}

// Status returns the Watcher's connection status.
func (w *Watcher) Status() WatchStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

func (w *Watcher) run(ctx context.Context) {
	// Credentials to try, best first: the newest config's, then New's.
	useConfigCred := true
	failures := 0
	for ctx.Err() == nil {
		w.mu.Lock()
		last, have := w.last, w.have
		w.mu.Unlock()
		token := w.c.token
		if useConfigCred && have && last.Credential != "" {
			token = last.Credential
		}
		after := uint64(0)
		if have {
			after = last.Version
		}
		cfg, changed, err := w.c.poll(ctx, w.app, after, w.o.wait, token)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrForbidden) {
				useConfigCred = !useConfigCred // try the other credential
			}
			w.mu.Lock()
			w.status.Connected, w.status.Failures, w.status.LastError = false, failures, err
			w.mu.Unlock()
			d := backoff(w.o.backoffMin, w.o.backoffMax, failures)
			w.o.log.Warn("control-plane config poll failed; keeping the last config", "app", w.app, "version", after, "failures", failures, "retry_in", d, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
			continue
		}
		failures = 0
		w.mu.Lock()
		w.status.Connected, w.status.Failures, w.status.LastError = true, 0, nil
		w.mu.Unlock()
		if !changed || (have && cfg.Version == last.Version) {
			continue
		}
		if cfg.Credential != last.Credential {
			useConfigCred = true
		}
		if w.o.stateFile != "" {
			if err := SaveLast(w.o.stateFile, cfg); err != nil {
				w.o.log.Error("saving the control-plane config", "path", w.o.stateFile, "err", err)
			}
		}
		w.mu.Lock()
		w.last, w.have, w.status.Version = cfg, true, cfg.Version
		w.mu.Unlock()
		w.o.log.Info("control-plane config", "app", w.app, "version", cfg.Version, "instances", len(cfg.Instances))
		w.onChange(cfg)
	}
}

// backoff returns the delay after the n-th failure in a row (n >= 1):
// uniformly random in [d/2, d], d = lo·2ⁿ⁻¹ capped at hi.
func backoff(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	half := d / 2
	return half + rand.N(d-half+1)
}

// SaveLast writes cfg to path atomically: a temporary file in the same
// directory, written, fsynced and renamed over path, then the directory
// fsynced. The file is mode 0600 (it holds the app's credential).
func SaveLast(path string, cfg api.AppConfig) error {
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, append(data, '\n')); err != nil {
		return fmt.Errorf("ctrlclient: save config to %q: %w", path, err)
	}
	return nil
}

// LoadLast reads a config written by SaveLast (a Watcher's state file).
// A missing file is an error wrapping os.ErrNotExist.
func LoadLast(path string) (api.AppConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return api.AppConfig{}, fmt.Errorf("ctrlclient: load config: %w", err)
	}
	var cfg api.AppConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return api.AppConfig{}, fmt.Errorf("ctrlclient: load config from %q: %w", path, err)
	}
	if err := api.ValidateAppName(cfg.App); err != nil {
		return api.AppConfig{}, fmt.Errorf("ctrlclient: load config from %q: %w", path, err)
	}
	return cfg, nil
}
