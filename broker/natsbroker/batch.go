package natsbroker

import (
	"context"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/internal/sendq"
)

// Publishes to one topic can go out as one atomic batch (nats-server 2.12
// and later, a stream with allow_atomic): the messages carry
// Nats-Batch-Id and Nats-Batch-Sequence headers, the last one
// Nats-Batch-Commit, and the stream stores all of them at consecutive
// sequences, or none, and answers the last one alone. With a server that
// fsyncs every write (sync_interval: always, the embedded server's
// default) a batch is committed with one fsync instead of one per
// message, and the sidecar reads one ack instead of one per message. The
// server stages an R1 file stream's batch in a store of its own, which it
// fsyncs too; with a sync interval that fsync is all a batch adds, so
// there batches are slower and Config.MaxBatch leaves them off.
//
// Which publishes go together is package sendq's rule, as for RocketMQ's
// queues: a publish to a topic with no request in flight goes at once,
// alone (an ordinary publish, no batch headers); while one is in flight,
// the topic's publishes wait and go as one batch when it is answered. Each
// publish gets its own sequence: the batch's last sequence, less its
// count, plus its place. A batch the stream refuses (publishNotStored: an
// API error, such as a stream at its limit, too many batches in flight,
// or an incomplete batch) stored nothing, so each member goes on alone, as
// an ordinary publish; a batch with no answer leaves each member's outcome
// unknown.

const (
	// DefaultMaxBatch is Config.MaxBatch's default where batches pay: an
	// Embedded server that syncs every write.
	DefaultMaxBatch = 256
	// maxBatchLimit is nats-server's default limit of an atomic batch's
	// messages (jetstream max_batch_size).
	maxBatchLimit = 1000
	// maxBatchBytes bounds a batch's bodies and headers; a larger message
	// goes alone.
	maxBatchBytes = 1 << 20
)

// Batch headers of nats-server's atomic publish (server/stream.go).
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
	batchHeaderPrefix = "Nats-Batch-"
)

// pubReq is one publish as a sendq.Queue holds it: publishAck's arguments.
type pubReq struct {
	subj  string
	data  []byte
	nm    *nats.Msg // nil: no headers
	known string    // the stream expected to answer
}

// topicQueue is a topic's publishes (sendq.Queue), kept in its streamRef.
type topicQueue = sendq.Queue[*pubReq, pubAck]

// batchSender sends what a topicQueue hands it.
type batchSender struct{ b *Broker }

// One is an ordinary publish.
func (s batchSender) One(ctx context.Context, p *pubReq) (pubAck, error) {
	return s.b.publishAck(ctx, p.subj, p.data, p.nm, p.known)
}

// Batch publishes ps as one atomic batch: every message but the last
// without a reply subject, the last, with Nats-Batch-Commit, as a request
// on a reply inbox. The batch headers are added to each message's header
// block as it is encoded (batchHeader), with no header map per message.
// Its ack is the batch's; a count other than len(ps) (a server that took
// the messages one by one) is an error whose outcome is unknown.
func (s batchSender) Batch(ctx context.Context, ps []*pubReq, copied func()) (pubAck, error) {
	b := s.b
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.pubTimeout)
		defer cancel()
	}
	r, err := b.replies.get(b.nc, true)
	if err != nil {
		return pubAck{}, err
	}
	b.batches.Add(1)
	id := nuid.Next()
	last := len(ps) - 1
	var hdr []byte // reused: nats.go copies each message as it is published
	var reply string
	for i, p := range ps {
		hdr, err = batchHeader(hdr[:0], p.nm, id, i+1, i == last)
		switch {
		case err != nil:
		case i < last:
			err = b.nc.PublishWithHeader(p.subj, "", hdr, p.data)
		default:
			reply, err = r.send(p.subj, hdr, p.data, nil)
		}
		if err != nil {
			// Nothing after this message was sent, and no commit:
			// the server drops the batch (stored nothing).
			b.replies.put(r)
			return pubAck{}, err
		}
	}
	copied()
	resp, err := r.wait(ctx, reply)
	a, err := b.answered(r, resp, err, ps[last].known)
	if err != nil {
		return pubAck{}, err
	}
	if a.Count != uint64(len(ps)) || a.Sequence < a.Count {
		return pubAck{}, fmt.Errorf("the stream acknowledged a batch of %d messages up to sequence %d, and %d were sent: it may not take atomic batches", a.Count, a.Sequence, len(ps))
	}
	return a, nil
}

// batchHeader appends to dst the header block of the member at place seq
// (from 1) of batch id: nm's headers (nil: none), then the batch's, and
// the commit's on the last.
func batchHeader(dst []byte, nm *nats.Msg, id string, seq int, commit bool) ([]byte, error) {
	if nm != nil && len(nm.Header) > 0 {
		var err error
		if dst, err = nm.AppendHeader(dst); err != nil {
			return dst, err
		}
		dst = dst[:len(dst)-2] // the block's last line, before its final CRLF
	} else {
		dst = append(dst, "NATS/1.0\r\n"...)
	}
	dst = append(append(append(dst, batchIDHeader+": "...), id...), "\r\n"...)
	dst = strconv.AppendInt(append(dst, batchSeqHeader+": "...), int64(seq), 10)
	dst = append(dst, "\r\n"...)
	if commit {
		dst = append(dst, batchCommitHeader+": 1\r\n"...)
	}
	return append(dst, "\r\n"...), nil
}

// memberAck is the ack of the message at place idx of a batch acked a.
func memberAck(a pubAck, idx int) pubAck {
	return pubAck{Stream: a.Stream, Sequence: a.Sequence - a.Count + 1 + uint64(idx)}
}

// publishQueued publishes p through the topic's queue (ref.sends). A
// member of a batch the stream refused goes on alone; one whose ctx ended
// before it was sent reports nothing stored (broker.ErrUnavailable).
func (b *Broker) publishQueued(ctx context.Context, ref *streamRef, p *pubReq, size int) (pubAck, error) {
	r := b.batcher.Send(ctx, &ref.sends, p, size)
	switch {
	case r.Err == nil && r.Batch:
		return memberAck(r.R, r.Idx), nil
	case r.Err == nil:
		return r.R, nil
	case r.Unsent:
		return pubAck{}, fmt.Errorf("%w: the publish waited for the topic's publishes ahead of it and was not sent: %w", broker.ErrUnavailable, r.Err)
	case r.Batch && publishNotStored(r.Err):
		return b.publishAck(ctx, p.subj, p.data, p.nm, p.known)
	}
	return pubAck{}, r.Err
}
