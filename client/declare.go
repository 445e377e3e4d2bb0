package client

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// subKey names one declared (group, topic).
type subKey struct{ group, topic string }

// declEntry is one declared pair: its mode and, in push mode, the
// subscription its deliveries go to.
type declEntry struct {
	mode mesh.Mode
	sub  *Subscription
}

// declSet is a connection's whole subscription set. A declSet that has
// been committed is never modified: changes work on a clone.
type declSet map[subKey]declEntry

// wire returns the DECLARE payload, sorted so the same set always encodes
// the same way.
func (s declSet) wire() *mesh.Declare {
	d := &mesh.Declare{Subs: make([]mesh.Subscription, 0, len(s))}
	for k, e := range s {
		d.Subs = append(d.Subs, mesh.Subscription{Group: k.group, Topic: k.topic, Mode: e.mode})
	}
	slices.SortFunc(d.Subs, func(a, b mesh.Subscription) int {
		return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.Topic, b.Topic))
	})
	return d
}

// commit makes next the declared set. declMu must be held (or the Client
// not yet shared).
func (c *Client) commit(next declSet) {
	c.decl = next
	c.routes.Store(&next)
}

// addDecl adds (k, e) to the declared set: it waits for a connection,
// sends the whole new set, and commits it when the sidecar answers OK. If
// the connection drops meanwhile it tries again on the next one. A pair
// already declared in the same mode is a no-op for pull and an error for
// push.
func (c *Client) addDecl(ctx context.Context, k subKey, e declEntry) error {
	for {
		cn, err := c.current(ctx)
		if err != nil {
			return err
		}
		c.declMu.Lock()
		if cn.Closed() {
			// fail detached it before marking it dead, so current will
			// not return it again.
			c.declMu.Unlock()
			continue
		}
		if old, ok := c.decl[k]; ok {
			c.declMu.Unlock()
			switch {
			case old.mode != e.mode:
				return errModeClashes
			case e.mode == mesh.ModePush:
				return errSubscribed
			}
			return nil
		}
		next := maps.Clone(c.decl)
		next[k] = e
		// Route by the new set already: the sidecar may push deliveries
		// for k right behind its OK, before this goroutine sees the OK. If
		// the sidecar refuses the set it sends none.
		c.routes.Store(&next)
		err = c.declareOn(ctx, cn, next)
		if err == nil {
			c.commit(next)
		} else {
			cur := c.decl
			c.routes.Store(&cur)
		}
		c.declMu.Unlock()
		if errors.Is(err, ErrConnectionLost) && ctx.Err() == nil {
			continue
		}
		return err
	}
}

// removeDecl removes k from the declared set if it belongs to sub. It is
// committed locally whatever the sidecar answers (nobody will take those
// deliveries any more, and a reconnect must not declare the pair again);
// the answer is still returned. Without a connection there is nothing to
// send: the next connection declares the smaller set.
func (c *Client) removeDecl(ctx context.Context, k subKey, sub *Subscription) error {
	c.declMu.Lock()
	defer c.declMu.Unlock()
	if c.decl[k].sub != sub {
		return nil
	}
	next := maps.Clone(c.decl)
	delete(next, k)
	c.commit(next)
	cn := c.currentNow()
	if cn == nil {
		return nil
	}
	err := c.declareOn(ctx, cn, next)
	if errors.Is(err, ErrConnectionLost) || errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// declareOn sends set as a DECLARE on cn and waits for the answer. declMu
// must be held. If ctx ends first, the sidecar may still apply set; then
// the committed set is declared again once that answer arrives, so the
// two sides agree.
func (c *Client) declareOn(ctx context.Context, cn *conn, set declSet) error {
	_, ch, err := cn.Start(mesh.KindDeclare, set.wire())
	if err != nil {
		return err
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return r.Err
		}
		return answerErr(r.Val, mesh.KindOK)
	case <-ctx.Done():
	}
	// Keep waiting in the background. The answer is bounded by the
	// connection's life: its loss or Close resolves ch.
	c.routines.Go(func() {
		r := <-ch
		if r.Err != nil || r.Val.Kind != mesh.KindOK {
			return
		}
		c.declMu.Lock()
		defer c.declMu.Unlock()
		if !cn.Closed() && !maps.EqualFunc(c.decl, set, func(a, b declEntry) bool { return a.mode == b.mode }) {
			if err := c.declareOn(c.ctx, cn, c.decl); err != nil {
				c.log.Warn("msgmesh: re-declaring the subscription set failed", "err", err)
			}
		}
	})
	return ctx.Err()
}
