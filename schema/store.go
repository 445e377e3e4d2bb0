package schema

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
)

// Store persists a Registry. The Registry keeps everything in memory and
// writes each change through to its Store before it answers, so a Store
// only has to load everything once and apply single changes atomically and
// durably. The Registry is the only writer of its Store (in the control
// plane: its leader); a Store shared by several writers needs its own
// conflict check, for which AddVersion has ErrConflict.
//
// Lifecycle: Load once, then any number of AddVersion, DeleteSubject and
// SetCompatibility, then Close. Implementations must be safe for
// concurrent use.
type Store interface {
	// Load returns everything stored.
	Load(ctx context.Context) (Snapshot, error)
	// AddVersion stores v.Schema under v.ID (unless that id is already
	// stored) and makes v.ID version v.Version of v.Subject, in one
	// atomic, durable write. It fails with an error wrapping ErrConflict,
	// and changes nothing, if the subject already has that version, or
	// if v.ID is stored with a different text.
	AddVersion(ctx context.Context, v SchemaVersion) error
	// DeleteSubject removes every version of subject and its
	// subject-level compatibility; the schemas stay stored under their
	// ids. Deleting a subject that does not exist is not an error.
	DeleteSubject(ctx context.Context, subject string) error
	// SetCompatibility sets subject's compatibility level, or the global
	// default when subject is "". The level "" removes a subject's own
	// level (it falls back to the global one).
	SetCompatibility(ctx context.Context, subject string, c Compatibility) error
	// Close releases the store. It is safe to call more than once.
	Close() error
}

// Snapshot is the whole content of a Store.
type Snapshot struct {
	// Schemas maps every schema id ever assigned to its text.
	Schemas map[int]string
	// Subjects maps each subject to its schema ids by version: the id of
	// version n is at index n-1.
	Subjects map[string][]int
	// Compatibility holds the levels set so far: the key "" is the global
	// default, other keys are subjects.
	Compatibility map[string]Compatibility
}

func newSnapshot() Snapshot {
	return Snapshot{Schemas: map[int]string{}, Subjects: map[string][]int{}, Compatibility: map[string]Compatibility{}}
}

func (s Snapshot) clone() Snapshot {
	c := Snapshot{Schemas: maps.Clone(s.Schemas), Subjects: make(map[string][]int, len(s.Subjects)), Compatibility: maps.Clone(s.Compatibility)}
	for k, v := range s.Subjects {
		c.Subjects[k] = slices.Clone(v)
	}
	return c
}

// MemoryStore is a Store that keeps everything in memory: for tests, and
// for a control plane that does not need its schemas after a restart.
type MemoryStore struct {
	mu     sync.Mutex // guards snap and closed
	snap   Snapshot
	closed bool
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{snap: newSnapshot()}
}

// Load returns a copy of everything stored.
func (m *MemoryStore) Load(context.Context) (Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Snapshot{}, ErrClosed
	}
	return m.snap.clone(), nil
}

// AddVersion implements Store.
func (m *MemoryStore) AddVersion(_ context.Context, v SchemaVersion) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if err := checkAdd(v, m.snap.Subjects[v.Subject], m.snap.Schemas); err != nil {
		return err
	}
	m.snap.Schemas[v.ID] = v.Schema
	m.snap.Subjects[v.Subject] = append(m.snap.Subjects[v.Subject], v.ID)
	return nil
}

// checkAdd is AddVersion's conflict check, shared by the stores: v must be
// the next version of its subject and must not change a stored schema.
func checkAdd(v SchemaVersion, ids []int, schemas map[int]string) error {
	if v.Version != len(ids)+1 {
		return fmt.Errorf("%w: subject %q has %d versions, cannot add version %d", ErrConflict, v.Subject, len(ids), v.Version)
	}
	if text, ok := schemas[v.ID]; ok && text != v.Schema {
		return fmt.Errorf("%w: schema id %d is already stored with another text", ErrConflict, v.ID)
	}
	return nil
}

// DeleteSubject implements Store.
func (m *MemoryStore) DeleteSubject(_ context.Context, subject string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	delete(m.snap.Subjects, subject)
	delete(m.snap.Compatibility, subject)
	return nil
}

// SetCompatibility implements Store.
func (m *MemoryStore) SetCompatibility(_ context.Context, subject string, c Compatibility) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if c == "" {
		delete(m.snap.Compatibility, subject)
	} else {
		m.snap.Compatibility[subject] = c
	}
	return nil
}

// Close implements Store; later calls of the other methods return
// ErrClosed.
func (m *MemoryStore) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
