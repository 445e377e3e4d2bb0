package ctrlplane

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
)

// decodeBody reads one JSON object from a request body into v: at most
// api.MaxBodySize bytes, no unknown fields, nothing after the object.
// Every problem with the body is a *api.ValidationError (or ErrTooLarge)
// that says where it is. With optional, an empty body leaves v alone.
func decodeBody(r io.Reader, v any, optional bool) error {
	body, err := io.ReadAll(io.LimitReader(r, api.MaxBodySize+1))
	if err != nil {
		return api.Invalid("", "reading the body: %v", err)
	}
	if len(body) > api.MaxBodySize {
		return errorf(ErrTooLarge, "the body is larger than %d bytes", api.MaxBodySize)
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		if optional {
			return nil
		}
		return api.Invalid("", "empty body; expected a JSON object")
	}
	if trimmed[0] != '{' {
		return api.Invalid("", "the body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if rest := bytes.TrimSpace(body[dec.InputOffset():]); len(rest) > 0 {
		return api.Invalid("", "unexpected data after the JSON object, at byte offset %d", len(body)-len(rest))
	}
	return nil
}

// jsonError turns an encoding/json error into a *api.ValidationError.
func jsonError(err error) *api.ValidationError {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return api.Invalid("", "malformed JSON near byte offset %d: %s", syn.Offset, syn.Error())
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		return api.Invalid(field, "expected %s, got a JSON %s (near byte offset %d)", typ.Type, typ.Value, typ.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return api.Invalid("", "malformed JSON: the body ends before the object does")
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return api.Invalid(strings.Trim(name, `"`), "unknown field")
	}
	return api.Invalid("", "malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}
