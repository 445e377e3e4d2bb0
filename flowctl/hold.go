package flowctl

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// held is a delivery that releases its in-flight Permit when settled.
type held struct {
	broker.Delivery
	p        Permit
	released atomic.Bool
}

var _ broker.Delivery = (*held)(nil)

// Hold ties p to d: the returned delivery releases p on its first Ack or
// Nack (whatever their outcome), so every path that settles a delivery —
// the app's answer, a timeout, a hand-back on pause or disconnect, a
// forward's outcome — frees the group's slot. With the zero Permit it
// returns d itself.
func Hold(d broker.Delivery, p Permit) broker.Delivery {
	if p.s == nil {
		return d
	}
	return &held{Delivery: d, p: p}
}

func (h *held) Ack(ctx context.Context) error {
	defer h.release()
	return h.Delivery.Ack(ctx)
}

func (h *held) Nack(ctx context.Context, delay time.Duration) error {
	defer h.release()
	return h.Delivery.Nack(ctx, delay)
}

// Detach frees the slot of a delivery handed over to a successor process
// (broker.Detacher), without settling it.
func (h *held) Detach() { h.release() }

func (h *held) release() {
	if h.released.CompareAndSwap(false, true) {
		h.p.Release()
	}
}

// Unwrap returns the delivery h holds (broker.PositionOf looks through it).
func (h *held) Unwrap() broker.Delivery { return h.Delivery }
