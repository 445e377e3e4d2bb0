package rmqtest

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/msgmesh/msgmesh/internal/javahash"
)

// Topic names with a meaning for the broker.
const (
	retryTopicPrefix = "%RETRY%"
	dlqTopicPrefix   = "%DLQ%"
	// scheduleTopic holds delayed messages, one queue per delay level
	// (queue id = level - 1), like RocketMQ's ScheduleMessageService.
	scheduleTopic = "SCHEDULE_TOPIC_XXXX"
)

// commitLogName is the file of the commit log in Config.DataDir.
const commitLogName = "commitlog"

// storedMsg is one message in a queue: its record (store format) and what
// the broker looks at without decoding it.
type storedMsg struct {
	rec     []byte
	storeTS int64 // ms
	// tagsCode is the hash RocketMQ's consume queue keeps of the message's
	// TAGS (Java's String.hashCode), 0 when it has none, which is what
	// broker-side tag filtering compares.
	tagsCode int32
}

// tagsCode is RocketMQ's tags code of a message with properties props.
func tagsCode(props string) int32 {
	if tags := parseProperties(props)[propTags]; tags != "" {
		return javahash.String(tags)
	}
	return 0
}

// queue is one message queue: records by queue offset (index).
type queue struct {
	msgs []storedMsg
	// signal is closed, and replaced, whenever a message is appended;
	// long-polling pulls wait on it.
	signal chan struct{}
}

type topic struct {
	name   string
	queues []*queue
}

// msgRef locates a record by commit-log offset.
type msgRef struct {
	q   *queue
	idx int
}

// store keeps every topic, queue and message, in memory, and appends each
// record to the commit log file when there is one. All messages stay in
// memory for the life of the broker (there is no retention); a commit log
// is replayed into memory on start.
//
// Locking: mu guards everything below it. It is a leaf lock: no other
// broker lock is taken while it is held. The file is written under mu, so
// records are in commit-log order.
type store struct {
	log         *slog.Logger
	queueCount  int
	delayLevels []time.Duration
	storeHost   hostPort
	now         func() time.Time

	mu       sync.Mutex
	topics   map[string]*topic
	byPhys   map[int64]msgRef
	nextPhys int64
	file     *os.File // nil: memory only
	// cursors[level-1] is the queue offset of the next delayed message of
	// that level to move to its real topic.
	cursors      []int64
	cursorsDirty bool
	// schedWake is signalled (non-blocking) when a delayed message is
	// stored.
	schedWake chan struct{}
}

func newStore(cfg Config, storeHost hostPort, log *slog.Logger) *store {
	s := &store{
		log:         log,
		queueCount:  cfg.QueuesPerTopic,
		delayLevels: cfg.DelayLevels,
		storeHost:   storeHost,
		now:         time.Now,
		topics:      make(map[string]*topic),
		byPhys:      make(map[int64]msgRef),
		cursors:     make([]int64, len(cfg.DelayLevels)),
		schedWake:   make(chan struct{}, 1),
	}
	s.topicLocked(scheduleTopic)
	return s
}

// queuesFor is the number of queues a topic gets when it is created.
func (s *store) queuesFor(name string) int {
	switch {
	case name == scheduleTopic:
		return len(s.delayLevels)
	case strings.HasPrefix(name, retryTopicPrefix), strings.HasPrefix(name, dlqTopicPrefix):
		return 1 // RocketMQ's retryQueueNums and DLQ queue count
	}
	return s.queueCount
}

// topicLocked returns the topic, creating it. s.mu held on entry.
func (s *store) topicLocked(name string) *topic {
	t := s.topics[name]
	if t == nil {
		t = &topic{name: name}
		for range s.queuesFor(name) {
			t.queues = append(t.queues, &queue{signal: make(chan struct{})})
		}
		s.topics[name] = t
	}
	return t
}

// ensureTopic creates the topic if it does not exist and returns its queue
// count.
func (s *store) ensureTopic(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.topicLocked(name).queues)
}

// queueCountOf returns the queue count of an existing topic, or 0.
func (s *store) queueCountOf(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.topics[name]; t != nil {
		return len(t.queues)
	}
	return 0
}

// topicNames lists the topics clients may see (not the schedule topic).
func (s *store) topicNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.topics))
	for n := range s.topics {
		if n != scheduleTopic {
			names = append(names, n)
		}
	}
	return names
}

// putRequest is a message to store.
type putRequest struct {
	topic     string
	queueID   int32
	flag      int32
	sysFlag   int32
	bornTS    int64
	bornHost  hostPort
	reconsume int32
	body      []byte
	props     map[string]string
}

// errStore wraps failures to write the commit log.
var errStore = errors.New("store")

// putAll stores the messages in order, under one lock (a batch gets
// consecutive offsets). A message with a delay level (property DELAY > 0)
// goes to the schedule topic instead, with its real topic and queue in
// properties, and moves to the real topic when due. The caller checked each
// queue id against its topic.
func (s *store) putAll(ps []*putRequest) ([]*message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*message, 0, len(ps))
	for _, p := range ps {
		m, err := s.putLocked(p, true)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// putLocked stores p. divert: honour a delay level. s.mu held on entry.
func (s *store) putLocked(p *putRequest, divert bool) (*message, error) {
	if divert && p.topic != scheduleTopic && len(s.delayLevels) > 0 &&
		p.sysFlag&msgFlagTransactionMask == 0 {
		if lvl, err := strconv.Atoi(p.props[propDelayLevel]); err == nil && lvl > 0 {
			lvl = min(lvl, len(s.delayLevels))
			p.props[propDelayLevel] = strconv.Itoa(lvl)
			p.props[propRealTopic] = p.topic
			p.props[propRealQueueID] = strconv.Itoa(int(p.queueID))
			p.topic, p.queueID = scheduleTopic, int32(lvl-1)
		}
	}
	t := s.topicLocked(p.topic)
	if p.queueID < 0 || int(p.queueID) >= len(t.queues) {
		return nil, fmt.Errorf("queue %d of topic %s does not exist", p.queueID, p.topic)
	}
	q := t.queues[p.queueID]
	m := &message{
		Topic:          p.topic,
		QueueID:        p.queueID,
		Flag:           p.flag,
		QueueOffset:    int64(len(q.msgs)),
		PhysOffset:     s.nextPhys,
		SysFlag:        p.sysFlag,
		BornTimestamp:  p.bornTS,
		BornHost:       p.bornHost,
		StoreTimestamp: s.now().UnixMilli(),
		StoreHost:      s.storeHost,
		ReconsumeTimes: p.reconsume,
		Body:           p.body,
		Properties:     formatProperties(p.props),
	}
	rec := m.encode()
	if s.file != nil {
		if _, err := s.file.Write(rec); err != nil {
			// A partial record is cut off by the replay at the next start.
			return nil, fmt.Errorf("%w: write commit log: %w", errStore, err)
		}
	}
	s.appendLocked(q, storedMsg{rec: rec, storeTS: m.StoreTimestamp, tagsCode: tagsCode(m.Properties)}, m.PhysOffset)
	s.nextPhys += int64(len(rec))
	if p.topic == scheduleTopic {
		select {
		case s.schedWake <- struct{}{}:
		default:
		}
	}
	return m, nil
}

// appendLocked appends sm to q and wakes q's long polls. s.mu held.
func (s *store) appendLocked(q *queue, sm storedMsg, phys int64) {
	q.msgs = append(q.msgs, sm)
	s.byPhys[phys] = msgRef{q: q, idx: len(q.msgs) - 1}
	close(q.signal)
	q.signal = make(chan struct{})
}

// lookup returns the decoded message at commit-log offset phys.
func (s *store) lookup(phys int64) (*message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref, ok := s.byPhys[phys]
	if !ok {
		return nil, false
	}
	m, _, err := decodeRecord(ref.q.msgs[ref.idx].rec)
	if err != nil {
		return nil, false
	}
	return m, true
}

// Pull statuses (GetMessageStatus, as the pull response reports them).
type pullStatus int

const (
	pullFound pullStatus = iota
	pullNotFound
	pullOffsetMoved
	pullNoQueue
	// pullNoMatch: messages were there, none matched the subscription;
	// the next offset skips them (RocketMQ's NO_MATCHED_MESSAGE).
	pullNoMatch
)

type pullResult struct {
	status   pullStatus
	body     []byte
	next     int64
	minOff   int64
	maxOff   int64
	signal   <-chan struct{} // for a long poll when status is pullNotFound
	messages int
}

// Pull limits per response (RocketMQ's maxTransferCountOnMessageInMemory
// and maxTransferBytesOnMessageInMemory).
const (
	maxPullCount = 32
	maxPullBytes = 256 << 10
)

// tagFilter is a pull's tag subscription as RocketMQ's broker applies it:
// the hash codes of the tags it names; nil matches every message.
type tagFilter map[int32]bool

// parseTagFilter parses a TAG subscription expression ("*", "A || B").
func parseTagFilter(expr string) tagFilter {
	expr = strings.TrimSpace(expr)
	if expr == "" || expr == "*" {
		return nil
	}
	f := tagFilter{}
	for _, t := range strings.Split(expr, "||") {
		if t = strings.TrimSpace(t); t != "" {
			f[javahash.String(t)] = true
		}
	}
	return f
}

func (f tagFilter) match(code int32) bool { return f == nil || f[code] }

// get reads up to maxMsgs records of topic/queueID from offset that pass
// filter, following DefaultMessageStore.getMessage: an empty queue or an
// offset at the end is "not found" (long-pollable); an offset past the end
// is "moved" with the next offset corrected to the minimum (0), as RocketMQ
// does when the queue's minimum offset is 0; messages that are there but
// none of which pass the filter are "no match", with the next offset past
// them.
func (s *store) get(topicName string, queueID int32, offset int64, maxMsgs int, filter tagFilter) pullResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topics[topicName]
	if t == nil || queueID < 0 || int(queueID) >= len(t.queues) {
		return pullResult{status: pullNoQueue}
	}
	q := t.queues[queueID]
	res := pullResult{minOff: 0, maxOff: int64(len(q.msgs)), signal: q.signal}
	switch {
	case res.maxOff == 0:
		res.status, res.next = pullNotFound, 0
	case offset < 0:
		res.status, res.next = pullOffsetMoved, 0
	case offset == res.maxOff:
		res.status, res.next = pullNotFound, offset
	case offset > res.maxOff:
		res.status, res.next = pullOffsetMoved, 0
	default:
		maxMsgs = min(max(maxMsgs, 1), maxPullCount)
		var body []byte
		i, n := offset, 0
		for ; i < res.maxOff && n < maxMsgs; i++ {
			if !filter.match(q.msgs[i].tagsCode) {
				continue
			}
			rec := q.msgs[i].rec
			if len(body) > 0 && len(body)+len(rec) > maxPullBytes {
				break
			}
			body = append(body, rec...)
			n++
		}
		res.status, res.body, res.next, res.messages = pullFound, body, i, n
		if n == 0 {
			res.status, res.body = pullNoMatch, nil
		}
	}
	return res
}

// maxOffset is the queue's next offset (its message count); 0 when the
// queue does not exist.
func (s *store) maxOffset(topicName string, queueID int32) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.topics[topicName]; t != nil && queueID >= 0 && int(queueID) < len(t.queues) {
		return int64(len(t.queues[queueID].msgs))
	}
	return 0
}

// searchOffset returns the offset of the first message stored at or after
// ts (ms), or the max offset when there is none.
func (s *store) searchOffset(topicName string, queueID int32, ts int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topics[topicName]
	if t == nil || queueID < 0 || int(queueID) >= len(t.queues) {
		return 0
	}
	msgs := t.queues[queueID].msgs
	lo, hi := 0, len(msgs)
	for lo < hi {
		mid := (lo + hi) / 2
		if msgs[mid].storeTS < ts {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return int64(lo)
}

// moveDue moves every delayed message whose time has come to its real
// topic and returns how long until the next one is due (0: none waiting).
func (s *store) moveDue() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UnixMilli()
	var next int64
	sched := s.topicLocked(scheduleTopic)
	for lvl, q := range sched.queues {
		delay := s.delayLevels[lvl].Milliseconds()
		for s.cursors[lvl] < int64(len(q.msgs)) {
			sm := q.msgs[s.cursors[lvl]]
			due := sm.storeTS + delay
			if due > now {
				if next == 0 || due < next {
					next = due
				}
				break
			}
			s.moveLocked(sm.rec)
			s.cursors[lvl]++
			s.cursorsDirty = true
		}
	}
	if next == 0 {
		return 0
	}
	return time.Duration(next-now) * time.Millisecond
}

// moveLocked stores the delayed message rec in its real topic, like
// ScheduleMessageService.messageTimeup: same body, flags, born time and
// host, reconsume times and properties, without DELAY. s.mu held.
func (s *store) moveLocked(rec []byte) {
	m, _, err := decodeRecord(rec)
	if err != nil {
		s.log.Warn("dropping undecodable delayed message", "error", err)
		return
	}
	props := parseProperties(m.Properties)
	realTopic := props[propRealTopic]
	qid, err := strconv.Atoi(props[propRealQueueID])
	if !validTopic(realTopic) || err != nil {
		s.log.Warn("dropping delayed message without a valid real topic", "topic", realTopic, "queue", props[propRealQueueID])
		return
	}
	delete(props, propDelayLevel)
	props[propWaitStoreMsgOK] = "false"
	t := s.topicLocked(realTopic)
	if qid < 0 || qid >= len(t.queues) {
		qid = 0
	}
	_, err = s.putLocked(&putRequest{
		topic:     realTopic,
		queueID:   int32(qid),
		flag:      m.Flag,
		sysFlag:   m.SysFlag,
		bornTS:    m.BornTimestamp,
		bornHost:  m.BornHost,
		reconsume: m.ReconsumeTimes,
		body:      m.Body,
		props:     props,
	}, false)
	if err != nil {
		s.log.Error("cannot move delayed message; it is lost", "topic", realTopic, "error", err)
	}
}

// snapshotCursors returns the delay-level cursors if they changed since
// the last snapshot.
func (s *store) snapshotCursors() ([]int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cursorsDirty {
		return nil, false
	}
	s.cursorsDirty = false
	return append([]int64(nil), s.cursors...), true
}

// setCursors restores persisted delay-level cursors (at start).
func (s *store) setCursors(c []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sched := s.topicLocked(scheduleTopic)
	for i := range min(len(c), len(s.cursors)) {
		s.cursors[i] = min(max(c[i], 0), int64(len(sched.queues[i].msgs)))
	}
}

// open replays the commit log in dir into memory and keeps the file open
// for appending. A torn or corrupt tail (a crash in the middle of a write)
// is cut off, with a warning.
func (s *store) open(dir string) error {
	path := filepath.Join(dir, commitLogName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("read %s: %w", path, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pos := 0
	for pos < len(data) {
		m, n, err := decodeRecord(data[pos:])
		if err == nil && m.PhysOffset != int64(pos) {
			err = fmt.Errorf("record at %d says commit-log offset %d", pos, m.PhysOffset)
		}
		var q *queue
		if err == nil {
			t := s.topicLocked(m.Topic)
			for int(m.QueueID) >= len(t.queues) {
				t.queues = append(t.queues, &queue{signal: make(chan struct{})})
			}
			if m.QueueID < 0 {
				err = fmt.Errorf("record at %d has queue id %d", pos, m.QueueID)
			} else if q = t.queues[m.QueueID]; m.QueueOffset != int64(len(q.msgs)) {
				err = fmt.Errorf("record at %d has queue offset %d, want %d", pos, m.QueueOffset, len(q.msgs))
			}
		}
		if err != nil {
			s.log.Warn("commit log: cutting off a corrupt tail", "file", path, "offset", pos, "dropped_bytes", len(data)-pos, "error", err)
			if terr := f.Truncate(int64(pos)); terr != nil {
				f.Close()
				return fmt.Errorf("truncate %s: %w", path, terr)
			}
			break
		}
		s.appendLocked(q, storedMsg{rec: data[pos : pos+n : pos+n], storeTS: m.StoreTimestamp, tagsCode: tagsCode(m.Properties)}, int64(pos))
		pos += n
	}
	s.nextPhys = int64(pos)
	s.file = f
	return nil
}

func (s *store) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file == nil {
		return nil
	}
	err := s.file.Sync()
	if cerr := s.file.Close(); err == nil {
		err = cerr
	}
	s.file = nil
	return err
}

func (s *store) markCursorsDirty() {
	s.mu.Lock()
	s.cursorsDirty = true
	s.mu.Unlock()
}
