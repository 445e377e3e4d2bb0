package rmqtest

import (
	"sort"
	"sync"
	"time"
)

// member is one client of a consumer group, known from its heartbeats.
type member struct {
	conn     *conn
	lastSeen time.Time
}

// groups is consumer group membership (ConsumerManager): group → client id
// → member. A member leaves when its connection closes, when it sends
// UNREGISTER_CLIENT, when a heartbeat of its client no longer lists the
// group, or when it has not sent a heartbeat for Config.ClientTimeout.
// Each change is announced to the group's remaining members with
// NOTIFY_CONSUMER_IDS_CHANGED, which makes their clients rebalance at once.
//
// Locking: mu is a leaf lock. Notifications are sent after it is released.
type groups struct {
	mu     sync.Mutex
	byName map[string]map[string]*member
}

func newGroups() *groups {
	return &groups{byName: make(map[string]map[string]*member)}
}

// heartbeat records that clientID on c is a member of exactly the groups
// in names (a heartbeat lists all groups of its client). It returns the
// groups whose membership changed.
func (g *groups) heartbeat(c *conn, clientID string, names []string, now time.Time) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var changed []string
	in := make(map[string]bool, len(names))
	for _, name := range names {
		in[name] = true
		ms := g.byName[name]
		if ms == nil {
			ms = make(map[string]*member)
			g.byName[name] = ms
		}
		m := ms[clientID]
		if m == nil || m.conn != c {
			changed = append(changed, name)
			m = &member{conn: c}
			ms[clientID] = m
		}
		m.lastSeen = now
	}
	for name, ms := range g.byName {
		if m := ms[clientID]; m != nil && !in[name] && m.conn == c {
			delete(ms, clientID)
			changed = append(changed, name)
		}
	}
	return changed
}

// remove removes clientID from group and reports whether it was a member.
func (g *groups) remove(group, clientID string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.byName[group][clientID]; !ok {
		return false
	}
	delete(g.byName[group], clientID)
	return true
}

// removeConn removes every member that registered on c and returns the
// groups that changed.
func (g *groups) removeConn(c *conn) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var changed []string
	for name, ms := range g.byName {
		for id, m := range ms {
			if m.conn == c {
				delete(ms, id)
				changed = append(changed, name)
			}
		}
	}
	return changed
}

// expire removes members not seen since before and returns the groups
// that changed.
func (g *groups) expire(before time.Time) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var changed []string
	for name, ms := range g.byName {
		n := len(ms)
		for id, m := range ms {
			if m.lastSeen.Before(before) {
				delete(ms, id)
			}
		}
		if len(ms) != n {
			changed = append(changed, name)
		}
	}
	return changed
}

// clientIDs lists the group's members, sorted.
func (g *groups) clientIDs(group string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ids := make([]string, 0, len(g.byName[group]))
	for id := range g.byName[group] {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// conns lists the distinct connections of the group's members.
func (g *groups) conns(group string) []*conn {
	g.mu.Lock()
	defer g.mu.Unlock()
	seen := make(map[*conn]bool)
	var out []*conn
	for _, m := range g.byName[group] {
		if !seen[m.conn] {
			seen[m.conn] = true
			out = append(out, m.conn)
		}
	}
	return out
}
