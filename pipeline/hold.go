package pipeline

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// holds are the Holds of one delivery; the first inline, as there is
// usually one stage that holds anything (flow control's in-flight slot).
type holds struct {
	first Hold
	rest  []Hold
}

func (hs *holds) add(h Hold) {
	switch {
	case h == nil:
	case hs.first == nil:
		hs.first = h
	default:
		hs.rest = append(hs.rest, h)
	}
}

func (hs *holds) release() {
	if hs.first != nil {
		hs.first.Release()
	}
	for _, h := range hs.rest {
		h.Release()
	}
}

// held is a delivery that releases its Holds when it is first settled.
type held struct {
	broker.Delivery
	hs       holds
	released atomic.Bool
}

var (
	_ broker.Delivery = (*held)(nil)
	_ broker.Detacher = (*held)(nil)
)

// Ack settles the delivery and releases its holds, whatever the outcome.
func (h *held) Ack(ctx context.Context) error {
	defer h.release()
	return h.Delivery.Ack(ctx)
}

// Nack settles the delivery and releases its holds, whatever the outcome.
func (h *held) Nack(ctx context.Context, delay time.Duration) error {
	defer h.release()
	return h.Delivery.Nack(ctx, delay)
}

// Detach releases the holds of a delivery handed over to a successor
// process (broker.Detacher), without settling it.
func (h *held) Detach() { h.release() }

func (h *held) release() {
	if h.released.CompareAndSwap(false, true) {
		h.hs.release()
	}
}

// Unwrap returns the delivery h holds (broker.PositionOf looks through it).
func (h *held) Unwrap() broker.Delivery { return h.Delivery }
