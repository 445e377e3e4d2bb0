package schema

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
	subjects map[string][]StoredVersion
	levels   map[string]Compatibility
	modes    map[string]Mode
	nextID   int
}

// Include, passed to the reads that take it, widens what they show:
// WithDeleted includes soft-deleted versions (Confluent's ?deleted=true).
type Include int

// WithDeleted includes soft-deleted versions and subjects.
const WithDeleted Include = 1

func withDeleted(inc []Include) bool { return slices.Contains(inc, WithDeleted) }

// live returns the versions of vs that are not soft-deleted (all of them
// with deleted).
func live(vs []StoredVersion, deleted bool) []StoredVersion {
	if deleted {
		return vs
	}
	out := make([]StoredVersion, 0, len(vs))
	for _, v := range vs {
		if !v.Deleted {
			out = append(out, v)
		}
	}
	return out
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
		modes:    snap.Modes,
		nextID:   1,
	}
	if r.subjects == nil {
		r.subjects = map[string][]StoredVersion{}
	}
	if r.levels == nil {
		r.levels = map[string]Compatibility{}
	}
	if r.modes == nil {
		r.modes = map[string]Mode{}
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
	for subject, vs := range r.subjects {
		for _, v := range vs {
			if r.schemas[v.ID] == nil {
				return nil, fmt.Errorf("schema: load: subject %q version %d names schema id %d, which is not stored", subject, v.Version, v.ID)
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
// Soft-deleted versions are not compared with: registering the schema of
// a soft-deleted version makes a new version, with a higher number.
//
// Errors: ErrInvalidSubject, ErrMalformedSchema, ErrIncompatible,
// ErrReadOnly, or the Store's error.
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
	if err := r.writableLocked(subject); err != nil {
		r.mu.Unlock()
		return SchemaVersion{}, err
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
	v := SchemaVersion{Subject: subject, Version: lastVersion(r.subjects[subject]) + 1, ID: id, Schema: text}
	if err := r.store.AddVersion(ctx, v); err != nil {
		r.mu.Unlock()
		return SchemaVersion{}, err
	}
	if !known {
		r.schemas[id] = &storedSchema{id: id, text: text, p: p}
		r.byKey[p.key] = id
		r.nextID++
	}
	r.subjects[subject] = append(r.subjects[subject], StoredVersion{Version: v.Version, ID: id})
	r.mu.Unlock()

	if r.onChange != nil {
		r.onChange(subject)
	}
	return v, nil
}

// findLocked returns the live version of subject whose schema has key.
// mu held.
func (r *Registry) findLocked(subject string, key [32]byte) (SchemaVersion, bool) {
	id, ok := r.byKey[key]
	if !ok {
		return SchemaVersion{}, false
	}
	for _, v := range r.subjects[subject] {
		if v.ID == id && !v.Deleted {
			return r.versionOf(subject, v), true
		}
	}
	return SchemaVersion{}, false
}

// versionOf is v of subject as a SchemaVersion. mu held.
func (r *Registry) versionOf(subject string, v StoredVersion) SchemaVersion {
	return SchemaVersion{Subject: subject, Version: v.Version, ID: v.ID, Schema: r.schemas[v.ID].text}
}

// writableLocked refuses writes to subject in a read-only mode. mu held.
func (r *Registry) writableLocked(subject string) error {
	if m := r.modeLocked(subject); m.readOnly() {
		return fmt.Errorf("%w: subject %q is in mode %s; set the mode to READWRITE first (PUT /mode)", ErrReadOnly, subject, m)
	}
	return nil
}

// checkLocked checks p against subject's versions under mode: against
// version only if it is not 0, else against the latest version, or every
// version for a transitive mode. It returns the problems, none if
// compatible. mu held (shared is enough).
func (r *Registry) checkLocked(subject string, p parsed, mode Compatibility, version int) []string {
	vs := live(r.subjects[subject], false)
	if mode == CompatNone || len(vs) == 0 {
		return nil
	}
	against := vs[len(vs)-1:]
	switch {
	case version > 0:
		against = nil
		for _, v := range vs {
			if v.Version == version {
				against = []StoredVersion{v}
			}
		}
	case mode.transitive():
		against = slices.Clone(vs)
		slices.Reverse(against)
	}
	var msgs []string
	for _, v := range against {
		old := r.schemas[v.ID]
		if old.err != nil {
			msgs = append(msgs, fmt.Sprintf("version %d cannot be checked: its stored schema no longer parses: %v", v.Version, old.err))
			continue
		}
		msgs = append(msgs, checkPair(mode, p.schema, old.p.schema, v.Version)...)
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
	vs := live(r.subjects[subject], false)
	switch {
	case len(vs) == 0:
		return nil, fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	case version == Latest:
		version = 0
	default:
		if _, ok := findVersion(vs, version); !ok {
			return nil, fmt.Errorf("%w: subject %q has versions %s, not %d", ErrVersionNotFound, subject, versionList(vs), version)
		}
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
	if len(live(r.subjects[subject], false)) == 0 {
		return SchemaVersion{}, fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	}
	v, ok := r.findLocked(subject, p.key)
	if !ok {
		return SchemaVersion{}, fmt.Errorf("%w: subject %q has no version with this schema", ErrSchemaNotFound, subject)
	}
	return v, nil
}

// Subjects returns every subject with at least one version, sorted;
// WithDeleted counts soft-deleted versions too.
func (r *Registry) Subjects(inc ...Include) []string {
	deleted := withDeleted(inc)
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.subjects))
	for s, vs := range r.subjects {
		if len(live(vs, deleted)) > 0 {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// Versions returns the version numbers of subject, ascending (WithDeleted:
// soft-deleted ones too), or an error wrapping ErrSubjectNotFound.
func (r *Registry) Versions(subject string, inc ...Include) ([]int, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	vs := live(r.subjects[subject], withDeleted(inc))
	if len(vs) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	}
	out := make([]int, len(vs))
	for i, v := range vs {
		out[i] = v.Version
	}
	return out, nil
}

// Version returns one version of subject (Latest for the newest), or an
// error wrapping ErrSubjectNotFound or ErrVersionNotFound. A soft-deleted
// version is found only WithDeleted (Latest is then the newest of all).
func (r *Registry) Version(subject string, version int, inc ...Include) (SchemaVersion, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	vs := live(r.subjects[subject], withDeleted(inc))
	if len(vs) == 0 {
		return SchemaVersion{}, fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	}
	if version == Latest {
		return r.versionOf(subject, vs[len(vs)-1]), nil
	}
	v, ok := findVersion(vs, version)
	if !ok {
		return SchemaVersion{}, fmt.Errorf("%w: subject %q has versions %s, not %d", ErrVersionNotFound, subject, versionList(vs), version)
	}
	return r.versionOf(subject, v), nil
}

func findVersion(vs []StoredVersion, version int) (StoredVersion, bool) {
	for _, v := range vs {
		if v.Version == version {
			return v, true
		}
	}
	return StoredVersion{}, false
}

// versionList says which versions vs has: "1 to 3", "1, 4", "none".
func versionList(vs []StoredVersion) string {
	switch {
	case len(vs) == 0:
		return "none"
	case vs[len(vs)-1].Version-vs[0].Version == len(vs)-1 && len(vs) > 1:
		return fmt.Sprintf("%d to %d", vs[0].Version, vs[len(vs)-1].Version)
	}
	ns := make([]string, len(vs))
	for i, v := range vs {
		ns[i] = strconv.Itoa(v.Version)
	}
	return strings.Join(ns, ", ")
}

// SchemaByID returns the text of schema id, or an error wrapping
// ErrSchemaNotFound. Ids stay resolvable after their versions are
// deleted, soft or permanently.
func (r *Registry) SchemaByID(id int) (string, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.schemas[id]
	if !ok {
		return "", fmt.Errorf("%w: no schema with id %d", ErrSchemaNotFound, id)
	}
	return s.text, nil
}

// SubjectVersion names one version of one subject.
type SubjectVersion struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
}

// Usages returns the subject versions whose schema is id, by subject then
// version (WithDeleted: soft-deleted ones too), or an error wrapping
// ErrSchemaNotFound for an unknown id. An id every version of which was
// deleted has none.
func (r *Registry) Usages(id int, inc ...Include) ([]SubjectVersion, error) {
	deleted := withDeleted(inc)
	r.mu.RLock()
	defer r.mu.RUnlock()
	if _, ok := r.schemas[id]; !ok {
		return nil, fmt.Errorf("%w: no schema with id %d", ErrSchemaNotFound, id)
	}
	out := []SubjectVersion{}
	for subject, vs := range r.subjects {
		for _, v := range live(vs, deleted) {
			if v.ID == id {
				out = append(out, SubjectVersion{Subject: subject, Version: v.Version})
			}
		}
	}
	slices.SortFunc(out, func(a, b SubjectVersion) int {
		return cmp.Or(strings.Compare(a.Subject, b.Subject), a.Version-b.Version)
	})
	return out, nil
}

// AllVersions returns every version of every subject (WithDeleted:
// soft-deleted ones too), by subject then version: Confluent's GET
// /schemas.
func (r *Registry) AllVersions(inc ...Include) []SchemaVersion {
	deleted := withDeleted(inc)
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := []SchemaVersion{}
	for subject, vs := range r.subjects {
		for _, v := range live(vs, deleted) {
			out = append(out, r.versionOf(subject, v))
		}
	}
	slices.SortFunc(out, func(a, b SchemaVersion) int {
		return cmp.Or(strings.Compare(a.Subject, b.Subject), a.Version-b.Version)
	})
	return out
}

// TopicSchemas returns every live version of subject, what a sidecar's
// Validator needs for the topic, or an error wrapping ErrSubjectNotFound.
// Soft-deleted versions are left out: bodies written with them are no
// longer accepted.
func (r *Registry) TopicSchemas(subject string) (TopicSchemas, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	vs := live(r.subjects[subject], false)
	if len(vs) == 0 {
		return TopicSchemas{}, fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	}
	ts := TopicSchemas{Subject: subject, Versions: make([]SchemaVersion, len(vs))}
	for i, v := range vs {
		ts.Versions[i] = r.versionOf(subject, v)
	}
	return ts, nil
}

// DeleteSubject deletes every version of subject and returns their
// numbers. A soft delete (permanent false) marks the live versions
// deleted: they are no longer listed, validated against or compared with,
// their numbers are not given again, and their ids still resolve; a
// subject whose versions are all soft-deleted already is
// ErrSubjectSoftDeleted. A permanent delete needs every version
// soft-deleted first (else ErrSubjectNotSoftDeleted) and removes them,
// with the subject's own level and mode; registering to it again starts
// at version 1. The ids stay resolvable (SchemaByID) and are never given
// to another schema. Errors: also ErrSubjectNotFound, ErrReadOnly, or the
// Store's error.
func (r *Registry) DeleteSubject(ctx context.Context, subject string, permanent bool) ([]int, error) {
	r.mu.Lock()
	vs := r.subjects[subject]
	liveVs := live(vs, false)
	var err error
	switch {
	case len(vs) == 0:
		err = fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	case !permanent && len(liveVs) == 0:
		err = fmt.Errorf("%w: subject %q; delete it with ?permanent=true to remove it for good", ErrSubjectSoftDeleted, subject)
	case permanent && len(liveVs) > 0:
		err = fmt.Errorf("%w: subject %q has versions %s not soft-deleted; delete it without ?permanent=true first", ErrSubjectNotSoftDeleted, subject, versionList(liveVs))
	default:
		err = r.writableLocked(subject)
	}
	if err != nil {
		r.mu.Unlock()
		return nil, err
	}
	gone := liveVs
	if permanent {
		gone = vs
		err = r.store.DeleteSubject(ctx, subject)
	} else {
		err = r.store.DeleteVersions(ctx, subject, numbers(liveVs), false)
	}
	if err != nil {
		r.mu.Unlock()
		return nil, err
	}
	out := numbers(gone)
	if permanent {
		delete(r.subjects, subject)
		delete(r.levels, subject)
		delete(r.modes, subject)
	} else {
		r.subjects[subject] = markDeleted(vs, out)
	}
	r.mu.Unlock()

	if r.onChange != nil && !permanent {
		r.onChange(subject)
	}
	return out, nil
}

// DeleteVersion deletes one version of subject (Latest: the newest live
// one) and returns its number, soft or permanently as DeleteSubject does
// for all: a soft delete of a soft-deleted version is
// ErrVersionSoftDeleted, a permanent delete of a live one
// ErrVersionNotSoftDeleted. Errors: also ErrSubjectNotFound,
// ErrVersionNotFound, ErrReadOnly, or the Store's error.
func (r *Registry) DeleteVersion(ctx context.Context, subject string, version int, permanent bool) (int, error) {
	r.mu.Lock()
	vs := r.subjects[subject]
	var (
		v   StoredVersion
		ok  bool
		err error
	)
	if version == Latest {
		if l := live(vs, false); len(l) > 0 {
			v, ok = l[len(l)-1], true
		}
	} else {
		v, ok = findVersion(vs, version)
	}
	switch {
	case len(vs) == 0:
		err = fmt.Errorf("%w: %q", ErrSubjectNotFound, subject)
	case !ok:
		err = fmt.Errorf("%w: subject %q has versions %s, not %d", ErrVersionNotFound, subject, versionList(vs), version)
	case !permanent && v.Deleted:
		err = fmt.Errorf("%w: version %d of subject %q; delete it with ?permanent=true to remove it for good", ErrVersionSoftDeleted, v.Version, subject)
	case permanent && !v.Deleted:
		err = fmt.Errorf("%w: version %d of subject %q; delete it without ?permanent=true first", ErrVersionNotSoftDeleted, v.Version, subject)
	default:
		err = r.writableLocked(subject)
	}
	if err == nil {
		err = r.store.DeleteVersions(ctx, subject, []int{v.Version}, permanent)
	}
	if err != nil {
		r.mu.Unlock()
		return 0, err
	}
	if permanent {
		rest := slices.DeleteFunc(slices.Clone(vs), func(s StoredVersion) bool { return s.Version == v.Version })
		if len(rest) == 0 {
			delete(r.subjects, subject)
		} else {
			r.subjects[subject] = rest
		}
	} else {
		r.subjects[subject] = markDeleted(vs, []int{v.Version})
	}
	r.mu.Unlock()

	if r.onChange != nil && !permanent {
		r.onChange(subject)
	}
	return v.Version, nil
}

func numbers(vs []StoredVersion) []int {
	out := make([]int, len(vs))
	for i, v := range vs {
		out[i] = v.Version
	}
	return out
}

// markDeleted returns a copy of vs with the given versions soft-deleted.
func markDeleted(vs []StoredVersion, versions []int) []StoredVersion {
	out := slices.Clone(vs)
	for i := range out {
		if slices.Contains(versions, out[i].Version) {
			out[i].Deleted = true
		}
	}
	return out
}

// Mode returns the mode that applies to subject: a global
// READONLY_OVERRIDE, else its own, else the global one, else DefaultMode.
// Mode("") is the global mode.
func (r *Registry) Mode(subject string) Mode {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.modeLocked(subject)
}

func (r *Registry) modeLocked(subject string) Mode {
	global, ok := r.modes[""]
	if !ok {
		global = DefaultMode
	}
	if global == ModeReadOnlyOverride {
		return global
	}
	if m, ok := r.modes[subject]; ok {
		return m
	}
	return global
}

// SubjectMode returns subject's own mode, and false if it has none.
func (r *Registry) SubjectMode(subject string) (Mode, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.modes[subject]
	return m, ok
}

// SetMode sets subject's mode, or the global one when subject is "".
// Errors: ErrInvalidMode, ErrInvalidSubject, or the Store's error.
func (r *Registry) SetMode(ctx context.Context, subject string, m Mode) error {
	m, err := ParseMode(string(m))
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
	if err := r.store.SetMode(ctx, subject, m); err != nil {
		return err
	}
	r.modes[subject] = m
	return nil
}

// DeleteMode removes subject's own mode (the global one applies again),
// or resets the global mode to DefaultMode for subject "", and returns the
// mode it had; a subject without a mode of its own is ErrSubjectNotFound.
func (r *Registry) DeleteMode(ctx context.Context, subject string) (Mode, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.modes[subject]
	if !ok {
		if subject == "" {
			return DefaultMode, nil
		}
		return "", fmt.Errorf("%w: %q has no mode of its own", ErrSubjectNotFound, subject)
	}
	if err := r.store.SetMode(ctx, subject, ""); err != nil {
		return "", err
	}
	delete(r.modes, subject)
	return m, nil
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
