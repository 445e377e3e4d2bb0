package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// MaxBodySize is the largest registration body DecodeJSON reads, in bytes.
const MaxBodySize = 64 << 10

// wireRegistration is the accepted JSON body. updated_at is accepted, so
// that a registration read back from the sidecar can be posted again, and
// ignored: the store sets it.
type wireRegistration struct {
	App       string          `json:"app"`
	Produce   []Binding       `json:"produce"`
	Consume   []Binding       `json:"consume"`
	UpdatedAt json.RawMessage `json:"updated_at"`
}

// DecodeJSON reads one registration, a JSON object, from an HTTP request
// body, then validates and normalises it. It reads at most MaxBodySize+1
// bytes from r. Every problem with the body is a *ValidationError
// (errors.Is(err, ErrInvalid)): an empty or oversize body, malformed JSON
// (with its byte offset), an unknown field, a value of the wrong type (with
// its field and offset), anything after the object, and every Validate
// rule. An error reading r is returned wrapped, as it is not the app's
// fault. Keys match field names case-insensitively (encoding/json); if a
// key repeats, the last one wins. DecodeJSON never panics.
func DecodeJSON(r io.Reader) (Registration, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxBodySize+1))
	if err != nil {
		return Registration{}, fmt.Errorf("registry: read registration body: %w", err)
	}
	if len(body) > MaxBodySize {
		return Registration{}, invalid("", "body is larger than %d bytes", MaxBodySize)
	}
	start := skipSpace(body, 0)
	if start == len(body) {
		return Registration{}, invalid("", "empty body; expected a JSON object")
	}
	if body[start] != '{' {
		return Registration{}, invalid("", "body must be a JSON object, not %s", describeValue(body[start]))
	}

	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var w wireRegistration
	if err := dec.Decode(&w); err != nil {
		return Registration{}, decodeError(err)
	}
	if end := skipSpace(body, int(dec.InputOffset())); end != len(body) {
		return Registration{}, invalid("", "unexpected data after the JSON object, at byte offset %d", end)
	}

	reg := Registration{App: w.App, Produce: w.Produce, Consume: w.Consume}
	if err := reg.Validate(); err != nil {
		return Registration{}, err
	}
	reg.Normalize()
	return reg, nil
}

// decodeError turns an encoding/json error into a *ValidationError.
func decodeError(err error) *ValidationError {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return invalid("", "malformed JSON near byte offset %d: %s", syn.Offset, syn.Error())
	case errors.As(err, &typ):
		return invalid(typ.Field, "expected %s, got a JSON %s (near byte offset %d)", describeType(typ.Type), typ.Value, typ.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("", "malformed JSON: the body ends before the object does")
	}
	// encoding/json reports unknown fields only as text.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return invalid(strings.Trim(name, `"`), "unknown field; allowed are app, produce (a list of {group, topic}), consume (a list of {group, topic, max_attempts, dead_letter_topic, broker_group, tags, push_url, push_concurrency, push_mode, push_timeout}) and updated_at")
	}
	return invalid("", "malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

func describeType(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int:
		return "a whole number"
	case reflect.Slice:
		return "an array"
	case reflect.Struct:
		return "an object"
	}
	return t.String()
}

func describeValue(c byte) string {
	switch {
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || '0' <= c && c <= '9':
		return "a number"
	}
	return fmt.Sprintf("text starting with %s", quoteByte(c))
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}
