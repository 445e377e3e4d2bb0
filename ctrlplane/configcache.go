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
// channels when there is one.
func (s *Server) cachedAppConfig(ctx context.Context, app string, who principal, appCh, allCh <-chan struct{}) (api.AppConfig, error) {
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
			return api.AppConfig{}, ctx.Err()
		}
		if rd.err == nil {
			return s.withCredentials(rd, who)
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
		return api.AppConfig{}, rd.err
	}
	return s.withCredentials(rd, who)
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
