package schema

import (
	"encoding/binary"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/msgmesh/msgmesh/broker"
)

// Header names the sidecar reads (HintsFromHeaders) to learn how a body is
// encoded. Matching is case-insensitive. They are defined with the rest of
// the header namespace in package broker, whose header rule lets apps set
// them although they start with Msgmesh-.
const (
	// HeaderContentType overrides Content-Type for the validator, for apps
	// whose Content-Type header means something else.
	HeaderContentType = broker.HeaderContentType
	// HeaderSchemaID names the schema id a raw Avro binary or JSON body is
	// written with.
	HeaderSchemaID = broker.HeaderSchemaID
	// HeaderSchemaVersion names the subject version a raw Avro binary or
	// JSON body is written with: a number or "latest".
	HeaderSchemaVersion = broker.HeaderSchemaVersion
)

// Content types with a meaning for the validator. Any other content type,
// or none, means the Confluent wire format.
const (
	// ContentTypeJSON: a JSON body, validated and re-encoded to Avro. Any
	// media type "application/json" or ending in "+json" counts.
	ContentTypeJSON = "application/json"
	// ContentTypeAvro: a raw Avro binary body, no framing; the schema is
	// named by HeaderSchemaID or HeaderSchemaVersion, else the latest
	// version. "application/avro" counts too.
	ContentTypeAvro = "avro/binary"
)

// Encoding is how a body is encoded.
type Encoding uint8

const (
	// EncodingConfluent is Confluent's wire format: byte 0, the schema id
	// as 4 bytes big-endian, then the Avro binary datum.
	EncodingConfluent Encoding = iota + 1
	// EncodingAvro is a raw Avro binary datum; the schema comes from
	// headers or is the latest version.
	EncodingAvro
	// EncodingJSON is a JSON document.
	EncodingJSON
)

func (e Encoding) String() string {
	switch e {
	case EncodingConfluent:
		return "confluent"
	case EncodingAvro:
		return "avro"
	case EncodingJSON:
		return "json"
	}
	return "Encoding(" + strconv.Itoa(int(e)) + ")"
}

// Hints is what a message's headers say about its body's encoding.
type Hints struct {
	// ContentType is the Msgmesh-Content-Type header, else Content-Type.
	ContentType string
	// SchemaID is the Msgmesh-Schema-Id header, unparsed.
	SchemaID string
	// SchemaVersion is the Msgmesh-Schema-Version header, unparsed.
	SchemaVersion string
}

// HintsFromHeaders picks the Hints out of a message's headers (key, value
// pairs; keys match case-insensitively; for a repeated key the first
// wins).
func HintsFromHeaders(headers iter.Seq2[string, string]) Hints {
	var h Hints
	var contentType string
	for k, v := range headers {
		switch {
		case strings.EqualFold(k, HeaderContentType):
			if h.ContentType == "" {
				h.ContentType = v
			}
		case strings.EqualFold(k, "Content-Type"):
			if contentType == "" {
				contentType = v
			}
		case strings.EqualFold(k, HeaderSchemaID):
			if h.SchemaID == "" {
				h.SchemaID = v
			}
		case strings.EqualFold(k, HeaderSchemaVersion):
			if h.SchemaVersion == "" {
				h.SchemaVersion = v
			}
		}
	}
	if h.ContentType == "" {
		h.ContentType = contentType
	}
	return h
}

// TopicSchemas is the schema set of one topic: every version of its
// subject, in ascending order (the last is the latest), as
// Registry.TopicSchemas returns them and the control plane pushes them.
type TopicSchemas struct {
	Subject  string
	Versions []SchemaVersion
}

// Result is what Validate found.
type Result struct {
	// Body is the body to pass on: the input itself, or for JSON input on
	// publish its Avro encoding in the Confluent wire format (a new slice).
	Body []byte
	// Reencoded is true when Body is not the input. The caller should then
	// drop the JSON content-type headers: a body without a content type is
	// read as the Confluent wire format.
	Reencoded bool
	// SchemaID and Version name the schema the body was checked against.
	SchemaID int
	Version  int
	// Encoding is how the input was encoded.
	Encoding Encoding
}

// ValidatorOptions configures NewValidator. Zero (or negative) fields take
// their defaults.
type ValidatorOptions struct {
	// MaxSchemas bounds how many compiled schemas the Validator keeps
	// (one per schema id); the least recently used go first. Default 1024.
	MaxSchemas int
	// MaxDepth bounds how deeply records, arrays, maps and unions may nest
	// in one message (a recursive schema could otherwise nest as deep as
	// the body is long). Default 100.
	MaxDepth int
	// MaxZeroSizeItems bounds how many array or map items of a type that
	// takes no bytes in Avro binary (null, a record of nulls) one message
	// may hold: a few bytes could otherwise claim billions of them.
	// Default 65536.
	MaxZeroSizeItems int
}

const (
	defaultMaxSchemas       = 1024
	defaultMaxDepth         = 100
	defaultMaxZeroSizeItems = 1 << 16
)

// Validator checks message bodies against their topic's schema set
// (docs/design.md §3 flow 9). It compiles each schema once, keeping the
// compiled form in a bounded cache keyed by schema id, and is safe for
// concurrent use.
//
// Accepted encodings (docs/schemas.md):
//
//   - JSON, when the content type (Msgmesh-Content-Type, else Content-Type)
//     is application/json or +json: checked against the version named by
//     Msgmesh-Schema-Id or Msgmesh-Schema-Version, else the latest, and on
//     publish re-encoded to Avro in the Confluent wire format;
//   - raw Avro binary, when the content type is avro/binary (or
//     application/avro) or a Msgmesh-Schema-Id or Msgmesh-Schema-Version
//     header is present: checked against that version, else the latest;
//   - otherwise the Confluent wire format (byte 0, a 4-byte big-endian
//     schema id, the Avro binary datum); the id must be one of the
//     subject's versions.
//
// A binary body must hold exactly one datum: trailing bytes are an error.
type Validator struct {
	maxDepth  int
	zeroLimit int64
	cache     *schemaCache
}

// NewValidator returns a Validator.
func NewValidator(opts ValidatorOptions) *Validator {
	if opts.MaxSchemas <= 0 {
		opts.MaxSchemas = defaultMaxSchemas
	}
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = defaultMaxDepth
	}
	if opts.MaxZeroSizeItems <= 0 {
		opts.MaxZeroSizeItems = defaultMaxZeroSizeItems
	}
	return &Validator{
		maxDepth:  opts.MaxDepth,
		zeroLimit: int64(opts.MaxZeroSizeItems),
		cache:     newSchemaCache(opts.MaxSchemas),
	}
}

// Validate checks a body an app publishes on a topic with schema set ts.
// JSON input is re-encoded (Result.Body). A body that does not match is a
// *ValidationError (errors.Is(err, ErrSchemaInvalid)). A ts without
// versions is an error wrapping ErrSubjectNotFound, and a version whose
// schema does not compile one wrapping ErrMalformedSchema: both are the
// control plane's problem, not the app's. The Validator does not apply a
// Policy; the caller does.
func (v *Validator) Validate(ts TopicSchemas, body []byte, h Hints) (Result, error) {
	return v.validate(ts, body, h, true)
}

// ValidateDelivery checks a body delivered from the broker, with the same
// rules as Validate, for consume-side validation. JSON bodies (published
// around the sidecar) are checked but not re-encoded: Result.Body is
// always the input.
func (v *Validator) ValidateDelivery(ts TopicSchemas, body []byte, h Hints) (Result, error) {
	return v.validate(ts, body, h, false)
}

func (v *Validator) validate(ts TopicSchemas, body []byte, h Hints, reencode bool) (Result, error) {
	if len(ts.Versions) == 0 {
		return Result{}, fmt.Errorf("%w: topic schema set %q has no versions", ErrSubjectNotFound, ts.Subject)
	}
	enc := encodingOf(h)
	res := Result{Body: body, Encoding: enc}

	var sv *SchemaVersion
	start := 0 // where the datum starts
	if enc == EncodingConfluent {
		if len(body) < 5 || body[0] != 0 {
			return Result{}, confluentFramingError(body, h)
		}
		id := int(binary.BigEndian.Uint32(body[1:5]))
		if sv = versionByID(ts, id); sv == nil {
			return Result{}, unknownID(ts, id, "the Confluent header")
		}
		start = 5
	} else {
		var verr *ValidationError
		if sv, verr = versionFromHints(ts, h); verr != nil {
			return Result{}, verr
		}
	}
	res.SchemaID, res.Version = sv.ID, sv.Version

	root, err := v.cache.get(sv.ID, sv.Schema)
	if err != nil {
		return Result{}, fmt.Errorf("schema: version %d (id %d) of %q: %w", sv.Version, sv.ID, ts.Subject, err)
	}

	if enc == EncodingJSON {
		val, e := decodeJSON(body)
		if e != nil {
			return Result{}, e.err()
		}
		je := jsonEncoder{maxDepth: v.maxDepth, zeroLimit: v.zeroLimit, zeroLeft: v.zeroLimit, steps: jsonSteps(len(body))}
		if reencode {
			je.buf = make([]byte, 5, 5+len(body))
			binary.BigEndian.PutUint32(je.buf[1:], uint32(sv.ID))
		}
		if e := je.value(root, val); e != nil {
			return Result{}, e.err()
		}
		if reencode {
			res.Body, res.Reencoded = je.buf, true
		}
		return res, nil
	}

	// Byte offsets in messages count from the start of the body, header
	// included.
	w := binWalker{buf: body, pos: start, maxDepth: v.maxDepth, zeroLimit: v.zeroLimit, zeroLeft: v.zeroLimit}
	if e := w.value(root); e != nil {
		return Result{}, e.err()
	}
	if w.pos != len(body) {
		return Result{}, &ValidationError{Reason: fmt.Sprintf("%d bytes after the end of the datum, from byte %d; a body holds exactly one %s", len(body)-w.pos, w.pos, root.name)}
	}
	return res, nil
}

// EncodingOf says how a body with hints h is read: JSON, raw Avro, or the
// Confluent wire format (the rules of Validator).
func EncodingOf(h Hints) Encoding { return encodingOf(h) }

// encodingOf decides a body's encoding from its hints.
func encodingOf(h Hints) Encoding {
	if h.ContentType != "" {
		// The media type without parameters; mime.ParseMediaType would
		// allocate a map per message.
		mt, _, _ := strings.Cut(h.ContentType, ";")
		mt = strings.TrimSpace(mt)
		switch {
		case strings.EqualFold(mt, ContentTypeJSON) || len(mt) > 5 && strings.EqualFold(mt[len(mt)-5:], "+json"):
			return EncodingJSON
		case strings.EqualFold(mt, ContentTypeAvro) || strings.EqualFold(mt, "application/avro"):
			return EncodingAvro
		}
	}
	if h.SchemaID != "" || h.SchemaVersion != "" {
		return EncodingAvro
	}
	return EncodingConfluent
}

func confluentFramingError(body []byte, h Hints) *ValidationError {
	hint := "; a raw Avro body needs the header " + HeaderSchemaVersion + " or " + HeaderSchemaID + " (or content type " + ContentTypeAvro + " for the latest version), a JSON body content type " + ContentTypeJSON
	if h.ContentType != "" {
		hint += " (this message's content type is " + strconv.Quote(truncate(h.ContentType, 64)) + ")"
	}
	if len(body) < 5 {
		return &ValidationError{Reason: fmt.Sprintf("the body is %d bytes, too short for the Confluent wire format (byte 0 and a 4-byte schema id before the datum)%s", len(body), hint)}
	}
	return &ValidationError{Reason: fmt.Sprintf("the body starts with byte 0x%02x, not the Confluent wire format's magic byte 0%s", body[0], hint)}
}

func versionByID(ts TopicSchemas, id int) *SchemaVersion {
	for i := range ts.Versions {
		if ts.Versions[i].ID == id {
			return &ts.Versions[i]
		}
	}
	return nil
}

func unknownID(ts TopicSchemas, id int, where string) *ValidationError {
	ids := make([]string, len(ts.Versions))
	for i, sv := range ts.Versions {
		ids[i] = strconv.Itoa(sv.ID)
	}
	return &ValidationError{Reason: fmt.Sprintf("schema id %d (from %s) is not a version of subject %q; its schema ids are %s", id, where, ts.Subject, strings.Join(ids, ", "))}
}

// versionFromHints picks the version named by the schema headers, else the
// latest. When both headers are present they must agree.
func versionFromHints(ts TopicSchemas, h Hints) (*SchemaVersion, *ValidationError) {
	var sv *SchemaVersion
	if h.SchemaID != "" {
		id, err := strconv.Atoi(strings.TrimSpace(h.SchemaID))
		if err != nil || id < 0 {
			return nil, &ValidationError{Reason: fmt.Sprintf("header %s: %s is not a schema id", HeaderSchemaID, strconv.Quote(truncate(h.SchemaID, 64)))}
		}
		if sv = versionByID(ts, id); sv == nil {
			return nil, unknownID(ts, id, "the header "+HeaderSchemaID)
		}
	}
	if h.SchemaVersion != "" {
		s := strings.TrimSpace(h.SchemaVersion)
		byVersion := &ts.Versions[len(ts.Versions)-1]
		if !strings.EqualFold(s, "latest") {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				return nil, &ValidationError{Reason: fmt.Sprintf("header %s: %s is not a version (a number from 1, or \"latest\")", HeaderSchemaVersion, strconv.Quote(truncate(h.SchemaVersion, 64)))}
			}
			byVersion = nil
			for i := range ts.Versions {
				if ts.Versions[i].Version == n {
					byVersion = &ts.Versions[i]
				}
			}
			if byVersion == nil {
				return nil, &ValidationError{Reason: fmt.Sprintf("header %s: subject %q has no version %d (its versions are %s)", HeaderSchemaVersion, ts.Subject, n, versionNumbers(ts))}
			}
		}
		if sv != nil && sv != byVersion {
			return nil, &ValidationError{Reason: fmt.Sprintf("headers disagree: %s %d is version %d, but %s says %s", HeaderSchemaID, sv.ID, sv.Version, HeaderSchemaVersion, s)}
		}
		sv = byVersion
	}
	if sv == nil {
		sv = &ts.Versions[len(ts.Versions)-1]
	}
	return sv, nil
}

func versionNumbers(ts TopicSchemas) string {
	ns := make([]string, len(ts.Versions))
	for i, v := range ts.Versions {
		ns[i] = strconv.Itoa(v.Version)
	}
	return strings.Join(ns, ", ")
}

// schemaCache holds compiled schemas by id, at most max of them.
//
// Reads take no lock: entries is an immutable map swapped whole
// (copy-on-write) under mu when an entry is added or evicted, which
// happens once per schema id, not per message. Eviction is CLOCK, an
// approximation of least-recently-used: a hit sets the entry's ref bit,
// and the hand clears ref bits until it finds an entry without one.
type schemaCache struct {
	max     int
	entries atomic.Pointer[map[int]*cacheEntry]

	mu   sync.Mutex // guards ring and hand, and serialises writers of entries
	ring []*cacheEntry
	hand int
}

type cacheEntry struct {
	id   int
	text string
	root *node
	err  error
	ref  atomic.Bool
}

func newSchemaCache(max int) *schemaCache {
	c := &schemaCache{max: max}
	m := map[int]*cacheEntry{}
	c.entries.Store(&m)
	return c
}

// get returns the compiled schema of id. The text is compared too (cheap
// when the caller passes the same string each time), so that a registry
// that was reset and reuses ids cannot leave a stale schema behind. A text
// that does not compile is cached as such, with its error.
func (c *schemaCache) get(id int, text string) (*node, error) {
	if e := (*c.entries.Load())[id]; e != nil && e.text == text {
		if !e.ref.Load() {
			e.ref.Store(true)
		}
		return e.root, e.err
	}
	e := &cacheEntry{id: id, text: text}
	p, err := parseSchema(text)
	if err == nil {
		e.root, err = compile(p.schema)
	}
	e.err = err

	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.entries.Load()
	if cur := old[id]; cur != nil && cur.text == text {
		return cur.root, cur.err // compiled meanwhile by another goroutine
	}
	m := make(map[int]*cacheEntry, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	if cur := old[id]; cur != nil {
		// Same id, new text: replace in place.
		i := indexOf(c.ring, cur)
		c.ring[i] = e
	} else if len(c.ring) < c.max {
		c.ring = append(c.ring, e)
	} else {
		for c.ring[c.hand].ref.Swap(false) {
			c.hand = (c.hand + 1) % len(c.ring)
		}
		delete(m, c.ring[c.hand].id)
		c.ring[c.hand] = e
		c.hand = (c.hand + 1) % len(c.ring)
	}
	m[id] = e
	c.entries.Store(&m)
	return e.root, e.err
}

func indexOf(ring []*cacheEntry, e *cacheEntry) int {
	for i, r := range ring {
		if r == e {
			return i
		}
	}
	return -1
}
