package broker

import "context"

// Handing deliveries over. In a hot upgrade the old process passes the
// deliveries apps still hold to its successor, which settles them when the
// apps answer; so an upgrade waits for no app. A delivery whose broker
// allows it is Portable: its Token is all another process connected to the
// same cluster needs, and that process's adapter, an Adopter, turns the
// token back into a Delivery. The adopted Delivery is Inherited: it has
// the message's id, redelivery count and timestamp but no message (the
// app already has it).

// Portable is implemented by a delivery another process can settle.
type Portable interface {
	// Token is what Adopter.Adopt needs; ok is false when this delivery
	// cannot move after all (the message came without its broker handle).
	Token() (token []byte, ok bool)
}

// Adopter is implemented by a Broker that settles deliveries handed over
// by another process, from their Token.
type Adopter interface {
	// Adopt returns the delivery token names. Its Ack and Nack settle the
	// message at the broker as the original's would have; it is Inherited.
	// A token the adapter cannot read is refused with ErrRejected.
	Adopt(token []byte) (Delivery, error)
}

// Releaser is implemented by a Consumer whose Close waits for the
// deliveries apps still hold, so that their answers still reach the
// broker (RocketMQ). Release closes it without waiting, for a hot upgrade
// whose successor settles those deliveries (Portable): their tokens are
// made after the release, from the state it committed.
type Releaser interface {
	Release(ctx context.Context) error
}

// Inherited marks a delivery made by Adopter.Adopt. Its Message has no
// body, so a failed attempt is a plain Nack (the dead-letter policy meets
// the message when the broker offers it again).
type Inherited interface{ Inherited() }

// Detacher is implemented by the sidecar's delivery wrappers that hold
// something of their own (a span, a flow-control slot): Detach lets go of
// it without settling the delivery, for a delivery that moves to another
// process.
type Detacher interface{ Detach() }

// As returns d, or the first delivery it wraps (through an Unwrap()
// Delivery method, as the sidecar's wrappers have), that is a T.
func As[T any](d Delivery) (T, bool) {
	for range 8 { // wrappers nest a few levels at most
		if t, ok := d.(T); ok {
			return t, true
		}
		u, isWrapper := d.(interface{ Unwrap() Delivery })
		if !isWrapper {
			break
		}
		d = u.Unwrap()
	}
	var zero T
	return zero, false
}

// Detach calls Detach on every wrapper of d that is a Detacher, outermost
// first; d itself is left unsettled.
func Detach(d Delivery) {
	for range 8 {
		if dt, ok := d.(Detacher); ok {
			dt.Detach()
		}
		u, isWrapper := d.(interface{ Unwrap() Delivery })
		if !isWrapper {
			return
		}
		d = u.Unwrap()
	}
}
