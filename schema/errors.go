package schema

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/msgmesh/msgmesh/internal/boltfile"
)

// Sentinel errors. Callers branch on them with errors.Is; the HTTP handler
// maps each to one Confluent error code (errorCode in http.go).
var (
	// ErrSchemaInvalid: a message body does not match its topic's schema
	// (or cannot be matched to one: wrong framing, unknown schema id). The
	// error is a *ValidationError that says where and why.
	ErrSchemaInvalid = errors.New("schema: message does not match the schema")

	// ErrMalformedSchema: a schema text is not a valid Avro schema, or uses
	// something msgmesh does not support (schema references, a schema type
	// other than AVRO, a text over MaxSchemaSize). Confluent code 42201.
	ErrMalformedSchema = errors.New("schema: invalid schema")
	// ErrIncompatible: a new schema breaks the subject's compatibility
	// mode. The error is an *IncompatibleError that lists why. Confluent
	// code 409.
	ErrIncompatible = errors.New("schema: incompatible schema")
	// ErrInvalidCompatibility: a compatibility level that is not one of
	// NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE,
	// FULL, FULL_TRANSITIVE. Confluent code 42203.
	ErrInvalidCompatibility = errors.New("schema: invalid compatibility level")
	// ErrInvalidSubject: a subject name that is empty, longer than
	// MaxSubjectLen bytes, not UTF-8 or holds control characters.
	ErrInvalidSubject = errors.New("schema: invalid subject name")
	// ErrInvalidVersion: a version that is neither a positive number nor
	// "latest". Confluent code 42202.
	ErrInvalidVersion = errors.New("schema: invalid version")

	// ErrSubjectNotFound: no subject of that name, or it has no versions.
	// Confluent code 40401.
	ErrSubjectNotFound = errors.New("schema: subject not found")
	// ErrVersionNotFound: the subject has no such version. Confluent code
	// 40402.
	ErrVersionNotFound = errors.New("schema: version not found")
	// ErrSchemaNotFound: no schema with that id, or (Registry.Lookup) the
	// subject has no version identical to the given schema. Confluent code
	// 40403.
	ErrSchemaNotFound = errors.New("schema: schema not found")
	// ErrSubjectSoftDeleted: a soft delete of a subject whose versions are
	// all soft-deleted already. Confluent code 40404.
	ErrSubjectSoftDeleted = errors.New("schema: subject was soft-deleted")
	// ErrSubjectNotSoftDeleted: a permanent delete of a subject that has
	// versions not soft-deleted yet; soft-delete it first. Confluent code
	// 40405.
	ErrSubjectNotSoftDeleted = errors.New("schema: subject not soft-deleted")
	// ErrVersionSoftDeleted: a soft delete of a version that is
	// soft-deleted already. Confluent code 40406.
	ErrVersionSoftDeleted = errors.New("schema: version was soft-deleted")
	// ErrVersionNotSoftDeleted: a permanent delete of a version not
	// soft-deleted yet; soft-delete it first. Confluent code 40407.
	ErrVersionNotSoftDeleted = errors.New("schema: version not soft-deleted")
	// ErrReadOnly: a write to a subject whose mode (or the global one) is
	// READONLY. Confluent code 42205.
	ErrReadOnly = errors.New("schema: read-only mode")
	// ErrInvalidMode: a mode other than READWRITE, READONLY or
	// READONLY_OVERRIDE (IMPORT is not supported). Confluent code 42204.
	ErrInvalidMode = errors.New("schema: invalid mode")

	// ErrConflict: a Store refused to add a version that already exists;
	// someone else wrote the store behind the Registry's back.
	ErrConflict = errors.New("schema: store conflict")
	// ErrLocked: OpenBoltStore could not lock the file in time; another
	// process (most likely another control plane on the same data
	// directory) holds it.
	ErrLocked = errors.New("schema: store file is locked")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("schema: store closed")
	// ErrCorrupt: OpenBoltStore found the file damaged (cut short,
	// emptied, overwritten) and did not open it; the message names the
	// file and how to recover (docs/operations.md).
	ErrCorrupt = boltfile.ErrCorrupt
)

// ValidationError reports a message body that does not match its schema.
// It unwraps to ErrSchemaInvalid.
type ValidationError struct {
	// Path is where in the datum the problem is, with field names, array
	// indices and map keys: "items[2].price", `attributes["colour"]`. It is
	// empty when the problem is the body as a whole (framing, an unknown
	// schema id, bytes after the datum, a top-level value of the wrong
	// type).
	Path string
	// Reason says what is wrong, in words meant for the app's developer:
	// what was expected, what was found, and for binary input the byte
	// offset.
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Path == "" {
		return ErrSchemaInvalid.Error() + ": " + e.Reason
	}
	return ErrSchemaInvalid.Error() + ": " + e.Path + ": " + e.Reason
}

// Unwrap returns ErrSchemaInvalid.
func (e *ValidationError) Unwrap() error { return ErrSchemaInvalid }

// IncompatibleError reports a schema that breaks its subject's
// compatibility mode. It unwraps to ErrIncompatible.
type IncompatibleError struct {
	Subject string
	// Mode is the compatibility level that was checked.
	Mode Compatibility
	// Messages has one entry per existing version the schema fails
	// against: which version, which direction (who cannot read whom), the
	// field path and the reason.
	Messages []string
}

func (e *IncompatibleError) Error() string {
	return ErrIncompatible.Error() + " for subject " + strconv.Quote(e.Subject) + " under " + string(e.Mode) + ": " + strings.Join(e.Messages, "; ")
}

// Unwrap returns ErrIncompatible.
func (e *IncompatibleError) Unwrap() error { return ErrIncompatible }

// pathSeg is one step of a ValidationError's path: a record field, an
// array index or a map key.
type pathSeg struct {
	field string
	key   string
	index int
	kind  uint8 // segField, segIndex, segKey
}

const (
	segField uint8 = iota
	segIndex
	segKey
)

// verr is a ValidationError under construction.
type verr struct {
	segs   []pathSeg // innermost first
	reason string
	// limit is set for a limit of the Validator (depth, zero-size items)
	// rather than a mismatch: union resolution does not try other
	// branches after it.
	limit bool
}

func (e *verr) field(name string) *verr {
	e.segs = append(e.segs, pathSeg{kind: segField, field: name})
	return e
}

func (e *verr) index(i int) *verr {
	e.segs = append(e.segs, pathSeg{kind: segIndex, index: i})
	return e
}

func (e *verr) key(k string) *verr {
	e.segs = append(e.segs, pathSeg{kind: segKey, key: strings.Clone(truncate(k, 64))})
	return e
}

func (e *verr) err() *ValidationError {
	var b strings.Builder
	for i, s := range slices.Backward(e.segs) {
		switch s.kind {
		case segField:
			if i != len(e.segs)-1 {
				b.WriteByte('.')
			}
			b.WriteString(s.field)
		case segIndex:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.index))
			b.WriteByte(']')
		case segKey:
			b.WriteByte('[')
			b.WriteString(strconv.Quote(s.key))
			b.WriteByte(']')
		}
	}
	return &ValidationError{Path: b.String(), Reason: e.reason}
}

// String renders the error without the package prefix: "at path: reason".
func (e *verr) String() string {
	ve := e.err()
	if ve.Path == "" {
		return ve.Reason
	}
	return "at " + ve.Path + ": " + ve.Reason
}

func fail(format string, args ...any) *verr {
	return &verr{reason: fmt.Sprintf(format, args...)}
}
