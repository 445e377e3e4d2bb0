package ctrlplane

import (
	"context"
	"sync"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
)

// configCache shares one store read of an app's config among the long
// polls that a change wakes at once. Without it, a weight change read the
// store three times per watching sidecar (on etcd, 3,000 round trips for
// 1,000 sidecars), then again when each came back to wait.
//
// A read is keyed by the hub channels that were current when it started
// (hub.wait): while they are still current, no change reached the hub
// since then, so the read is as fresh as a new one would be, and a change
// after it closes those channels, which makes the next caller read again.
// This is the same guarantee the long poll loop relies on without the
// cache. Only the parts shared by every reader are cached; each request
// still checks its own credential against the cached app record
// (appRecord.credentialsFor).
//
// One case the key cannot cover: a write whose watch event has not reached
// the hub yet (the store's watch is asynchronous; on etcd it lags the
// write). A read shared under the old channels may predate that write, so
// a request that arrives after the write must not be *answered* with it:
// serveConfig reads afresh for a plain GET, and for a long poll's first
// read when the shared one would be the answer. Parking on a shared read
// is safe either way (the lagging event wakes the poll), and so is
// answering a woken poll with a read shared under the channels it took
// after waking.
type configCache struct {
	mu   sync.Mutex
	apps map[string]*configRead
}

// configRead is one read of an app's config; done is closed when cfg,
// rec and err are set, and they are not changed after.
type configRead struct {
	appCh, allCh <-chan struct{}
	done         chan struct{}
	cfg          api.AppConfig // without credential fields
	rec          appRecord
	err          error
}

// cachedAppConfig returns app's config for who, read under the hub channels appCh and
// allCh (just returned by hub.wait), sharing a read under the same
// channels when there is one, unless fresh asks for a read of its own.
// shared says whether the config comes from a read another request
// started.
func (s *Server) cachedAppConfig(ctx context.Context, app string, who principal, appCh, allCh <-chan struct{}, fresh bool) (cfg api.AppConfig, shared bool, err error) {
	if fresh {
		rd := &configRead{}
		if rd.cfg, rd.rec, rd.err = s.sharedAppConfig(ctx, app); rd.err != nil {
			return api.AppConfig{}, false, rd.err
		}
		cfg, err = s.withCredentials(rd, who)
		return cfg, false, err
	}
	c := &s.configs
	c.mu.Lock()
	if c.apps == nil {
		c.apps = make(map[string]*configRead)
	}
	rd, ok := c.apps[app]
	if ok && rd.appCh == appCh && rd.allCh == allCh {
		c.mu.Unlock()
		select {
		case <-rd.done:
		case <-ctx.Done():
			return api.AppConfig{}, false, ctx.Err()
		}
		if rd.err == nil {
			cfg, err = s.withCredentials(rd, who)
			return cfg, true, err
		}
		// The shared read failed (its request may have gone away):
		// read for this request alone.
		rd = &configRead{appCh: appCh, allCh: allCh, done: make(chan struct{})}
	} else {
		rd = &configRead{appCh: appCh, allCh: allCh, done: make(chan struct{})}
		c.apps[app] = rd
		c.mu.Unlock()
	}
	rd.cfg, rd.rec, rd.err = s.sharedAppConfig(ctx, app)
	close(rd.done)
	if rd.err != nil {
		return api.AppConfig{}, false, rd.err
	}
	cfg, err = s.withCredentials(rd, who)
	return cfg, false, err
}

// withCredentials is the shared read's config with the fields that depend
// on who asks. The shared parts are only read after the read is done, so
// a shallow copy is enough.
func (s *Server) withCredentials(rd *configRead, who principal) (api.AppConfig, error) {
	cfg := rd.cfg
	if err := rd.rec.credentialsFor(&cfg, who, s.now()); err != nil {
		return api.AppConfig{}, err
	}
	return cfg, nil
}

// forget drops the cached read of app (the app was deleted).
func (c *configCache) forget(app string) {
	c.mu.Lock()
	delete(c.apps, app)
	c.mu.Unlock()
}
