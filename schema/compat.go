package schema

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/hamba/avro/v2"
)

// Compatibility is a subject's compatibility level: which existing
// versions a new version is checked against, and in which direction.
type Compatibility string

// The compatibility levels, Confluent's names. "Reads" means Avro schema
// resolution: a reader schema decoding data written with a writer schema.
const (
	// CompatNone accepts any new version.
	CompatNone Compatibility = "NONE"
	// CompatBackward: the new schema can read data written with the latest
	// version (consumers upgrade first). The default.
	CompatBackward Compatibility = "BACKWARD"
	// CompatBackwardTransitive: the new schema can read data written with
	// every existing version.
	CompatBackwardTransitive Compatibility = "BACKWARD_TRANSITIVE"
	// CompatForward: the latest version can read data written with the new
	// schema (producers upgrade first).
	CompatForward Compatibility = "FORWARD"
	// CompatForwardTransitive: every existing version can read data written
	// with the new schema.
	CompatForwardTransitive Compatibility = "FORWARD_TRANSITIVE"
	// CompatFull: BACKWARD and FORWARD against the latest version.
	CompatFull Compatibility = "FULL"
	// CompatFullTransitive: BACKWARD and FORWARD against every version.
	CompatFullTransitive Compatibility = "FULL_TRANSITIVE"
)

// DefaultCompatibility is the global level of a registry nobody configured.
const DefaultCompatibility = CompatBackward

var compatibilities = []Compatibility{
	CompatNone, CompatBackward, CompatBackwardTransitive, CompatForward,
	CompatForwardTransitive, CompatFull, CompatFullTransitive,
}

// ParseCompatibility parses a level, case-insensitively. Anything else is an
// error wrapping ErrInvalidCompatibility.
func ParseCompatibility(s string) (Compatibility, error) {
	c := Compatibility(strings.ToUpper(strings.TrimSpace(s)))
	if slices.Contains(compatibilities, c) {
		return c, nil
	}
	return "", fmt.Errorf("%w: %q; use one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE", ErrInvalidCompatibility, s)
}

func (c Compatibility) backward() bool {
	return c == CompatBackward || c == CompatBackwardTransitive || c == CompatFull || c == CompatFullTransitive
}

func (c Compatibility) forward() bool {
	return c == CompatForward || c == CompatForwardTransitive || c == CompatFull || c == CompatFullTransitive
}

func (c Compatibility) transitive() bool {
	return c == CompatBackwardTransitive || c == CompatForwardTransitive || c == CompatFullTransitive
}

// checkPair checks one (new schema, existing version) pair in the
// directions mode asks for and returns one message per failed direction.
//
// The verdict is hamba/avro's SchemaCompatibility. A fresh one is used for
// every pair on purpose: its cache is keyed by the schemas' canonical-form
// fingerprints, which leave out field defaults, so a cached verdict for a
// schema without a default would be reused for the same schema with one.
// hamba's messages do not say where in the schema the problem is, so when
// it refuses, explain walks both schemas with the same rules and names the
// field path; hamba's own message is the fallback.
func checkPair(mode Compatibility, newSchema avro.Schema, old avro.Schema, oldVersion int) []string {
	var msgs []string
	oldLabel := "version " + strconv.Itoa(oldVersion)
	if mode.backward() {
		if err := avro.NewSchemaCompatibility().Compatible(newSchema, old); err != nil {
			msgs = append(msgs, describe("the new schema", oldLabel, newSchema, old, err))
		}
	}
	if mode.forward() {
		if err := avro.NewSchemaCompatibility().Compatible(old, newSchema); err != nil {
			msgs = append(msgs, describe(oldLabel, "the new schema", old, newSchema, err))
		}
	}
	return msgs
}

func describe(readerLabel, writerLabel string, reader, writer avro.Schema, hambaErr error) string {
	prefix := readerLabel + " cannot read data written with " + writerLabel + ": "
	x := explainer{reader: readerLabel, writer: writerLabel, seen: map[[2]string]bool{}}
	if why := x.explain(reader, writer, ""); why != "" {
		return prefix + why
	}
	return prefix + strings.TrimPrefix(hambaErr.Error(), "avro: ")
}

// explainer mirrors the rules of hamba/avro's SchemaCompatibility.match,
// tracking the field path, and returns the first problem it finds ("" if
// none).
type explainer struct {
	reader, writer string // labels for messages
	seen           map[[2]string]bool
}

func at(path string) string {
	if path == "" {
		return "at the top level: "
	}
	return "at " + path + ": "
}

func (x *explainer) explain(reader, writer avro.Schema, path string) string {
	reader, writer = deref(reader), deref(writer)
	rn, rNamed := reader.(avro.NamedSchema)
	wn, wNamed := writer.(avro.NamedSchema)
	if rNamed && wNamed {
		key := [2]string{rn.FullName(), wn.FullName()}
		if x.seen[key] {
			return "" // recursion: already being checked further up
		}
		x.seen[key] = true
	}

	if reader.Type() != writer.Type() {
		if wu, ok := writer.(*avro.UnionSchema); ok {
			for _, b := range wu.Types() {
				if why := x.explain(reader, b, path); why != "" {
					return why
				}
			}
			return ""
		}
		if ru, ok := reader.(*avro.UnionSchema); ok {
			for _, b := range ru.Types() {
				sub := explainer{reader: x.reader, writer: x.writer, seen: map[[2]string]bool{}}
				if sub.explain(b, writer, path) == "" {
					return ""
				}
			}
			return fmt.Sprintf("%s%s has a union %s with no branch that can read %s's %s", at(path), x.reader, typeName(reader), x.writer, typeName(writer))
		}
		if promotable(writer.Type(), reader.Type()) {
			return ""
		}
		return fmt.Sprintf("%stype %s in %s cannot read type %s in %s", at(path), typeName(reader), x.reader, typeName(writer), x.writer)
	}

	switch r := reader.(type) {
	case *avro.ArraySchema:
		return x.explain(r.Items(), writer.(*avro.ArraySchema).Items(), path+"[]")
	case *avro.MapSchema:
		return x.explain(r.Values(), writer.(*avro.MapSchema).Values(), path+"{}")
	case *avro.FixedSchema:
		w := writer.(*avro.FixedSchema)
		if why := x.names(r, w, path); why != "" {
			return why
		}
		if r.Size() != w.Size() {
			return fmt.Sprintf("%sfixed %s has size %d in %s and %d in %s", at(path), r.FullName(), r.Size(), x.reader, w.Size(), x.writer)
		}
	case *avro.EnumSchema:
		w := writer.(*avro.EnumSchema)
		if why := x.names(r, w, path); why != "" {
			return why
		}
		if r.HasDefault() {
			return ""
		}
		var missing []string
		for _, s := range w.Symbols() {
			if !slices.Contains(r.Symbols(), s) {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			return fmt.Sprintf("%senum %s in %s lacks symbol(s) %s that %s can write, and has no default symbol", at(path), r.FullName(), x.reader, strings.Join(missing, ", "), x.writer)
		}
	case *avro.RecordSchema:
		w := writer.(*avro.RecordSchema)
		if why := x.names(r, w, path); why != "" {
			return why
		}
		for _, rf := range r.Fields() {
			fpath := join(path, rf.Name())
			wf := writerField(w, rf)
			if wf == nil {
				if rf.HasDefault() {
					continue
				}
				return fmt.Sprintf("%sfield %q of record %s is in %s without a default, and %s does not have it (add a default, or keep the field)", at(fpath), rf.Name(), r.FullName(), x.reader, x.writer)
			}
			if why := x.explain(rf.Type(), wf.Type(), fpath); why != "" {
				return why
			}
		}
	case *avro.UnionSchema:
		for _, b := range writer.(*avro.UnionSchema).Types() {
			if why := x.explain(reader, b, path); why != "" {
				return why
			}
		}
	}
	return ""
}

func (x *explainer) names(r, w avro.NamedSchema, path string) string {
	if r.Name() == w.Name() || slices.Contains(r.Aliases(), w.FullName()) {
		return ""
	}
	return fmt.Sprintf("%snamed type %s in %s does not match %s in %s (rename with an alias)", at(path), r.FullName(), x.reader, w.FullName(), x.writer)
}

func writerField(w *avro.RecordSchema, rf *avro.Field) *avro.Field {
	for _, f := range w.Fields() {
		if f.Name() == rf.Name() || slices.Contains(rf.Aliases(), f.Name()) {
			return f
		}
	}
	return nil
}

// promotable mirrors Avro's (and hamba's) promotion rules.
func promotable(writer, reader avro.Type) bool {
	switch writer {
	case avro.Int:
		return reader == avro.Long || reader == avro.Float || reader == avro.Double
	case avro.Long:
		return reader == avro.Float || reader == avro.Double
	case avro.Float:
		return reader == avro.Double
	case avro.String:
		return reader == avro.Bytes
	case avro.Bytes:
		return reader == avro.String
	}
	return false
}

func deref(s avro.Schema) avro.Schema {
	if ref, ok := s.(*avro.RefSchema); ok {
		return ref.Schema()
	}
	return s
}

// typeName names a schema in messages: the full name of a named type,
// "array<…>", "map<…>", "[a, b]" for a union, else the primitive's name
// with its logical type.
func typeName(s avro.Schema) string {
	s = deref(s)
	switch t := s.(type) {
	case avro.NamedSchema:
		return t.FullName()
	case *avro.ArraySchema:
		return "array<" + typeName(t.Items()) + ">"
	case *avro.MapSchema:
		return "map<" + typeName(t.Values()) + ">"
	case *avro.UnionSchema:
		names := make([]string, len(t.Types()))
		for i, b := range t.Types() {
			names[i] = typeName(b)
		}
		return "[" + strings.Join(names, ", ") + "]"
	case *avro.PrimitiveSchema:
		if l := t.Logical(); l != nil {
			return string(t.Type()) + "(" + string(l.Type()) + ")"
		}
	}
	return string(s.Type())
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
