package schema

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Latest stands for the newest version of a subject wherever a version
// number is taken (Confluent also accepts -1 for "latest").
const Latest = -1

// SchemaVersion is one version of a subject. Its JSON form is Confluent's
// answer to GET /subjects/{subject}/versions/{version}.
type SchemaVersion struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
	ID      int    `json:"id"`
	Schema  string `json:"schema"`
}

// RegistryOptions configures New. The zero value is ready to use.
type RegistryOptions struct {
	// OnChange, if set, is called after a change to a subject's versions
	// is committed (a new version registered, the subject deleted), with
	// the subject's name, so that the control plane can push the new
	// TopicSchemas to the sidecars. It runs on the writer's goroutine
	// after the Registry's lock is released; it must not block for long.
	// Compatibility changes do not call it: they do not change what a
	// sidecar validates against.
	OnChange func(subject string)
}

// Registry is the schema registry: subjects (a subject is normally a topic
// name), versions 1..n per subject, globally unique schema ids, and a
// compatibility level per subject with a global default, checked before a
// new version is accepted.
//
// Everything is held in memory and written through to the Store before a
// method answers. A Registry is safe for concurrent use.
//
// Lock rule: mu guards every field below it. Writers hold it exclusively
// across their Store call, so changes reach the Store in the order they
// are applied in memory; readers hold it shared. OnChange is called with mu
// released. Schema parsing and compatibility checks of a new text happen
// before mu is taken where they can.
type Registry struct {
	store    Store
	onChange func(string)

	mu       sync.RWMutex
	schemas  map[int]*storedSchema
	byKey    map[[32]byte]int // normalised-text hash → id
	subjects map[string][]int // id of version n at index n-1
	levels   map[string]Compatibility
	nextID   int
}

// storedSchema is one schema id. Its text is parsed once, on load; a text
// that no longer parses (a stored schema a newer hamba/avro refuses) keeps
// its id and versions, and compatibility checks against it fail with err.
type storedSchema struct {
	id   int
	text string
	p    parsed
	err  error
}

// New loads the registry's content from store. The Registry does not own
// the store: close it after the last use of the Registry.
func New(ctx context.Context, store Store, opts RegistryOptions) (*Registry, error) {
	snap, err := store.Load(ctx)
	if err != nil {
		return nil, err
	}
	r := &Registry{
		store:    store,
		onChange: opts.OnChange,
		schemas:  make(map[int]*storedSchema, len(snap.Schemas)),
		byKey:    make(map[[32]byte]int, len(snap.Schemas)),
		subjects: snap.Subjects,
		levels:   snap.Compatibility,
		nextID:   1,
	}
	if r.subjects == nil {
		r.subjects = map[string][]int{}
	}
	if r.levels == nil {
		r.levels = map[string]Compatibility{}
	}
	for id, text := range snap.Schemas {
		s := &storedSchema{id: id, text: text}
		s.p, s.err = parseSchema(text)
		if s.err == nil {
			// Two ids with one key can only come from an older
			// normalisation; the lower id wins, as it would have then.
			if old, ok := r.byKey[s.p.key]; !ok || id < old {
				r.byKey[s.p.key] = id
			}
		}
		r.schemas[id] = s
		r.nextID = max(r.nextID, id+1)
	}
	for subject, ids := range r.subjects {
		for i, id := range ids {
			if r.schemas[id] == nil {
				return nil, fmt.Errorf("schema: load: subject %q version %d names schema id %d, which is not stored", subject, i+1, id)
			}
		}
	}
	return r, nil
}

// Register adds schema as the next version of subject and returns it. If
// the subject already has a version whose schema is the same (equal after
// normalisation: whitespace, key order and namespace spelling do not
// matter; defaults, aliases and docs do), that version is returned and
// nothing changes. A schema already registered under another subject keeps
// its id. Otherwise the schema must pass the subject's compatibility level
// against the latest version (every version for the _TRANSITIVE levels),
// or Register returns an *IncompatibleError.
//
// Errors: ErrInvalidSubject, ErrMalformedSchema, ErrIncompatible, or the
// Store's error.
func (r *Registry) Register(ctx context.Context, subject, schema string) (SchemaVersion, error) {
	if err := ValidateSubject(subject); err != nil {
		return SchemaVersion{}, err
	}
	p, err := parseSchema(schema)
	if err != nil {
		return SchemaVersion{}, err
	}

	r.mu.Lock()
	if v, ok := r.findLocked(subject, p.key); ok {
		r.mu.Unlock()
		return v, nil
	}
	mode := r.compatibilityLocked(subject)
	if msgs := r.checkLocked(subject, p, mode, 0); len(msgs) > 0 {
		r.mu.Unlock()
		return SchemaVersion{}, &IncompatibleError{Subject: subject, Mode: mode, Messages: msgs}
	}
	id, known := r.byKey[p.key]
	text := schema
	if known {
		text = r.schemas[id].text
	} else {
		id = r.nextID
	}
	v := SchemaVersion{Subject: subject, Version: len(r.subjects[subject]) + 1, ID: id, Schema: text}
	if err := r.store.AddVersion(ctx, v); err != nil {
		r.mu.Unlock()
		return SchemaVersion{}, err
	}
	if !known {
		r.schemas[id] = &storedSchema{id: id, text: text, p: p}
		r.byKey[p.key] = id
		r.nextID++
	}
	r.subjects[subject] = append(r.subjects[subject], id)
	r.mu.Unlock()

	if r.onChange != nil {
		r.onChange(subject)
	}
	return v, nil
}

// findLocked returns the version of subject whose schema has key. mu held.
func (r *Registry) findLocked(subject string, key [32]byte) (SchemaVersion, bool) {
	id, ok := r.byKey[key]
	if !ok {
		return SchemaVersion{}, false
	}
	for i, vid := range r.subjects[subject] {
		if vid == id {
			return SchemaVersion{Subject: subject, Version: i + 1, ID: id, Schema: r.schemas[id].text}, true
		}
	}
	return SchemaVersion{}, false
}

// checkLocked checks p against subject's versions under mode: against
// version only if it is not 0, else against the latest version, or every
// version for a transitive mode. It returns the problems, none if
// compatible. mu held (shared is enough).
func (r *Registry) checkLocked(subject string, p parsed, mode Compatibility, version int) []string {
	ids := r.subjects[subject]
	if mode == CompatNone || len(ids) == 0 {
		return nil
	}
	versions := []int{len(ids)}
	switch {
	case version > 0:
		versions = []int{version}
	case mode.transitive():
		versions = versions[:0]
		for v := len(ids); v >= 1; v-- {
			versions = append(versions, v)
		}
	}
	var msgs []string
	for _, v := range versions {
		old := r.schemas[ids[v-1]]
		if old.err != nil {
			msgs = append(msgs, fmt.Sprintf("version %d cannot be checked: its stored schema no longer parses: %v", v, old.err))
			continue
		}
		msgs = append(msgs, checkPair(mode, p.schema, old.p.schema, v)...)
	}
	return msgs
}

// CheckCompatibility is the dry run of Register: it returns what would
// make Register refuse schema, nothing if it would accept it. With version
// Latest it checks exactly what Register checks (the latest version, or
// every version for a transitive level); with a version number it checks
// that version only, in the level's directions. A schema identical to an
// existing version is compatible (Register would return that version).
//
// Errors: ErrInvalidSubject, ErrMalformedSchema, ErrSubjectNotFound,
// ErrVersionNotFound.
func (r *Registry) CheckCompatibility(subject, schema string, version int) ([]string, error) {
	if err := ValidateSubject(subject); err != nil {
		return nil, err
	}
	p, err := parseSchema(schema)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := r.subjects[subject]
	switch {
	case len(ids) == 0:
		return nil, fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	case version == Latest:
		version = 0
	case version < 1 || version > len(ids):
		return nil, fmt.Errorf("%w: subject %q has versions 1 to %d, not %d", ErrVersionNotFound, subject, len(ids), version)
	}
	if _, ok := r.findLocked(subject, p.key); ok && version == 0 {
		return nil, nil
	}
	return r.checkLocked(subject, p, r.compatibilityLocked(subject), version), nil
}

// Lookup returns the version of subject whose schema is the same as schema
// (as Register compares them), or an error wrapping ErrSubjectNotFound or
// ErrSchemaNotFound.
func (r *Registry) Lookup(subject, schema string) (SchemaVersion, error) {
	p, err := parseSchema(schema)
	if err != nil {
		return SchemaVersion{}, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.subjects[subject]) == 0 {
		return SchemaVersion{}, fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	}
	v, ok := r.findLocked(subject, p.key)
	if !ok {
		return SchemaVersion{}, fmt.Errorf("%w: subject %q has no version with this schema", ErrSchemaNotFound, subject)
	}
	return v, nil
}

// Subjects returns every subject with at least one version, sorted.
func (r *Registry) Subjects() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.subjects))
	for s, ids := range r.subjects {
		if len(ids) > 0 {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// Versions returns the version numbers of subject (1..n), or an error
// wrapping ErrSubjectNotFound.
func (r *Registry) Versions(subject string) ([]int, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := len(r.subjects[subject])
	if n == 0 {
		return nil, fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	}
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out, nil
}

// Version returns one version of subject (Latest for the newest), or an
// error wrapping ErrSubjectNotFound or ErrVersionNotFound.
func (r *Registry) Version(subject string, version int) (SchemaVersion, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := r.subjects[subject]
	if len(ids) == 0 {
		return SchemaVersion{}, fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	}
	if version == Latest {
		version = len(ids)
	}
	if version < 1 || version > len(ids) {
		return SchemaVersion{}, fmt.Errorf("%w: subject %q has versions 1 to %d, not %d", ErrVersionNotFound, subject, len(ids), version)
	}
	id := ids[version-1]
	return SchemaVersion{Subject: subject, Version: version, ID: id, Schema: r.schemas[id].text}, nil
}

// SchemaByID returns the text of schema id, or an error wrapping
// ErrSchemaNotFound. Ids stay resolvable after their subjects are deleted.
func (r *Registry) SchemaByID(id int) (string, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.schemas[id]
	if !ok {
		return "", fmt.Errorf("%w: no schema with id %d", ErrSchemaNotFound, id)
	}
	return s.text, nil
}

// TopicSchemas returns every version of subject, what a sidecar's
// Validator needs for the topic, or an error wrapping ErrSubjectNotFound.
func (r *Registry) TopicSchemas(subject string) (TopicSchemas, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := r.subjects[subject]
	if len(ids) == 0 {
		return TopicSchemas{}, fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	}
	ts := TopicSchemas{Subject: subject, Versions: make([]SchemaVersion, len(ids))}
	for i, id := range ids {
		ts.Versions[i] = SchemaVersion{Subject: subject, Version: i + 1, ID: id, Schema: r.schemas[id].text}
	}
	return ts, nil
}

// DeleteSubject removes every version of subject and its own
// compatibility level, and returns the version numbers it had. The schema
// ids stay resolvable (SchemaByID) and are never given to another schema;
// registering to the subject again starts at version 1. Errors:
// ErrSubjectNotFound, or the Store's error.
func (r *Registry) DeleteSubject(ctx context.Context, subject string) ([]int, error) {
	r.mu.Lock()
	n := len(r.subjects[subject])
	if n == 0 {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	}
	if err := r.store.DeleteSubject(ctx, subject); err != nil {
		r.mu.Unlock()
		return nil, err
	}
	delete(r.subjects, subject)
	delete(r.levels, subject)
	r.mu.Unlock()

	if r.onChange != nil {
		r.onChange(subject)
	}
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out, nil
}

// Compatibility returns the level that applies to subject: its own, else
// the global default. Compatibility("") is the global default.
func (r *Registry) Compatibility(subject string) Compatibility {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.compatibilityLocked(subject)
}

func (r *Registry) compatibilityLocked(subject string) Compatibility {
	if c, ok := r.levels[subject]; ok {
		return c
	}
	if c, ok := r.levels[""]; ok {
		return c
	}
	return DefaultCompatibility
}

// SubjectCompatibility returns subject's own level, and false if it has
// none (the global default applies).
func (r *Registry) SubjectCompatibility(subject string) (Compatibility, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := r.levels[subject]
	return c, ok
}

// SetCompatibility sets subject's level, or the global default when
// subject is "". A subject may get a level before it has versions. Errors:
// ErrInvalidCompatibility, ErrInvalidSubject, or the Store's error.
func (r *Registry) SetCompatibility(ctx context.Context, subject string, c Compatibility) error {
	c, err := ParseCompatibility(string(c))
	if err != nil {
		return err
	}
	if subject != "" {
		if err := ValidateSubject(subject); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.store.SetCompatibility(ctx, subject, c); err != nil {
		return err
	}
	r.levels[subject] = c
	return nil
}

// DeleteCompatibility removes subject's own level, so that the global
// default applies to it again, and returns the level it had; or an error
// wrapping ErrSubjectNotFound if it had none.
func (r *Registry) DeleteCompatibility(ctx context.Context, subject string) (Compatibility, error) {
	if subject == "" {
		return "", fmt.Errorf("%w: the global level cannot be deleted, only set", ErrInvalidSubject)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.levels[subject]
	if !ok {
		return "", fmt.Errorf("%w: %q has no compatibility level of its own", ErrSubjectNotFound, subject)
	}
	if err := r.store.SetCompatibility(ctx, subject, ""); err != nil {
		return "", err
	}
	delete(r.levels, subject)
	return c, nil
}
