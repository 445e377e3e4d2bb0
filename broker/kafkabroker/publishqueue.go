package kafkabroker

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/segmentio/kafka-go"
)

// publishQueue hands the messages of concurrent Publish calls to the
// Writer together: one goroutine (flushPublishes) takes whatever is queued
// and writes it with one WriteMessages call. kafka-go's WriteMessages has a
// cost per call (the Writer's in-flight count and lock, a map of partition
// assignments, the partition writer's lock), which one message a call paid
// in full; the sidecar runs many Publish calls at once, so a round usually
// holds several messages. Each message still has its own waiter
// (published), completed from its own produce request's Completion, so a
// Publish returns nil only once its message was acked.
//
// WriteMessages refuses a whole call, before any message joins a batch,
// when one of its messages is refused (too large, topic unknown, writer
// closed). The flusher then gives every message of that round back to its
// Publish (published.alone), which writes it with a WriteMessages of its
// own under its own ctx, exactly as without the queue: the refused message
// fails alone and its neighbours are written.
//
// Lock rule: mu is a leaf lock; WriteMessages is never called with it held.
type publishQueue struct {
	mu sync.Mutex
	// queue holds the messages waiting for the flusher, in Publish order;
	// each message's WriterData is its *published.
	queue []kafka.Message
	// stopped: the flusher writes what is queued and returns; enqueue
	// refuses from then on (Publish writes alone).
	stopped bool
	// wake has capacity 1: enqueue sends when the queue was empty, stop
	// sends once.
	wake chan struct{}
	// done is closed when flushPublishes returns.
	done chan struct{}
	// roundBytes is the size up to which a message may share a round:
	// the Writer's BatchBytes (New sets it; tests raise it to send an
	// oversized message through a round).
	roundBytes int64
	// rounds counts the WriteMessages calls of the flusher, givenBack
	// the messages of refused rounds given back to their Publish to be
	// written alone (for tests, which check that rounds are shared and
	// that the fallback ran).
	rounds, givenBack atomic.Int64
}

// startPublishQueue starts the flusher. New calls it once the Writer
// exists; Close stops it with stopPublishQueue.
func (b *Broker) startPublishQueue() {
	b.pq.roundBytes = b.writer.BatchBytes
	b.pq.wake = make(chan struct{}, 1)
	b.pq.done = make(chan struct{})
	go b.flushPublishes()
}

// stopPublishQueue makes the flusher write what is queued and return, and
// waits for it. Publish calls after it write alone (and find the Writer
// closed once Close closed it).
func (b *Broker) stopPublishQueue() {
	b.pq.mu.Lock()
	b.pq.stopped = true
	b.pq.mu.Unlock()
	select {
	case b.pq.wake <- struct{}{}:
	default: // a wake is pending already: the flusher will see stopped
	}
	<-b.pq.done
}

// enqueue queues km (whose WriterData is its *published) for the flusher.
// It returns false after stopPublishQueue: the caller writes km itself.
func (b *Broker) enqueue(km kafka.Message) bool {
	b.pq.mu.Lock()
	if b.pq.stopped {
		b.pq.mu.Unlock()
		return false
	}
	first := len(b.pq.queue) == 0
	b.pq.queue = append(b.pq.queue, km)
	b.pq.mu.Unlock()
	if first {
		select {
		case b.pq.wake <- struct{}{}:
		default: // the flusher has a wake pending: it will take km too
		}
	}
	return true
}

// flushPublishes is the flusher goroutine: it writes the queued messages
// a round at a time until stopPublishQueue, then what is left, and
// returns. The Writer is asynchronous, so a round's WriteMessages returns
// once its messages joined their partitions' batches, and the flusher
// takes the next round while they are on their way.
//
// Its WriteMessages calls use the transport's context: the Writer uses the
// ctx only to read the partition counts from the transport's metadata
// cache (filled by New), and a Publish's own ctx must not fail its round's
// other messages.
func (b *Broker) flushPublishes() {
	defer close(b.pq.done)
	ctx := b.transport.Context
	var round []kafka.Message // the queue's other buffer; the flusher's alone
	for {
		b.pq.mu.Lock()
		for len(b.pq.queue) == 0 {
			if b.pq.stopped {
				b.pq.mu.Unlock()
				return
			}
			b.pq.mu.Unlock()
			<-b.pq.wake
			// Yield once: the Publish calls already runnable (woken
			// by one Completion, each about to queue its next
			// message) queue theirs first and share the round. With
			// nothing else runnable it returns at once. Without it
			// a round held 1.2 messages on average in
			// BenchmarkPublish1KiB/parallel, with it 15-20.
			runtime.Gosched()
			b.pq.mu.Lock()
		}
		round, b.pq.queue = b.pq.queue, round[:0]
		b.pq.mu.Unlock()
		b.writeRound(ctx, round)
		clear(round) // the Writer copied the messages; drop their bytes
	}
}

// writeRound writes one round. When WriteMessages refuses it (none of its
// messages joined a batch: the Writer checks every message before it
// queues any), each message goes back to its Publish to be written alone.
func (b *Broker) writeRound(ctx context.Context, round []kafka.Message) {
	b.pq.rounds.Add(1)
	err := b.writer.WriteMessages(ctx, round...)
	if err == nil {
		return
	}
	b.log.Debug("the Writer refused a round of publishes; writing each alone", "messages", len(round), "error", err)
	b.pq.givenBack.Add(int64(len(round)))
	for i := range round {
		p := round[i].WriterData.(*published)
		p.alone = true
		p.done <- struct{}{}
	}
}

// fitsRound reports whether the Writer cannot refuse km for its size, so
// that it may share a round: its key, value and headers with the largest
// varint lengths and the Writer's per-message overhead are within
// BatchBytes. A message near or over the limit is written alone, so that a
// stream of oversized messages does not send every round through the
// fallback.
func (b *Broker) fitsRound(km *kafka.Message) bool {
	n := len(km.Key) + len(km.Value) + messageOverhead
	for i := range km.Headers {
		n += len(km.Headers[i].Key) + len(km.Headers[i].Value) + 2*5
	}
	return int64(n) <= b.pq.roundBytes
}
