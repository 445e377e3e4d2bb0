// Package forward is the forwarding service between sibling sidecars of one
// app (docs/design.md flows 7 and 8; docs/forwarding.md is the spec and the
// threat model).
//
// A sidecar whose scheduler sends a broker delivery to a sibling calls
// Forwarder.Forward; the sibling's Server hands it to its local app through
// a Deliverer and reports the app's answer back, and only then does the
// forwarding sidecar ack (or nack) the message at the broker.
//
// Wire: the mesh codec (codecs/mesh), over mutual TLS 1.3. The forwarder
// sends HELLO{App} and then DELIVER requests (frame id = delivery id, unique
// on the connection). The receiving side answers each DELIVER in two steps:
//
//   - OK as soon as its sidecar has taken the delivery (queued it for the
//     app), or ERROR if it cannot take it: then nothing else follows;
//   - after OK, ACK or NACK when the local app answered. OK always comes
//     first on the wire.
//
// Both sides answer HEARTBEAT requests; the forwarder sends them to find a
// dead peer behind a silent connection. A sibling that sends nothing for
// ClientConfig.TakeTimeout after a DELIVER or HEARTBEAT is taken for
// silently cut: what it has not taken fails over to the caller at once, and
// its circuit breaker refuses it (ErrSiblingDown) until a background probe
// reconnects (docs/forwarding.md §3.3, §3.4).
//
// Ownership of a delivery d passed to Forward: if Forward returns an error,
// d is untouched and the caller must deliver it (locally). If it returns
// nil, the Forwarder owns d and settles it exactly once: d.Ack or
// d.Nack(delay) when the sibling reports its app's answer, d.Nack(0) when
// the connection dies or Timeout passes first (the broker redelivers it:
// at-least-once, never lost).
//
// Lock order. Forwarding side: Forwarder.mu, then peer.mu, then
// clientConn.mu, then Forwarder.omu (the outstanding count); no lock is
// held while calling Delivery.Ack/Nack or OnLost. Receiving side:
// sibDelivery.mu is held while OK is written (so the core.Writer's lock
// nests inside it); serverConn.mu is never held with another lock.
package forward
