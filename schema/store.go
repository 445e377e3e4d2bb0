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
// Lifecycle: Load once, then any number of AddVersion, DeleteVersions,
// DeleteSubject, SetCompatibility and SetMode, then Close.
// Implementations must be safe for concurrent use.
type Store interface {
	// Load returns everything stored.
	Load(ctx context.Context) (Snapshot, error)
	// AddVersion stores v.Schema under v.ID (unless that id is already
	// stored) and makes v.ID version v.Version of v.Subject, in one
	// atomic, durable write. It fails with an error wrapping ErrConflict,
	// and changes nothing, unless v.Version is one more than the subject's
	// highest stored version (soft-deleted ones count), or if v.ID is
	// stored with a different text.
	AddVersion(ctx context.Context, v SchemaVersion) error
	// DeleteVersions soft-deletes the given versions of subject (they are
	// kept, marked deleted), or with permanent removes them; versions the
	// subject does not have are ignored. A subject left without versions
	// keeps its levels. One atomic, durable write.
	DeleteVersions(ctx context.Context, subject string, versions []int, permanent bool) error
	// DeleteSubject removes every version of subject, its subject-level
	// compatibility and mode; the schemas stay stored under their ids.
	// Deleting a subject that does not exist is not an error.
	DeleteSubject(ctx context.Context, subject string) error
	// SetCompatibility sets subject's compatibility level, or the global
	// default when subject is "". The level "" removes a subject's own
	// level (it falls back to the global one).
	SetCompatibility(ctx context.Context, subject string, c Compatibility) error
	// SetMode sets subject's mode, or the global one when subject is "".
	// The mode "" removes a subject's own mode.
	SetMode(ctx context.Context, subject string, m Mode) error
	// Close releases the store. It is safe to call more than once.
	Close() error
}

// Snapshot is the whole content of a Store.
type Snapshot struct {
	// Schemas maps every schema id ever assigned to its text.
	Schemas map[int]string
	// Subjects maps each subject to its versions, in ascending order of
	// version number (numbers may have gaps where versions were deleted
	// permanently).
	Subjects map[string][]StoredVersion
	// Compatibility holds the levels set so far: the key "" is the global
	// default, other keys are subjects.
	Compatibility map[string]Compatibility
	// Modes holds the modes set so far, keyed as Compatibility.
	Modes map[string]Mode
}

// StoredVersion is one version of a subject as a Store keeps it.
type StoredVersion struct {
	Version int
	ID      int
	// Deleted: the version was soft-deleted. It keeps its number (a new
	// version gets a higher one) and is shown only when asked for.
	Deleted bool
}

func newSnapshot() Snapshot {
	return Snapshot{Schemas: map[int]string{}, Subjects: map[string][]StoredVersion{}, Compatibility: map[string]Compatibility{}, Modes: map[string]Mode{}}
}

func (s Snapshot) clone() Snapshot {
	c := Snapshot{Schemas: maps.Clone(s.Schemas), Subjects: make(map[string][]StoredVersion, len(s.Subjects)),
		Compatibility: maps.Clone(s.Compatibility), Modes: maps.Clone(s.Modes)}
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
	if err := checkAdd(v, lastVersion(m.snap.Subjects[v.Subject]), m.snap.Schemas); err != nil {
		return err
	}
	m.snap.Schemas[v.ID] = v.Schema
	m.snap.Subjects[v.Subject] = append(m.snap.Subjects[v.Subject], StoredVersion{Version: v.Version, ID: v.ID})
	return nil
}

// lastVersion is the highest version number of vs, 0 for none.
func lastVersion(vs []StoredVersion) int {
	if len(vs) == 0 {
		return 0
	}
	return vs[len(vs)-1].Version
}

// checkAdd is AddVersion's conflict check, shared by the stores: v must be
// the next version of its subject (last is its highest) and must not
// change a stored schema.
func checkAdd(v SchemaVersion, last int, schemas map[int]string) error {
	if v.Version != last+1 {
		return fmt.Errorf("%w: subject %q's highest version is %d, cannot add version %d", ErrConflict, v.Subject, last, v.Version)
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
	delete(m.snap.Modes, subject)
	return nil
}

// DeleteVersions implements Store.
func (m *MemoryStore) DeleteVersions(_ context.Context, subject string, versions []int, permanent bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	vs := slices.Clone(m.snap.Subjects[subject])
	for i := range vs {
		if slices.Contains(versions, vs[i].Version) {
			vs[i].Deleted = true
		}
	}
	if permanent {
		vs = slices.DeleteFunc(vs, func(v StoredVersion) bool { return slices.Contains(versions, v.Version) })
	}
	if len(vs) == 0 {
		delete(m.snap.Subjects, subject)
	} else {
		m.snap.Subjects[subject] = vs
	}
	return nil
}

// SetMode implements Store.
func (m *MemoryStore) SetMode(_ context.Context, subject string, mode Mode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if mode == "" {
		delete(m.snap.Modes, subject)
	} else {
		m.snap.Modes[subject] = mode
	}
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
