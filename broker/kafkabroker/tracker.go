package kafkabroker

import (
	"container/heap"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
)

// partitionTracker implements the commit rule for one partition: the offset
// to commit is the lowest offset handed out and not yet acked, or, when
// every message handed out is acked, one past the highest. Everything below
// it was handed out by this consumer and acked by the app (Kafka offsets
// have no holes that the reader skips: it reads a partition in order).
//
// Offsets enter in increasing order (handOut refuses any offset not above
// the highest one seen), so handed is sorted, and acking is a binary
// search. Entries before head are acked; the slice is compacted as head
// moves, so its size follows the number of unacked messages (plus those
// acked behind the oldest unacked one).
//
// Not safe for concurrent use; consumer.tmu guards it.
type partitionTracker struct {
	handed []handedOffset
	head   int
	// next is one past the highest offset handed out; 0 before any.
	next int64
	// committed is the last offset (next to read) committed by this
	// consumer; 0 before any.
	committed int64
	// dirty: an ack arrived since the last commit was collected.
	dirty bool
	// owned: the partition is assigned to this consumer in the current
	// generation (false between two generations): only then are its
	// messages handed out and its offset committed.
	owned bool
}

// newPartitionTracker starts a partition at its committed offset
// (negative: none committed).
func newPartitionTracker(committed int64) *partitionTracker {
	if committed < 0 {
		return &partitionTracker{}
	}
	return &partitionTracker{next: committed, committed: committed}
}

// resumeAt is the offset to read the partition from: one past the last
// message handed out, the committed offset, or kafka.FirstOffset (the
// oldest retained message) when there is neither.
func (p *partitionTracker) resumeAt() int64 {
	if p.next > 0 {
		return p.next
	}
	return kafka.FirstOffset
}

type handedOffset struct {
	offset int64
	acked  bool
	// waiting is set while the message waits in the consumer's retry
	// queue (after a nack, or a Return), again is then the Redelivered
	// of its next delivery: 0 after a Return, which counts no attempt.
	waiting bool
	again   int
}

// handOut records offset as handed out. It returns false, recording
// nothing, for an offset not above the highest one handed out: the reader
// reads a partition again from its last commit after a rebalance, and
// those messages were handed out already (and are acked, or will be
// answered through their first delivery).
func (p *partitionTracker) handOut(offset int64) bool {
	if offset < p.next {
		return false
	}
	p.handed = append(p.handed, handedOffset{offset: offset})
	p.next = offset + 1
	return true
}

// ack records offset as acked. An offset not handed out is ignored.
func (p *partitionTracker) ack(offset int64) {
	live := p.handed[p.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].offset >= offset })
	if i == len(live) || live[i].offset != offset || live[i].acked {
		return
	}
	live[i].acked = true
	p.dirty = true
	for p.head < len(p.handed) && p.handed[p.head].acked {
		p.head++
	}
	switch {
	case p.head == len(p.handed):
		p.handed, p.head = p.handed[:0], 0
	case p.head >= 64 && p.head*2 >= len(p.handed):
		n := copy(p.handed, p.handed[p.head:])
		p.handed, p.head = p.handed[:n], 0
	}
}

// find returns the index in handed of offset's entry, or -1.
func (p *partitionTracker) find(offset int64) int {
	live := p.handed[p.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].offset >= offset })
	if i == len(live) || live[i].offset != offset {
		return -1
	}
	return p.head + i
}

// waits records that the message at offset waits in the retry queue for
// its delivery with Redelivered again.
func (p *partitionTracker) waits(offset int64, again int) {
	if i := p.find(offset); i >= 0 && !p.handed[i].acked {
		p.handed[i].waiting, p.handed[i].again = true, again
	}
}

// handedAgain records that the message at offset left the retry queue:
// it is handed out again.
func (p *partitionTracker) handedAgain(offset int64) {
	if i := p.find(offset); i >= 0 {
		p.handed[i].waiting, p.handed[i].again = false, 0
	}
}

// unanswered counts the messages handed out that are neither acked nor
// waiting in the retry queue (apps hold them), and lists the waiting
// ones with the Redelivered of their next delivery.
func (p *partitionTracker) unanswered() (held int, again map[int64]int) {
	for _, h := range p.handed[p.head:] {
		switch {
		case h.acked:
		case h.waiting:
			if again == nil {
				again = map[int64]int{}
			}
			again[h.offset] = h.again
		default:
			held++
		}
	}
	return held, again
}

// target is the offset to commit: everything below it is acked.
func (p *partitionTracker) target() int64 {
	if p.head < len(p.handed) {
		return p.handed[p.head].offset
	}
	return p.next
}

// pending counts the messages handed out and not acked.
func (p *partitionTracker) pending() int {
	n := 0
	for _, h := range p.handed[p.head:] {
		if !h.acked {
			n++
		}
	}
	return n
}

// toCommit returns the offset to commit and whether there is anything new
// to commit: an ack moved the target past the last commit.
func (p *partitionTracker) toCommit() (int64, bool) {
	if !p.dirty {
		return 0, false
	}
	t := p.target()
	if t <= p.committed {
		p.dirty = false
		return 0, false
	}
	return t, true
}

// committedTo records a successful commit of target.
func (p *partitionTracker) committedTo(target int64) {
	if target > p.committed {
		p.committed = target
	}
	if p.target() <= p.committed {
		p.dirty = false
	}
}

// retryItem is the next delivery of a nacked (or returned) message,
// waiting to be handed out.
type retryItem struct {
	due time.Time
	seq uint64 // FIFO among equal due times
	d   *delivery
}

// retryQueue is a min-heap of retryItems by due time.
type retryQueue []retryItem

func (q retryQueue) Len() int { return len(q) }
func (q retryQueue) Less(i, j int) bool {
	if !q[i].due.Equal(q[j].due) {
		return q[i].due.Before(q[j].due)
	}
	return q[i].seq < q[j].seq
}
func (q retryQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *retryQueue) Push(x any)   { *q = append(*q, x.(retryItem)) }
func (q *retryQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	old[len(old)-1] = retryItem{}
	*q = old[:len(old)-1]
	return it
}

func (q *retryQueue) push(it retryItem) { heap.Push(q, it) }

// popDue removes and returns the earliest item if it is due at now.
func (q *retryQueue) popDue(now time.Time) (*delivery, bool) {
	if len(*q) == 0 || (*q)[0].due.After(now) {
		return nil, false
	}
	return heap.Pop(q).(retryItem).d, true
}

// nextDue is the earliest due time; ok is false when the queue is empty.
func (q retryQueue) nextDue() (time.Time, bool) {
	if len(q) == 0 {
		return time.Time{}, false
	}
	return q[0].due, true
}
