package schema

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/hamba/avro/v2"
)

// MaxSchemaSize is the largest schema text the registry accepts, in bytes.
const MaxSchemaSize = 1 << 20

// MaxSubjectLen is the longest subject name, in bytes: a Kafka topic name
// (249) plus Confluent's "-value" suffix.
const MaxSubjectLen = 255

// ValidateSubject checks a subject name: 1 to MaxSubjectLen bytes of UTF-8
// without control characters. Anything else is an error wrapping
// ErrInvalidSubject. Subjects are usually topic names, but Confluent's
// "<topic>-value" style is accepted too.
func ValidateSubject(subject string) error {
	switch {
	case subject == "":
		return fmt.Errorf("%w: empty", ErrInvalidSubject)
	case len(subject) > MaxSubjectLen:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidSubject, len(subject), MaxSubjectLen)
	case !utf8.ValidString(subject):
		return fmt.Errorf("%w: not UTF-8", ErrInvalidSubject)
	}
	for i, r := range subject {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: control character at byte %d", ErrInvalidSubject, i)
		}
	}
	return nil
}

// parsed is a schema text the registry accepted.
type parsed struct {
	schema avro.Schema
	// normalized is the schema as hamba/avro writes it back: no
	// whitespace, keys in a fixed order, names fully qualified, but with
	// defaults, aliases, docs and custom properties kept.
	normalized string
	// key is the SHA-256 of normalized: two texts with the same key are
	// the same schema for the registry (same id, same version).
	key [32]byte
}

// parseSchema parses an Avro schema text. Named types resolve only within
// the text itself: every parse gets a fresh hamba SchemaCache (avro.Parse
// would use a process-wide one, where a name from one subject's schema
// would resolve in another's, and which never shrinks). Any failure is an
// error wrapping ErrMalformedSchema; so is a panic inside the parser.
func parseSchema(text string) (p parsed, err error) {
	if len(text) > MaxSchemaSize {
		return parsed{}, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformedSchema, len(text), MaxSchemaSize)
	}
	if strings.TrimSpace(text) == "" {
		return parsed{}, fmt.Errorf("%w: empty schema", ErrMalformedSchema)
	}
	defer func() {
		if r := recover(); r != nil {
			p, err = parsed{}, fmt.Errorf("%w: the Avro parser failed: %v", ErrMalformedSchema, r)
		}
	}()
	s, err := avro.ParseWithCache(text, "", &avro.SchemaCache{})
	if err != nil {
		return parsed{}, fmt.Errorf("%w: %s", ErrMalformedSchema, strings.TrimPrefix(err.Error(), "avro: "))
	}
	norm, err := s.(interface{ MarshalJSON() ([]byte, error) }).MarshalJSON()
	if err != nil {
		return parsed{}, fmt.Errorf("%w: %s", ErrMalformedSchema, err)
	}
	return parsed{schema: s, normalized: string(norm), key: sha256.Sum256(norm)}, nil
}

// FullName returns the full name of a schema text's top-level named type
// (record, enum or fixed: "com.acme.Order"), the subject Confluent's
// RecordNameStrategy files it under; "" for a text that does not parse or
// whose top-level type has no name.
func FullName(text string) string {
	p, err := parseSchema(text)
	if err != nil {
		return ""
	}
	if n, ok := p.schema.(avro.NamedSchema); ok {
		return n.FullName()
	}
	return ""
}
