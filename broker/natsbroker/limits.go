package natsbroker

import "github.com/msgmesh/msgmesh/broker"

var _ broker.SizeLimiter = (*Broker)(nil)

// maxHeaderBlock is JetStream's limit on a stored message's encoded
// headers (a 16-bit length in its store).
const maxHeaderBlock = 1<<16 - 1

// MaxBody implements broker.SizeLimiter. NATS counts the body and the
// encoded header block together against the server's max_payload (which
// the client learns when it connects, and again after a reconnect), and
// JetStream refuses a header block over 64 KiB.
func (b *Broker) MaxBody(headerBytes int) int {
	block := headerBlock(headerBytes)
	if block > maxHeaderBlock {
		return -1
	}
	return int(b.nc.MaxPayload()) - block
}

// PayloadFor is the max_payload a NATS server needs for a body of maxBody
// bytes with headerBytes of key and headers (broker.HeaderBytes): what the
// sidecar sets on the server it embeds, so that its own limits fit.
func PayloadFor(maxBody, headerBytes int) int {
	return maxBody + headerBlock(headerBytes)
}

// headerBlock bounds the encoded header block of a message with
// headerBytes of key and headers as broker.HeaderBytes counts them: the
// "NATS/1.0" line and the closing CRLF (12 bytes), each header's
// "Name: value" line (its count exactly), and the key's line, worst when
// the key is not header-safe and goes base64 in KeyB64Header:
// 19 + 4⌈k/3⌉ bytes for a key of k.
func headerBlock(headerBytes int) int {
	return 12 + 24 + headerBytes + (headerBytes+2)/3
}
