package ctrlplane

import (
	"strings"
	"sync"

	"github.com/msgmesh/msgmesh/ctrlplane/store"
)

// hub wakes the long polls whose config may have changed. A long poll
// takes the current channels with wait, then reads the config, then waits
// for a channel to close: a change after the read closes a channel it
// holds, so none is missed. Each change closes and forgets the channel of
// its app (or the channel of every app, for the global topology, the
// schemas or a watch Reset); the next wait makes a new one. The hub does
// no I/O and its lock is a leaf: nothing else is locked while it is held.
type hub struct {
	mu   sync.Mutex
	apps map[string]chan struct{} // app name → closed when the app changes
	all  chan struct{}            // closed when every app may have changed
}

func newHub() *hub {
	return &hub{apps: map[string]chan struct{}{}, all: make(chan struct{})}
}

// wait returns the channels that close on the next change of app and on
// the next change of every app.
func (h *hub) wait(app string) (appCh, allCh <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.apps[app]
	if !ok {
		ch = make(chan struct{})
		h.apps[app] = ch
	}
	return ch, h.all
}

func (h *hub) changed(app string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch, ok := h.apps[app]; ok {
		close(ch)
		delete(h.apps, app)
	}
}

func (h *hub) changedAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.all)
	h.all = make(chan struct{})
}

// run feeds the hub from a store watch until the watch ends. The watch
// sees the writes of every replica sharing the store.
func (h *hub) run(events <-chan store.Event) {
	for ev := range events {
		switch {
		case ev.Reset, ev.Key == topologyKey, ev.Key == schemasKey:
			h.changedAll()
		case strings.HasPrefix(ev.Key, appPrefix):
			h.changed(strings.TrimPrefix(ev.Key, appPrefix))
		}
	}
	// The watch is over (the server is stopping, or the store closed):
	// wake every waiter so that it reads again.
	h.changedAll()
}
