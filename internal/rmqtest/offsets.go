package rmqtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// stateFileName is the file in Config.DataDir that keeps consumer offsets
// and the delay-level cursors.
const stateFileName = "offsets.json"

type offsetKey struct {
	group, topic string
	queue        int32
}

// offsets is the consumer offset table (ConsumerOffsetManager): the next
// offset to consume per group, topic and queue.
//
// Locking: mu is a leaf lock.
type offsets struct {
	mu    sync.Mutex
	table map[offsetKey]int64
	dirty bool
}

func newOffsets() *offsets {
	return &offsets{table: make(map[offsetKey]int64)}
}

func (o *offsets) get(k offsetKey) (int64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	v, ok := o.table[k]
	return v, ok
}

// set commits v as k's offset. Like RocketMQ, a commit may move an offset
// backwards (the last writer wins).
func (o *offsets) set(k offsetKey, v int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if old, ok := o.table[k]; ok && old == v {
		return
	}
	o.table[k] = v
	o.dirty = true
}

// stateFile is the JSON layout of stateFileName.
type stateFile struct {
	Offsets []stateOffset `json:"offsets"`
	// ScheduleCursors[level-1] is the next delayed message of that level
	// to move to its real topic.
	ScheduleCursors []int64 `json:"scheduleCursors"`
}

type stateOffset struct {
	Group  string `json:"group"`
	Topic  string `json:"topic"`
	Queue  int32  `json:"queue"`
	Offset int64  `json:"offset"`
}

// snapshot returns the table if it changed since the last snapshot.
func (o *offsets) snapshot() ([]stateOffset, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.dirty {
		return nil, false
	}
	o.dirty = false
	out := make([]stateOffset, 0, len(o.table))
	for k, v := range o.table {
		out = append(out, stateOffset{Group: k.group, Topic: k.topic, Queue: k.queue, Offset: v})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		return a.Queue < b.Queue
	})
	return out, true
}

func (o *offsets) load(list []stateOffset) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range list {
		o.table[offsetKey{e.Group, e.Topic, e.Queue}] = e.Offset
	}
}

// readState reads dir's state file; a missing file is an empty state.
func readState(dir string) (stateFile, error) {
	var st stateFile
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if os.IsNotExist(err) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", stateFileName, err)
	}
	return st, nil
}

// writeState replaces dir's state file atomically (write, fsync, rename).
func writeState(dir string, st stateFile) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, stateFileName+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: no such file
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, stateFileName))
}

func (o *offsets) markDirty() {
	o.mu.Lock()
	o.dirty = true
	o.mu.Unlock()
}
