package schema

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

const userV1 = `{"type": "record", "name": "User", "namespace": "com.acme", "fields": [
  {"name": "id", "type": "long"},
  {"name": "name", "type": "string"}
]}`

// user returns the User record with extra fields appended (JSON field
// definitions) and the named fields left out.
func user(extra string, drop ...string) string {
	fields := []string{`{"name": "id", "type": "long"}`, `{"name": "name", "type": "string"}`}
	if slices.Contains(drop, "id") {
		fields = slices.DeleteFunc(fields, func(f string) bool { return strings.Contains(f, `"id"`) })
	}
	if slices.Contains(drop, "name") {
		fields = slices.DeleteFunc(fields, func(f string) bool { return strings.Contains(f, `"name": "name"`) })
	}
	if extra != "" {
		fields = append(fields, extra)
	}
	return `{"type": "record", "name": "User", "namespace": "com.acme", "fields": [` + strings.Join(fields, ", ") + `]}`
}

func newRegistry(t *testing.T) *Registry {
	t.Helper()
	r, err := New(context.Background(), NewMemoryStore(), RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustRegister(t *testing.T, r *Registry, subject, schema string) SchemaVersion {
	t.Helper()
	v, err := r.Register(context.Background(), subject, schema)
	if err != nil {
		t.Fatalf("Register(%s): %v", subject, err)
	}
	return v
}

func TestCompatibilityModes(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		mode     Compatibility
		versions []string // registered first, in order
		next     string
		messages []string // substrings of the one message; none: accepted
	}{
		{"backward: add a field without default", CompatBackward, []string{userV1}, user(`{"name": "email", "type": "string"}`),
			[]string{`the new schema cannot read data written with version 1: at email: field "email" of record com.acme.User is in the new schema without a default, and version 1 does not have it`}},
		{"backward: add a field with default", CompatBackward, []string{userV1}, user(`{"name": "email", "type": "string", "default": ""}`), nil},
		{"backward: remove a field", CompatBackward, []string{userV1}, user("", "name"), nil},
		{"backward: promote int to long", CompatBackward, []string{user(`{"name": "n", "type": "int"}`)}, user(`{"name": "n", "type": "long"}`), nil},
		{"backward: narrow long to int", CompatBackward, []string{userV1}, user(`{"name": "id", "type": "int"}`, "id"),
			[]string{"at id: type int in the new schema cannot read type long in version 1"}},
		{"backward: nested field", CompatBackward,
			[]string{user(`{"name": "address", "type": {"type": "record", "name": "Address", "fields": [{"name": "street", "type": "string"}]}}`)},
			user(`{"name": "address", "type": {"type": "record", "name": "Address", "fields": [{"name": "street", "type": "string"}, {"name": "zip", "type": "string"}]}}`),
			[]string{`at address.zip: field "zip" of record com.acme.Address is in the new schema without a default`}},
		{"backward: field in an array of records", CompatBackward,
			[]string{user(`{"name": "tags", "type": {"type": "array", "items": {"type": "record", "name": "Tag", "fields": [{"name": "k", "type": "string"}]}}}`)},
			user(`{"name": "tags", "type": {"type": "array", "items": {"type": "record", "name": "Tag", "fields": [{"name": "k", "type": "int"}]}}}`),
			[]string{"at tags[].k: type int in the new schema cannot read type string in version 1"}},
		{"backward: remove an enum symbol", CompatBackward,
			[]string{user(`{"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["A", "B", "C"]}}`)},
			user(`{"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["A", "B"]}}`),
			[]string{"at s: enum com.acme.S in the new schema lacks symbol(s) C that version 1 can write, and has no default symbol"}},
		{"backward: rename a record", CompatBackward, []string{userV1}, strings.Replace(userV1, `"User"`, `"Person"`, 1),
			[]string{"at the top level: named type com.acme.Person in the new schema does not match com.acme.User in version 1"}},
		{"backward: rename with an alias", CompatBackward, []string{userV1}, strings.Replace(userV1, `"name": "User",`, `"name": "Person", "aliases": ["com.acme.User"],`, 1), nil},
		{"forward: remove a field without default", CompatForward, []string{userV1}, user("", "name"),
			[]string{`version 1 cannot read data written with the new schema: at name: field "name" of record com.acme.User is in version 1 without a default, and the new schema does not have it`}},
		{"forward: add a field without default", CompatForward, []string{userV1}, user(`{"name": "email", "type": "string"}`), nil},
		{"forward: add an enum symbol", CompatForward,
			[]string{user(`{"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["A"]}}`)},
			user(`{"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["A", "B"]}}`),
			[]string{"enum com.acme.S in version 1 lacks symbol(s) B that the new schema can write"}},
		{"forward: widen a union", CompatForward,
			[]string{user(`{"name": "u", "type": ["null", "string"]}`)},
			user(`{"name": "u", "type": ["null", "string", "long"]}`),
			[]string{"at u: version 1 has a union [null, string] with no branch that can read the new schema's long"}},
		{"full: add a field without default", CompatFull, []string{userV1}, user(`{"name": "email", "type": "string"}`),
			[]string{"the new schema cannot read data written with version 1"}},
		{"full: add a field with default", CompatFull, []string{userV1}, user(`{"name": "email", "type": "string", "default": ""}`), nil},
		{"full: remove a field without default", CompatFull, []string{userV1}, user("", "name"),
			[]string{"version 1 cannot read data written with the new schema"}},
		{"none: anything", CompatNone, []string{userV1}, `"string"`, nil},
		// v2 adds b with a default, v3 drops the default: v3 can read v2
		// data but not v1 data.
		{"backward: only the latest", CompatBackward,
			[]string{userV1, user(`{"name": "b", "type": "string", "default": "x"}`)}, user(`{"name": "b", "type": "string"}`), nil},
		{"backward transitive: every version", CompatBackwardTransitive,
			[]string{userV1, user(`{"name": "b", "type": "string", "default": "x"}`)}, user(`{"name": "b", "type": "string"}`),
			[]string{`the new schema cannot read data written with version 1: at b: field "b"`}},
		{"forward transitive", CompatForwardTransitive,
			[]string{userV1, user(`{"name": "email", "type": "string", "default": ""}`)}, user("", "name"),
			[]string{"version 1 cannot read data written with the new schema: at name"}},
		{"full transitive", CompatFullTransitive,
			[]string{userV1, user(`{"name": "b", "type": "string", "default": "x"}`)}, user(`{"name": "b", "type": "string"}`),
			[]string{"the new schema cannot read data written with version 1: at b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRegistry(t)
			if err := r.SetCompatibility(ctx, "users", tt.mode); err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.versions {
				// Register the history under NONE, then check under the mode.
				if err := r.SetCompatibility(ctx, "users", CompatNone); err != nil {
					t.Fatal(err)
				}
				mustRegister(t, r, "users", s)
			}
			if err := r.SetCompatibility(ctx, "users", tt.mode); err != nil {
				t.Fatal(err)
			}

			msgs, err := r.CheckCompatibility("users", tt.next, Latest)
			if err != nil {
				t.Fatalf("CheckCompatibility: %v", err)
			}
			v, err := r.Register(ctx, "users", tt.next)
			if tt.messages == nil {
				if err != nil || len(msgs) != 0 {
					t.Fatalf("Register = %v, CheckCompatibility = %q; want accepted", err, msgs)
				}
				if v.Version != len(tt.versions)+1 {
					t.Fatalf("version %d, want %d", v.Version, len(tt.versions)+1)
				}
				return
			}
			var ie *IncompatibleError
			if !errors.As(err, &ie) || !errors.Is(err, ErrIncompatible) {
				t.Fatalf("Register = %+v, %v; want an *IncompatibleError", v, err)
			}
			if ie.Subject != "users" || ie.Mode != tt.mode || !reflect.DeepEqual(ie.Messages, msgs) {
				t.Errorf("IncompatibleError %+v, CheckCompatibility %q", ie, msgs)
			}
			for _, want := range tt.messages {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\nwant it to contain %q", err, want)
				}
			}
			if got, _ := r.Versions("users"); len(got) != len(tt.versions) {
				t.Errorf("versions after a refusal: %v", got)
			}
		})
	}
}

// TestExplainAgreesWithHamba checks that every refusal above was explained
// by the path-aware walker, not by hamba/avro's fallback message.
func TestExplainAgreesWithHamba(t *testing.T) {
	pairs := [][2]string{
		{user(`{"name": "email", "type": "string"}`), userV1},
		{user(`{"name": "u", "type": ["null", "string"]}`), user(`{"name": "u", "type": ["null", "string", "long"]}`)},
		{user(`{"name": "f", "type": {"type": "fixed", "name": "F", "size": 4}}`), user(`{"name": "f", "type": {"type": "fixed", "name": "F", "size": 8}}`)},
		{user(`{"name": "m", "type": {"type": "map", "values": "int"}}`), user(`{"name": "m", "type": {"type": "map", "values": "string"}}`)},
		{`["null", "int"]`, `"string"`},
		{`"int"`, `["int", "string"]`},
	}
	for _, p := range pairs {
		reader, writer := mustParse(t, p[0]), mustParse(t, p[1])
		msgs := checkPair(CompatBackward, reader, writer, 1)
		if len(msgs) != 1 || !strings.Contains(msgs[0], ": at ") {
			t.Errorf("reader %s, writer %s: %q; want one path-aware message", p[0], p[1], msgs)
		}
	}
}

func TestRegistry(t *testing.T) {
	ctx := context.Background()
	var changed []string
	var mu sync.Mutex
	r, err := New(ctx, NewMemoryStore(), RegistryOptions{OnChange: func(s string) {
		mu.Lock()
		defer mu.Unlock()
		changed = append(changed, s)
	}})
	if err != nil {
		t.Fatal(err)
	}

	v1 := mustRegister(t, r, "users", userV1)
	if want := (SchemaVersion{Subject: "users", Version: 1, ID: 1, Schema: userV1}); v1 != want {
		t.Fatalf("first version %+v, want %+v", v1, want)
	}
	// The same schema spelled differently is the same version.
	respelled := `{"namespace":"com.acme","name":"User","type":"record","fields":[{"type":"long","name":"id"},{"name":"name","type":"string"}]}`
	if again := mustRegister(t, r, "users", respelled); again != v1 {
		t.Fatalf("identical schema: %+v, want %+v", again, v1)
	}
	if again := mustRegister(t, r, "users", `{"type":"record","name":"com.acme.User","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"}]}`); again != v1 {
		t.Fatalf("full name instead of namespace: %+v, want %+v", again, v1)
	}
	v2 := mustRegister(t, r, "users", user(`{"name": "email", "type": "string", "default": ""}`))
	if v2.Version != 2 || v2.ID != 2 {
		t.Fatalf("second version %+v", v2)
	}
	// A changed default is a new version.
	v3 := mustRegister(t, r, "users", user(`{"name": "email", "type": "string", "default": "none"}`))
	if v3.Version != 3 || v3.ID != 3 {
		t.Fatalf("changed default: %+v, want version 3, id 3", v3)
	}
	// Re-registering an older version returns it, not a new one.
	if again := mustRegister(t, r, "users", userV1); again != v1 {
		t.Fatalf("older version again: %+v", again)
	}
	// The same schema under another subject keeps its id.
	other := mustRegister(t, r, "admins", respelled)
	if other.ID != 1 || other.Version != 1 || other.Schema != userV1 {
		t.Fatalf("same schema in another subject: %+v, want id 1 version 1", other)
	}

	if got := r.Subjects(); !reflect.DeepEqual(got, []string{"admins", "users"}) {
		t.Errorf("Subjects = %v", got)
	}
	if got, _ := r.Versions("users"); !reflect.DeepEqual(got, []int{1, 2, 3}) {
		t.Errorf("Versions = %v", got)
	}
	if got, _ := r.Version("users", Latest); got != v3 {
		t.Errorf("Version(latest) = %+v", got)
	}
	if got, _ := r.Version("users", 2); got != v2 {
		t.Errorf("Version(2) = %+v", got)
	}
	if got, _ := r.SchemaByID(2); got != v2.Schema {
		t.Errorf("SchemaByID(2) = %q", got)
	}
	if got, _ := r.Lookup("users", respelled); got != v1 {
		t.Errorf("Lookup = %+v", got)
	}
	ts, err := r.TopicSchemas("users")
	if err != nil || !reflect.DeepEqual(ts, TopicSchemas{Subject: "users", Versions: []SchemaVersion{v1, v2, v3}}) {
		t.Errorf("TopicSchemas = %+v, %v", ts, err)
	}

	for _, c := range []struct {
		err  error
		want error
	}{
		{second(r.Versions("nobody")), ErrSubjectNotFound},
		{second(r.Version("nobody", 1)), ErrSubjectNotFound},
		{second(r.Version("users", 4)), ErrVersionNotFound},
		{second(r.Version("users", 0)), ErrVersionNotFound},
		{second(r.SchemaByID(99)), ErrSchemaNotFound},
		{second(r.Lookup("users", `"string"`)), ErrSchemaNotFound},
		{second(r.Lookup("nobody", `"string"`)), ErrSubjectNotFound},
		{second(r.TopicSchemas("nobody")), ErrSubjectNotFound},
		{second(r.CheckCompatibility("nobody", `"string"`, Latest)), ErrSubjectNotFound},
		{second(r.CheckCompatibility("users", `"string"`, 7)), ErrVersionNotFound},
		{second(r.Register(ctx, "", userV1)), ErrInvalidSubject},
		{second(r.Register(ctx, "a\nb", userV1)), ErrInvalidSubject},
		{second(r.Register(ctx, strings.Repeat("a", 256), userV1)), ErrInvalidSubject},
		{second(r.Register(ctx, "users", `{"type": "record", "name": "X"}`)), ErrMalformedSchema},
		{second(r.Register(ctx, "users", `not json`)), ErrMalformedSchema},
		{second(r.Register(ctx, "users", ``)), ErrMalformedSchema},
		{second(r.Register(ctx, "users", strings.Repeat(" ", MaxSchemaSize+1))), ErrMalformedSchema},
		{second(r.DeleteSubject(ctx, "nobody", false)), ErrSubjectNotFound},
		{r.SetCompatibility(ctx, "", "SIDEWAYS"), ErrInvalidCompatibility},
		{second(r.DeleteCompatibility(ctx, "users")), ErrSubjectNotFound},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("got %v, want %v", c.err, c.want)
		}
	}

	// A named type of one subject's schema does not leak into another's.
	mustRegister(t, r, "money", `{"type": "record", "name": "Money", "namespace": "com.x", "fields": [{"name": "cents", "type": "long"}]}`)
	_, err = r.Register(ctx, "prices", `{"type": "record", "name": "Price", "fields": [{"name": "m", "type": "com.x.Money"}]}`)
	if !errors.Is(err, ErrMalformedSchema) || !strings.Contains(err.Error(), "com.x.Money") {
		t.Errorf("a type from another schema: %v, want ErrMalformedSchema naming com.x.Money", err)
	}

	// Compatibility levels.
	if c := r.Compatibility("users"); c != CompatBackward {
		t.Errorf("default level %s", c)
	}
	if err := r.SetCompatibility(ctx, "", "full"); err != nil {
		t.Fatal(err)
	}
	if err := r.SetCompatibility(ctx, "users", CompatNone); err != nil {
		t.Fatal(err)
	}
	if c := r.Compatibility("users"); c != CompatNone {
		t.Errorf("subject level %s", c)
	}
	if c := r.Compatibility("admins"); c != CompatFull {
		t.Errorf("global level %s", c)
	}
	if c, ok := r.SubjectCompatibility("admins"); ok {
		t.Errorf("admins has level %s of its own", c)
	}
	if c, err := r.DeleteCompatibility(ctx, "users"); err != nil || c != CompatNone {
		t.Errorf("DeleteCompatibility = %s, %v", c, err)
	}
	if c := r.Compatibility("users"); c != CompatFull {
		t.Errorf("after delete: %s", c)
	}

	// Deleting a subject keeps its ids; ids are never reused. A soft
	// delete comes first, then the permanent one.
	if _, err := r.DeleteSubject(ctx, "users", true); !errors.Is(err, ErrSubjectNotSoftDeleted) {
		t.Fatalf("permanent delete first: %v", err)
	}
	if versions, err := r.DeleteSubject(ctx, "users", false); err != nil || !reflect.DeepEqual(versions, []int{1, 2, 3}) {
		t.Fatalf("DeleteSubject = %v, %v", versions, err)
	}
	if versions, err := r.DeleteSubject(ctx, "users", true); err != nil || !reflect.DeepEqual(versions, []int{1, 2, 3}) {
		t.Fatalf("permanent DeleteSubject = %v, %v", versions, err)
	}
	if _, err := r.Versions("users"); !errors.Is(err, ErrSubjectNotFound) {
		t.Errorf("after delete: %v", err)
	}
	if text, err := r.SchemaByID(3); err != nil || text != v3.Schema {
		t.Errorf("SchemaByID(3) after delete = %q, %v", text, err)
	}
	if again := mustRegister(t, r, "users", v3.Schema); again.Version != 1 || again.ID != 3 {
		t.Errorf("re-registered after delete: %+v, want version 1 id 3", again)
	}
	if fresh := mustRegister(t, r, "fresh", `"string"`); fresh.ID != 5 {
		t.Errorf("new schema after delete got id %d, want 5", fresh.ID)
	}

	mu.Lock()
	defer mu.Unlock()
	want := []string{"users", "users", "users", "admins", "money", "users", "users", "fresh"}
	if !reflect.DeepEqual(changed, want) {
		t.Errorf("OnChange calls %v, want %v", changed, want)
	}
}

func second[T any](_ T, err error) error { return err }

// TestRegistryStoreFailure: a write the store refuses changes nothing.
func TestRegistryStoreFailure(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	r, err := New(ctx, store, RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, "users", userV1)
	_ = store.Close()
	if _, err := r.Register(ctx, "users", user(`{"name": "e", "type": "string", "default": ""}`)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register on a closed store: %v", err)
	}
	if _, err := r.DeleteSubject(ctx, "users", false); !errors.Is(err, ErrClosed) {
		t.Fatalf("DeleteSubject on a closed store: %v", err)
	}
	if err := r.SetCompatibility(ctx, "users", CompatNone); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetCompatibility on a closed store: %v", err)
	}
	if got, _ := r.Versions("users"); !reflect.DeepEqual(got, []int{1}) {
		t.Errorf("versions %v", got)
	}
	if c := r.Compatibility("users"); c != CompatBackward {
		t.Errorf("level %s", c)
	}
	// The next id is still 2.
	r2, _ := New(ctx, NewMemoryStore(), RegistryOptions{})
	mustRegister(t, r2, "x", `"int"`)
	if v := mustRegister(t, r2, "y", `"long"`); v.ID != 2 {
		t.Errorf("id %d", v.ID)
	}
}

func TestRegistryConcurrent(t *testing.T) {
	ctx := context.Background()
	r := newRegistry(t)
	if err := r.SetCompatibility(ctx, "", CompatNone); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				schema := user(`{"name": "f` + string(rune('a'+i)) + `", "type": "int", "default": 0}`)
				if _, err := r.Register(ctx, "s", schema); err != nil {
					t.Errorf("goroutine %d: %v", g, err)
				}
				_, _ = r.TopicSchemas("s")
				_, _ = r.CheckCompatibility("s", schema, Latest)
			}
		})
	}
	wg.Wait()
	// 20 distinct schemas, each registered once however many goroutines
	// tried.
	if got, _ := r.Versions("s"); len(got) != 20 {
		t.Errorf("%d versions, want 20", len(got))
	}
}

func TestBoltStoreSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "schemas.db")
	store, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(ctx, store, RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v1 := mustRegister(t, r, "users", userV1)
	v2 := mustRegister(t, r, "users", user(`{"name": "email", "type": "string", "default": ""}`))
	mustRegister(t, r, "gone", `"string"`)
	mustRegister(t, r, "admins", userV1)
	if err := r.SetCompatibility(ctx, "", CompatFull); err != nil {
		t.Fatal(err)
	}
	if err := r.SetCompatibility(ctx, "users", CompatForwardTransitive); err != nil {
		t.Fatal(err)
	}
	if err := r.SetCompatibility(ctx, "gone", CompatNone); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DeleteSubject(ctx, "gone", false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DeleteSubject(ctx, "gone", true); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DeleteVersion(ctx, "admins", 1, false); err != nil {
		t.Fatal(err)
	}
	if err := r.SetMode(ctx, "admins", ModeReadOnly); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := store.Load(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Load after Close: %v", err)
	}

	store, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	snap, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := Snapshot{
		Schemas:       map[int]string{1: userV1, 2: v2.Schema, 3: `"string"`},
		Subjects:      map[string][]StoredVersion{"users": {{1, 1, false}, {2, 2, false}}, "admins": {{1, 1, true}}},
		Compatibility: map[string]Compatibility{"": CompatFull, "users": CompatForwardTransitive},
		Modes:         map[string]Mode{"admins": ModeReadOnly},
	}
	if !reflect.DeepEqual(snap, want) {
		t.Fatalf("reloaded %+v\nwant     %+v", snap, want)
	}
	r, err = New(ctx, store, RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Version("users", 1); got != v1 {
		t.Errorf("version 1 after reopen: %+v", got)
	}
	if again := mustRegister(t, r, "users", userV1); again != v1 {
		t.Errorf("identical after reopen: %+v", again)
	}
	if v := mustRegister(t, r, "gone", `"int"`); v.ID != 4 || v.Version != 1 {
		t.Errorf("new schema after reopen: %+v, want id 4 version 1", v)
	}
	if c := r.Compatibility("users"); c != CompatForwardTransitive {
		t.Errorf("level after reopen %s", c)
	}
}

func TestStoreConflicts(t *testing.T) {
	ctx := context.Background()
	bolt, err := OpenBoltStore(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	for name, s := range map[string]Store{"memory": NewMemoryStore(), "bolt": bolt} {
		t.Run(name, func(t *testing.T) {
			v := SchemaVersion{Subject: "a", Version: 1, ID: 1, Schema: `"int"`}
			if err := s.AddVersion(ctx, v); err != nil {
				t.Fatal(err)
			}
			if err := s.AddVersion(ctx, v); !errors.Is(err, ErrConflict) {
				t.Errorf("same version twice: %v", err)
			}
			if err := s.AddVersion(ctx, SchemaVersion{Subject: "a", Version: 3, ID: 2, Schema: `"x"`}); !errors.Is(err, ErrConflict) {
				t.Errorf("version gap: %v", err)
			}
			if err := s.AddVersion(ctx, SchemaVersion{Subject: "b", Version: 1, ID: 1, Schema: `"long"`}); !errors.Is(err, ErrConflict) {
				t.Errorf("id with another text: %v", err)
			}
			if err := s.AddVersion(ctx, SchemaVersion{Subject: "b", Version: 1, ID: 1, Schema: `"int"`}); err != nil {
				t.Errorf("shared id: %v", err)
			}
			if err := s.DeleteSubject(ctx, "nobody"); err != nil {
				t.Errorf("delete a missing subject: %v", err)
			}
			snap, _ := s.Load(ctx)
			if !reflect.DeepEqual(snap.Subjects, map[string][]StoredVersion{"a": {{1, 1, false}}, "b": {{1, 1, false}}}) || len(snap.Schemas) != 1 {
				t.Errorf("snapshot %+v", snap)
			}
		})
	}
}

func TestBoltStoreLocked(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 2 s lock timeout")
	}
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := OpenBoltStore(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}
