package msgmesh_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/forward"
)

// forwardCounter stands between a sidecar and its forwarder and counts
// how Forward to one sibling failed once armed.
type forwardCounter struct {
	msgmesh.Forwarder
	sibling             atomic.Value // string: the sibling counted
	silent, down, other atomic.Int64
}

func (c *forwardCounter) Forward(ctx context.Context, sibling, group, topic string, d broker.Delivery) error {
	err := c.Forwarder.Forward(ctx, sibling, group, topic, d)
	switch {
	case err == nil, c.sibling.Load() != sibling:
	case errors.Is(err, forward.ErrSiblingDown):
		c.down.Add(1)
	case errors.Is(err, forward.ErrSilent):
		c.silent.Add(1)
	default:
		c.other.Add(1)
	}
	return err
}

// TestSiblingSilentCut is docs/forwarding.md §3.3 with three sidecars: node 3
// forwards everything to nodes 1 and 2, and the path to node 2 is cut
// silently (no FIN, no RST) under steady load, then healed. Node 3 goes on
// taking broker deliveries during the cut: the forward that was under way
// fails over after the take timeout and every later one to node 2 is refused
// at once (its breaker is open) and goes to node 1 or stays local. Nothing
// is lost, and the duplicates are bounded by what was in flight at the cut.
func TestSiblingSilentCut(t *testing.T) {
	counter := &forwardCounter{}
	var st *cutState
	res := runCut(t, cutPlan{
		rate:  300,
		node3: nodeOpts{take: sidecartest.Scaled(time.Second), wrap: func(f msgmesh.Forwarder) msgmesh.Forwarder { counter.Forwarder = f; return counter }},
		ready: func(s *cutState) { st = s },
		lead: func() {
			sidecartest.WaitFor(t, 60*time.Second, "node 3 to forward through the relay", func() bool {
				return st.nodes[1].sc.Stats().FromSiblings >= 100
			})
			counter.sibling.Store(st.relay.Addr()) // from the cut on
		},
		cut: func() {
			// Node 3 keeps taking from the broker while node 2 is cut off,
			// and forwards to it are refused at once.
			at := st.nodes[2].sc.Stats().FromBroker
			sidecartest.WaitFor(t, 60*time.Second, "node 3 to take 300 more deliveries during the cut", func() bool {
				return st.nodes[2].sc.Stats().FromBroker >= at+300 && counter.down.Load() >= 50
			})
		},
		tail: func() {
			// After the heal a probe reconnects and node 2 gets forwards again.
			at := st.nodes[1].sc.Stats().FromSiblings
			sidecartest.WaitFor(t, 60*time.Second, "node 3 to forward to node 2 again", func() bool {
				return st.nodes[1].sc.Stats().FromSiblings >= at+50
			})
		},
	})
	t.Logf("%+v; Forward failures: %d silent, %d refused at once (breaker open), %d other",
		res, counter.silent.Load(), counter.down.Load(), counter.other.Load())
	if res.lost != 0 {
		t.Errorf("%d of %d messages were never delivered", res.lost, res.published)
	}
	// One forward per upstream consumer can be under way into the cut (node
	// 3 has one): it waits for the take timeout; a second may race with the
	// detection. Everything after it is refused at once.
	if s := counter.silent.Load(); s < 1 || s > 2 {
		t.Errorf("%d forwards waited into the cut; want 1 (2 at most)", s)
	}
	// Duplicates: the deliveries node 2 had taken and not answered at the
	// cut (handed back to the broker), plus the DELIVER under way, which
	// may reach node 2 once the path is back.
	if limit := res.inflightAtCut + 2; res.dups > limit {
		t.Errorf("%d duplicates; want at most %d (%d forwarded deliveries in flight at the cut, +2)", res.dups, limit, res.inflightAtCut)
	}
}
