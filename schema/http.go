package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// MaxRequestBody is the largest request body the HTTP handler reads: a
// MaxSchemaSize schema, JSON-escaped, with room to spare.
const MaxRequestBody = 4 * MaxSchemaSize

// ContentTypeRegistry is the content type of every answer, Confluent's.
const ContentTypeRegistry = "application/vnd.schemaregistry.v1+json"

// Confluent's error codes, the error_code of an error answer.
const (
	codeSubjectNotFound      = 40401
	codeVersionNotFound      = 40402
	codeSchemaNotFound       = 40403
	codeSubjectSoftDeleted   = 40404
	codeSubjectNotSoftDel    = 40405
	codeVersionSoftDeleted   = 40406
	codeVersionNotSoftDel    = 40407
	codeSubjectLevelNotFound = 40408
	codeSubjectModeNotFound  = 40409
	codeInvalidSchema        = 42201
	codeInvalidVersion       = 42202
	codeInvalidCompatibility = 42203
	codeInvalidMode          = 42204
	codeReadOnly             = 42205
	codeIncompatible         = 409
	codeForbidden            = 40301
)

// errorAnswer is every error answer, Confluent's shape.
type errorAnswer struct {
	ErrorCode int    `json:"error_code"`
	Message   string `json:"message"`
}

// NewHandler serves reg over HTTP in the shape of the Confluent Schema
// Registry REST API (docs/schemas.md), so that Confluent's serializers and
// tools work against it. Paths are relative: mount it under a prefix with
// http.StripPrefix. Reads are open; writes (registering a version,
// deleting, setting or deleting a level or a mode) need authorize(r) to
// return true, else the answer is 403 with error_code 40301: the caller
// is expected to have authenticated the request before it reaches the
// handler, so a refusal here is about its rights. A nil authorize refuses
// every write. Reads marked (deleted) take ?deleted=true to include
// soft-deleted versions; deletes take ?permanent=true.
//
//	GET    /subjects                                    subjects, sorted (deleted)
//	POST   /subjects/{subject}/versions                 register {"schema": "..."} → {"id": N}   (write)
//	POST   /subjects/{subject}                          look a schema up → its version
//	GET    /subjects/{subject}/versions                 version numbers (deleted)
//	GET    /subjects/{subject}/versions/{version}       {"subject","version","id","schema"}; version is N or "latest" (deleted)
//	GET    /subjects/{subject}/versions/{version}/schema  the schema text alone (deleted)
//	DELETE /subjects/{subject}                          soft-delete every version → their numbers; permanent: remove them   (write)
//	DELETE /subjects/{subject}/versions/{version}       soft-delete one version → its number; permanent: remove it   (write)
//	GET    /schemas                                     every subject version (deleted, subjectPrefix, latestOnly)
//	GET    /schemas/ids/{id}                            {"schema"}
//	GET    /schemas/ids/{id}/schema                     the schema text alone
//	GET    /schemas/ids/{id}/versions                   [{"subject","version"}] using the id (deleted)
//	GET    /schemas/ids/{id}/subjects                   subjects using the id (deleted)
//	GET    /schemas/types                               ["AVRO"]
//	POST   /compatibility/subjects/{subject}/versions/{version}  dry run → {"is_compatible", "messages"}
//	POST   /compatibility/subjects/{subject}/versions   the same against what Register checks
//	GET    /config                                      global level
//	PUT    /config                                      set it (write)
//	GET    /config/{subject}                            subject's level (the global one if it has none)
//	PUT    /config/{subject}                            set it (write)
//	DELETE /config/{subject}                            remove it (write)
//	GET    /mode, /mode/{subject}                       {"mode"}: the global mode, the subject's (the global one if it has none)
//	PUT    /mode, /mode/{subject}                       set it {"mode": "READONLY"} (write)
//	DELETE /mode, /mode/{subject}                       remove the subject's (the global one: back to READWRITE) (write)
func NewHandler(reg *Registry, authorize func(r *http.Request) bool) http.Handler {
	h := &handler{reg: reg, authorize: authorize}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /subjects", h.listSubjects)
	mux.HandleFunc("POST /subjects/{subject}/versions", h.write(h.register))
	mux.HandleFunc("POST /subjects/{subject}", h.lookup)
	mux.HandleFunc("DELETE /subjects/{subject}", h.write(h.deleteSubject))
	mux.HandleFunc("GET /subjects/{subject}/versions", h.listVersions)
	mux.HandleFunc("GET /subjects/{subject}/versions/{version}", h.getVersion)
	mux.HandleFunc("DELETE /subjects/{subject}/versions/{version}", h.write(h.deleteVersion))
	mux.HandleFunc("GET /subjects/{subject}/versions/{version}/schema", h.getVersionSchema)
	mux.HandleFunc("GET /schemas", h.allSchemas)
	mux.HandleFunc("GET /schemas/ids/{id}", h.getSchema)
	mux.HandleFunc("GET /schemas/ids/{id}/schema", h.getSchemaText)
	mux.HandleFunc("GET /schemas/ids/{id}/versions", h.usages(func(u []SubjectVersion) any { return u }))
	mux.HandleFunc("GET /schemas/ids/{id}/subjects", h.usages(subjectsOf))
	mux.HandleFunc("GET /schemas/types", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []string{"AVRO"})
	})
	mux.HandleFunc("POST /compatibility/subjects/{subject}/versions/{version}", h.checkCompatibility)
	mux.HandleFunc("POST /compatibility/subjects/{subject}/versions", h.checkCompatibility)
	mux.HandleFunc("GET /config", h.getConfig)
	mux.HandleFunc("PUT /config", h.write(h.putConfig))
	mux.HandleFunc("GET /config/{subject}", h.getConfig)
	mux.HandleFunc("PUT /config/{subject}", h.write(h.putConfig))
	mux.HandleFunc("DELETE /config/{subject}", h.write(h.deleteConfig))
	mux.HandleFunc("GET /mode", h.getMode)
	mux.HandleFunc("PUT /mode", h.write(h.putMode))
	mux.HandleFunc("DELETE /mode", h.write(h.deleteMode))
	mux.HandleFunc("GET /mode/{subject}", h.getMode)
	mux.HandleFunc("PUT /mode/{subject}", h.write(h.putMode))
	mux.HandleFunc("DELETE /mode/{subject}", h.write(h.deleteMode))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

type handler struct {
	reg       *Registry
	authorize func(*http.Request) bool
}

func (h *handler) write(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.authorize == nil || !h.authorize(r) {
			writeError(w, http.StatusForbidden, codeForbidden, "writes to the schema registry (registering, deleting, setting levels and modes) need the operator's credential; this credential may only read")
			return
		}
		next(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", ContentTypeRegistry)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, errorAnswer{ErrorCode: code, Message: msg})
}

// writeErr answers with the Confluent code of err.
func writeErr(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, 50001
	switch {
	case errors.Is(err, ErrSubjectNotFound):
		status, code = http.StatusNotFound, codeSubjectNotFound
	case errors.Is(err, ErrVersionNotFound):
		status, code = http.StatusNotFound, codeVersionNotFound
	case errors.Is(err, ErrSchemaNotFound):
		status, code = http.StatusNotFound, codeSchemaNotFound
	case errors.Is(err, ErrSubjectSoftDeleted):
		status, code = http.StatusNotFound, codeSubjectSoftDeleted
	case errors.Is(err, ErrSubjectNotSoftDeleted):
		status, code = http.StatusNotFound, codeSubjectNotSoftDel
	case errors.Is(err, ErrVersionSoftDeleted):
		status, code = http.StatusNotFound, codeVersionSoftDeleted
	case errors.Is(err, ErrVersionNotSoftDeleted):
		status, code = http.StatusNotFound, codeVersionNotSoftDel
	case errors.Is(err, ErrInvalidMode):
		status, code = http.StatusUnprocessableEntity, codeInvalidMode
	case errors.Is(err, ErrReadOnly):
		status, code = http.StatusUnprocessableEntity, codeReadOnly
	case errors.Is(err, ErrMalformedSchema), errors.Is(err, ErrInvalidSubject):
		status, code = http.StatusUnprocessableEntity, codeInvalidSchema
	case errors.Is(err, ErrInvalidVersion):
		status, code = http.StatusUnprocessableEntity, codeInvalidVersion
	case errors.Is(err, ErrInvalidCompatibility):
		status, code = http.StatusUnprocessableEntity, codeInvalidCompatibility
	case errors.Is(err, ErrIncompatible):
		status, code = http.StatusConflict, codeIncompatible
	}
	writeError(w, status, code, err.Error())
}

// readBody reads a JSON object request body into v. Unknown fields are
// ignored, as Confluent does (newer clients send more than this registry
// knows about).
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !(mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "application/octet-stream") {
			writeError(w, http.StatusUnsupportedMediaType, http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q is not accepted; send %s or application/json", ct, ContentTypeRegistry))
			return false
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, http.StatusBadRequest, "reading the request body: "+err.Error())
		return false
	}
	if len(body) > MaxRequestBody {
		writeError(w, http.StatusRequestEntityTooLarge, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", MaxRequestBody))
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, http.StatusBadRequest, "malformed JSON body: "+strings.TrimPrefix(err.Error(), "json: "))
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, http.StatusBadRequest, "malformed JSON body: data after the object")
		return false
	}
	return true
}

// schemaRequest is the body of register, lookup and compatibility calls.
type schemaRequest struct {
	Schema     string            `json:"schema"`
	SchemaType string            `json:"schemaType"`
	References []json.RawMessage `json:"references"`
}

func (h *handler) readSchema(w http.ResponseWriter, r *http.Request) (string, bool) {
	var req schemaRequest
	if !readBody(w, r, &req) {
		return "", false
	}
	switch {
	case req.SchemaType != "" && !strings.EqualFold(req.SchemaType, "AVRO"):
		writeError(w, http.StatusUnprocessableEntity, codeInvalidSchema, fmt.Sprintf("schema type %q is not supported; this registry holds AVRO schemas only", req.SchemaType))
		return "", false
	case len(req.References) > 0:
		writeError(w, http.StatusUnprocessableEntity, codeInvalidSchema, "schema references are not supported; inline the referenced types")
		return "", false
	case req.Schema == "":
		writeError(w, http.StatusUnprocessableEntity, codeInvalidSchema, `the body has no "schema"`)
		return "", false
	}
	return req.Schema, true
}

// include reads ?deleted=true.
func include(r *http.Request) []Include {
	if b, _ := strconv.ParseBool(r.URL.Query().Get("deleted")); b {
		return []Include{WithDeleted}
	}
	return nil
}

func permanent(r *http.Request) bool {
	b, _ := strconv.ParseBool(r.URL.Query().Get("permanent"))
	return b
}

func (h *handler) listSubjects(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.reg.Subjects(include(r)...))
}

func (h *handler) register(w http.ResponseWriter, r *http.Request) {
	schema, ok := h.readSchema(w, r)
	if !ok {
		return
	}
	v, err := h.reg.Register(r.Context(), r.PathValue("subject"), schema)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"id": v.ID})
}

func (h *handler) lookup(w http.ResponseWriter, r *http.Request) {
	schema, ok := h.readSchema(w, r)
	if !ok {
		return
	}
	v, err := h.reg.Lookup(r.PathValue("subject"), schema)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (h *handler) deleteSubject(w http.ResponseWriter, r *http.Request) {
	versions, err := h.reg.DeleteSubject(r.Context(), r.PathValue("subject"), permanent(r))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, versions)
}

func (h *handler) deleteVersion(w http.ResponseWriter, r *http.Request) {
	n, err := parseVersion(r.PathValue("version"))
	if err == nil {
		n, err = h.reg.DeleteVersion(r.Context(), r.PathValue("subject"), n, permanent(r))
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (h *handler) listVersions(w http.ResponseWriter, r *http.Request) {
	versions, err := h.reg.Versions(r.PathValue("subject"), include(r)...)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, versions)
}

// parseVersion parses a version path segment: a number from 1, "latest",
// or -1 (Confluent's other spelling of latest).
func parseVersion(s string) (int, error) {
	if strings.EqualFold(s, "latest") || s == "-1" {
		return Latest, nil
	}
	v, err := strconv.ParseInt(s, 10, 32)
	if err != nil || v < 1 {
		return 0, fmt.Errorf("%w: %q; use a number from 1 to 2147483647, or \"latest\"", ErrInvalidVersion, s)
	}
	return int(v), nil
}

func (h *handler) version(w http.ResponseWriter, r *http.Request) (SchemaVersion, bool) {
	n, err := parseVersion(r.PathValue("version"))
	if err == nil {
		var v SchemaVersion
		if v, err = h.reg.Version(r.PathValue("subject"), n, include(r)...); err == nil {
			return v, true
		}
	}
	writeErr(w, err)
	return SchemaVersion{}, false
}

func (h *handler) getVersion(w http.ResponseWriter, r *http.Request) {
	if v, ok := h.version(w, r); ok {
		writeJSON(w, http.StatusOK, v)
	}
}

func (h *handler) getVersionSchema(w http.ResponseWriter, r *http.Request) {
	if v, ok := h.version(w, r); ok {
		w.Header().Set("Content-Type", ContentTypeRegistry)
		_, _ = io.WriteString(w, v.Schema)
	}
}

// schemaID reads the {id} path value; false (answered) when it is not one.
func schemaID(w http.ResponseWriter, r *http.Request) (int, bool) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || id < 1 {
		writeError(w, http.StatusNotFound, codeSchemaNotFound, fmt.Sprintf("%v: %q is not a schema id", ErrSchemaNotFound, r.PathValue("id")))
		return 0, false
	}
	return id, true
}

func (h *handler) getSchemaText(w http.ResponseWriter, r *http.Request) {
	id, ok := schemaID(w, r)
	if !ok {
		return
	}
	text, err := h.reg.SchemaByID(id)
	if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", ContentTypeRegistry)
	_, _ = io.WriteString(w, text)
}

// usages answers with the subject versions using the {id} path value
// (shape), or an error.
func (h *handler) usages(shape func([]SubjectVersion) any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := schemaID(w, r)
		if !ok {
			return
		}
		usages, err := h.reg.Usages(id, include(r)...)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, shape(usages))
	}
}

// subjectsOf is the subjects of usages, each once.
func subjectsOf(usages []SubjectVersion) any {
	subjects := []string{}
	for _, u := range usages {
		if !slices.Contains(subjects, u.Subject) {
			subjects = append(subjects, u.Subject)
		}
	}
	return subjects
}

// allSchemas answers GET /schemas: every version of every subject, with
// Confluent's filters subjectPrefix and latestOnly.
func (h *handler) allSchemas(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	prefix := q.Get("subjectPrefix")
	latestOnly, _ := strconv.ParseBool(q.Get("latestOnly"))
	all := h.reg.AllVersions(include(r)...)
	out := make([]SchemaVersion, 0, len(all))
	for i, v := range all {
		if !strings.HasPrefix(v.Subject, prefix) {
			continue
		}
		if latestOnly && i+1 < len(all) && all[i+1].Subject == v.Subject {
			continue
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) getSchema(w http.ResponseWriter, r *http.Request) {
	id, ok := schemaID(w, r)
	if !ok {
		return
	}
	text, err := h.reg.SchemaByID(id)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"schema": text})
}

func (h *handler) checkCompatibility(w http.ResponseWriter, r *http.Request) {
	version := Latest
	if s := r.PathValue("version"); s != "" {
		var err error
		if version, err = parseVersion(s); err != nil {
			writeErr(w, err)
			return
		}
	}
	schema, ok := h.readSchema(w, r)
	if !ok {
		return
	}
	msgs, err := h.reg.CheckCompatibility(r.PathValue("subject"), schema, version)
	if err != nil {
		writeErr(w, err)
		return
	}
	if msgs == nil {
		msgs = []string{}
	}
	writeJSON(w, http.StatusOK, struct {
		IsCompatible bool     `json:"is_compatible"`
		Messages     []string `json:"messages"`
	}{len(msgs) == 0, msgs})
}

// configAnswer carries the level under both names Confluent uses:
// "compatibility" (PUT bodies and answers) and "compatibilityLevel" (GET
// answers).
type configAnswer struct {
	Compatibility      Compatibility `json:"compatibility"`
	CompatibilityLevel Compatibility `json:"compatibilityLevel"`
}

func (h *handler) getConfig(w http.ResponseWriter, r *http.Request) {
	c := h.reg.Compatibility(r.PathValue("subject"))
	writeJSON(w, http.StatusOK, configAnswer{c, c})
}

func (h *handler) putConfig(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Compatibility string `json:"compatibility"`
	}
	if !readBody(w, r, &req) {
		return
	}
	c, err := ParseCompatibility(req.Compatibility)
	if err == nil {
		err = h.reg.SetCompatibility(r.Context(), r.PathValue("subject"), c)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]Compatibility{"compatibility": c})
}

func (h *handler) deleteConfig(w http.ResponseWriter, r *http.Request) {
	c, err := h.reg.DeleteCompatibility(r.Context(), r.PathValue("subject"))
	if err != nil {
		if errors.Is(err, ErrSubjectNotFound) {
			writeError(w, http.StatusNotFound, codeSubjectLevelNotFound, err.Error())
			return
		}
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, configAnswer{c, c})
}

func (h *handler) getMode(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]Mode{"mode": h.reg.Mode(r.PathValue("subject"))})
}

func (h *handler) putMode(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Mode string `json:"mode"`
	}
	if !readBody(w, r, &req) {
		return
	}
	m, err := ParseMode(req.Mode)
	if err == nil {
		err = h.reg.SetMode(r.Context(), r.PathValue("subject"), m)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]Mode{"mode": m})
}

func (h *handler) deleteMode(w http.ResponseWriter, r *http.Request) {
	m, err := h.reg.DeleteMode(r.Context(), r.PathValue("subject"))
	if err != nil {
		if errors.Is(err, ErrSubjectNotFound) {
			writeError(w, http.StatusNotFound, codeSubjectModeNotFound, err.Error())
			return
		}
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]Mode{"mode": m})
}
