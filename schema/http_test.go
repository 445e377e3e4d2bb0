package schema

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func startServer(t *testing.T) (*httptest.Server, *Registry) {
	t.Helper()
	reg := newRegistry(t)
	authorize := func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer secret" }
	mux := http.NewServeMux()
	mux.Handle("/v1/schemas/", http.StripPrefix("/v1/schemas", NewHandler(reg, authorize)))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, reg
}

func schemaBody(schema string) string {
	b, _ := json.Marshal(map[string]string{"schema": schema})
	return string(b)
}

func TestHandler(t *testing.T) {
	srv, _ := startServer(t)
	userV2 := user(`{"name": "email", "type": "string", "default": ""}`)
	userBad := user(`{"name": "phone", "type": "string"}`)

	type step struct {
		name        string
		method      string
		path        string
		body        string
		contentType string // default application/vnd.schemaregistry.v1+json
		noAuth      bool
		status      int
		want        string // the answer as JSON; compared as values
		errorCode   int    // for error answers: the error_code (want is then a substring of the message)
	}
	steps := []step{
		{name: "no subjects", method: "GET", path: "/subjects", status: 200, want: `[]`},
		{name: "schema types", method: "GET", path: "/schemas/types", status: 200, want: `["AVRO"]`},
		{name: "register without credential", method: "POST", path: "/subjects/users/versions", body: schemaBody(userV1), noAuth: true, status: 403, errorCode: 40301, want: "operator's credential"},
		{name: "register", method: "POST", path: "/subjects/users/versions", body: schemaBody(userV1), status: 200, want: `{"id": 1}`},
		{name: "register again, plain JSON", method: "POST", path: "/subjects/users/versions", body: schemaBody(userV1), contentType: "application/json", status: 200, want: `{"id": 1}`},
		{name: "register with schemaType", method: "POST", path: "/subjects/users/versions", body: `{"schemaType": "AVRO", "schema": ` + jsonString(userV1) + `, "metadata": null}`, status: 200, want: `{"id": 1}`},
		{name: "register v2", method: "POST", path: "/subjects/users/versions", body: schemaBody(userV2), contentType: "application/vnd.schemaregistry+json", status: 200, want: `{"id": 2}`},
		{name: "incompatible", method: "POST", path: "/subjects/users/versions", body: schemaBody(userBad), status: 409, errorCode: 409, want: `at phone: field "phone" of record com.acme.User is in the new schema without a default`},
		{name: "malformed schema", method: "POST", path: "/subjects/users/versions", body: schemaBody(`{"type": "record"}`), status: 422, errorCode: 42201, want: "invalid schema"},
		{name: "protobuf", method: "POST", path: "/subjects/users/versions", body: `{"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";"}`, status: 422, errorCode: 42201, want: "AVRO schemas only"},
		{name: "references", method: "POST", path: "/subjects/users/versions", body: `{"schema": "\"string\"", "references": [{"name": "x", "subject": "y", "version": 1}]}`, status: 422, errorCode: 42201, want: "references are not supported"},
		{name: "no schema", method: "POST", path: "/subjects/users/versions", body: `{}`, status: 422, errorCode: 42201, want: `no "schema"`},
		{name: "malformed body", method: "POST", path: "/subjects/users/versions", body: `{"schema": `, status: 400, errorCode: 400, want: "malformed JSON body"},
		{name: "trailing body", method: "POST", path: "/subjects/users/versions", body: schemaBody(userV1) + `{}`, status: 400, errorCode: 400, want: "data after the object"},
		{name: "wrong content type", method: "POST", path: "/subjects/users/versions", body: schemaBody(userV1), contentType: "application/x-www-form-urlencoded", status: 415, errorCode: 415, want: "is not accepted"},
		{name: "oversize body", method: "POST", path: "/subjects/users/versions", body: `{"schema": "` + strings.Repeat(" ", MaxRequestBody) + `"}`, status: 413, errorCode: 413, want: "larger than"},
		{name: "bad subject", method: "POST", path: "/subjects/" + strings.Repeat("x", 300) + "/versions", body: schemaBody(userV1), status: 422, errorCode: 42201, want: "invalid subject name"},
		{name: "subjects", method: "GET", path: "/subjects", status: 200, want: `["users"]`},
		{name: "versions", method: "GET", path: "/subjects/users/versions", status: 200, want: `[1, 2]`},
		{name: "latest", method: "GET", path: "/subjects/users/versions/latest", status: 200, want: mustJSON(SchemaVersion{Subject: "users", Version: 2, ID: 2, Schema: userV2})},
		{name: "version -1", method: "GET", path: "/subjects/users/versions/-1", status: 200, want: mustJSON(SchemaVersion{Subject: "users", Version: 2, ID: 2, Schema: userV2})},
		{name: "version 1", method: "GET", path: "/subjects/users/versions/1", status: 200, want: mustJSON(SchemaVersion{Subject: "users", Version: 1, ID: 1, Schema: userV1})},
		{name: "raw schema", method: "GET", path: "/subjects/users/versions/1/schema", status: 200, want: userV1},
		{name: "version not found", method: "GET", path: "/subjects/users/versions/3", status: 404, errorCode: 40402, want: "versions 1 to 2, not 3"},
		{name: "invalid version", method: "GET", path: "/subjects/users/versions/zero", status: 422, errorCode: 42202, want: `invalid version: "zero"`},
		{name: "subject not found", method: "GET", path: "/subjects/nobody/versions", status: 404, errorCode: 40401, want: "subject not found"},
		{name: "subject not found, version", method: "GET", path: "/subjects/nobody/versions/latest", status: 404, errorCode: 40401, want: "subject not found"},
		{name: "schema by id", method: "GET", path: "/schemas/ids/2", status: 200, want: mustJSON(map[string]string{"schema": userV2})},
		{name: "schema not found", method: "GET", path: "/schemas/ids/9", status: 404, errorCode: 40403, want: "no schema with id 9"},
		{name: "schema id not a number", method: "GET", path: "/schemas/ids/x", status: 404, errorCode: 40403, want: "not a schema id"},
		{name: "lookup", method: "POST", path: "/subjects/users", body: schemaBody(userV1), noAuth: true, status: 200, want: mustJSON(SchemaVersion{Subject: "users", Version: 1, ID: 1, Schema: userV1})},
		{name: "lookup missing", method: "POST", path: "/subjects/users", body: schemaBody(`"string"`), status: 404, errorCode: 40403, want: "no version with this schema"},
		{name: "check compatible", method: "POST", path: "/compatibility/subjects/users/versions/latest", body: schemaBody(user(`{"name": "x", "type": "int", "default": 1}`)), noAuth: true, status: 200, want: `{"is_compatible": true, "messages": []}`},
		{name: "check incompatible", method: "POST", path: "/compatibility/subjects/users/versions/latest", body: schemaBody(userBad), noAuth: true, status: 200,
			want: `{"is_compatible": false, "messages": ["the new schema cannot read data written with version 2: at phone: field \"phone\" of record com.acme.User is in the new schema without a default, and version 2 does not have it (add a default, or keep the field)"]}`},
		{name: "check against version 1", method: "POST", path: "/compatibility/subjects/users/versions/1", body: schemaBody(userBad), status: 200, want: `{"is_compatible": false, "messages": ["the new schema cannot read data written with version 1: at phone: field \"phone\" of record com.acme.User is in the new schema without a default, and version 1 does not have it (add a default, or keep the field)"]}`},
		{name: "check against all", method: "POST", path: "/compatibility/subjects/users/versions", body: schemaBody(userV1), status: 200, want: `{"is_compatible": true, "messages": []}`},
		{name: "check unknown subject", method: "POST", path: "/compatibility/subjects/nobody/versions/latest", body: schemaBody(userV1), status: 404, errorCode: 40401, want: "subject not found"},
		{name: "check bad version", method: "POST", path: "/compatibility/subjects/users/versions/x", body: schemaBody(userV1), status: 422, errorCode: 42202, want: "invalid version"},
		{name: "global config", method: "GET", path: "/config", status: 200, want: `{"compatibility": "BACKWARD", "compatibilityLevel": "BACKWARD"}`},
		{name: "set global without credential", method: "PUT", path: "/config", body: `{"compatibility": "FULL"}`, noAuth: true, status: 403, errorCode: 40301, want: "operator's credential"},
		{name: "set global", method: "PUT", path: "/config", body: `{"compatibility": "full"}`, status: 200, want: `{"compatibility": "FULL"}`},
		{name: "set invalid", method: "PUT", path: "/config", body: `{"compatibility": "SIDEWAYS"}`, status: 422, errorCode: 42203, want: "invalid compatibility level"},
		{name: "subject config falls back", method: "GET", path: "/config/users", status: 200, want: `{"compatibility": "FULL", "compatibilityLevel": "FULL"}`},
		{name: "set subject", method: "PUT", path: "/config/users", body: `{"compatibility": "NONE"}`, status: 200, want: `{"compatibility": "NONE"}`},
		{name: "subject config", method: "GET", path: "/config/users", status: 200, want: `{"compatibility": "NONE", "compatibilityLevel": "NONE"}`},
		{name: "now compatible", method: "POST", path: "/subjects/users/versions", body: schemaBody(userBad), status: 200, want: `{"id": 3}`},
		{name: "delete subject config", method: "DELETE", path: "/config/users", status: 200, want: `{"compatibility": "NONE", "compatibilityLevel": "NONE"}`},
		{name: "delete it again", method: "DELETE", path: "/config/users", status: 404, errorCode: 40408, want: "no compatibility level of its own"},
		{name: "delete without credential", method: "DELETE", path: "/subjects/users", noAuth: true, status: 403, errorCode: 40301, want: "operator's credential"},
		{name: "ids used by", method: "GET", path: "/schemas/ids/2/versions", status: 200, want: `[{"subject": "users", "version": 2}]`},
		{name: "subjects of an id", method: "GET", path: "/schemas/ids/2/subjects", status: 200, want: `["users"]`},
		{name: "permanent before soft", method: "DELETE", path: "/subjects/users/versions/2?permanent=true", status: 404, errorCode: 40407, want: "not soft-deleted"},
		{name: "soft-delete a version", method: "DELETE", path: "/subjects/users/versions/2", status: 200, want: `2`},
		{name: "soft-delete it again", method: "DELETE", path: "/subjects/users/versions/2", status: 404, errorCode: 40406, want: "soft-deleted"},
		{name: "versions without it", method: "GET", path: "/subjects/users/versions", status: 200, want: `[1, 3]`},
		{name: "versions with it", method: "GET", path: "/subjects/users/versions?deleted=true", status: 200, want: `[1, 2, 3]`},
		{name: "the deleted version", method: "GET", path: "/subjects/users/versions/2", status: 404, errorCode: 40402, want: "version not found"},
		{name: "the deleted version, asked for", method: "GET", path: "/subjects/users/versions/2?deleted=true", status: 200, want: mustJSON(SchemaVersion{Subject: "users", Version: 2, ID: 2, Schema: userV2})},
		{name: "id of a deleted version", method: "GET", path: "/schemas/ids/2/versions", status: 200, want: `[]`},
		{name: "id of a deleted version, asked for", method: "GET", path: "/schemas/ids/2/versions?deleted=true", status: 200, want: `[{"subject": "users", "version": 2}]`},
		{name: "hard-delete the version", method: "DELETE", path: "/subjects/users/versions/2?permanent=true", status: 200, want: `2`},
		{name: "gone for good", method: "GET", path: "/subjects/users/versions?deleted=true", status: 200, want: `[1, 3]`},
		{name: "read-only", method: "PUT", path: "/mode", body: `{"mode": "READONLY"}`, status: 200, want: `{"mode": "READONLY"}`},
		{name: "mode", method: "GET", path: "/mode/users", status: 200, want: `{"mode": "READONLY"}`},
		{name: "no register when read-only", method: "POST", path: "/subjects/users/versions", body: schemaBody(`"int"`), status: 422, errorCode: 42205, want: "mode READONLY"},
		{name: "subject read-write", method: "PUT", path: "/mode/users", body: `{"mode": "READWRITE"}`, status: 200, want: `{"mode": "READWRITE"}`},
		{name: "no import", method: "PUT", path: "/mode", body: `{"mode": "IMPORT"}`, status: 422, errorCode: 42204, want: "IMPORT is not supported"},
		{name: "back to read-write", method: "DELETE", path: "/mode", status: 200, want: `{"mode": "READONLY"}`},
		{name: "drop the subject's mode", method: "DELETE", path: "/mode/users", status: 200, want: `{"mode": "READWRITE"}`},
		{name: "no mode of its own", method: "DELETE", path: "/mode/users", status: 404, errorCode: 40409, want: "no mode of its own"},
		{name: "permanent subject before soft", method: "DELETE", path: "/subjects/users?permanent=true", status: 404, errorCode: 40405, want: "not soft-deleted"},
		{name: "delete subject", method: "DELETE", path: "/subjects/users", status: 200, want: `[1, 3]`},
		{name: "delete subject again", method: "DELETE", path: "/subjects/users", status: 404, errorCode: 40404, want: "soft-deleted"},
		{name: "deleted", method: "GET", path: "/subjects/users/versions", status: 404, errorCode: 40401, want: "subject not found"},
		{name: "listed when asked", method: "GET", path: "/subjects?deleted=true", status: 200, want: `["users"]`},
		{name: "all schemas", method: "GET", path: "/schemas?deleted=true&latestOnly=true", status: 200, want: mustJSON([]SchemaVersion{{Subject: "users", Version: 3, ID: 3, Schema: userBad}})},
		{name: "hard-delete the subject", method: "DELETE", path: "/subjects/users?permanent=true", status: 200, want: `[1, 3]`},
		{name: "not even when asked", method: "GET", path: "/subjects?deleted=true", status: 200, want: `[]`},
		{name: "ids survive", method: "GET", path: "/schemas/ids/3", status: 200, want: mustJSON(map[string]string{"schema": userBad})},
		{name: "escaped subject", method: "POST", path: "/subjects/a%2Fb/versions", body: schemaBody(`"string"`), status: 200, want: `{"id": 4}`},
		{name: "escaped subject listed", method: "GET", path: "/subjects", status: 200, want: `["a/b"]`},
		{name: "unknown endpoint", method: "GET", path: "/nothing", status: 404, errorCode: 404, want: "no such endpoint: GET /nothing"},
		{name: "wrong method", method: "PATCH", path: "/subjects", status: 404, errorCode: 404, want: "no such endpoint"},
	}
	for _, s := range steps {
		var body io.Reader
		if s.body != "" {
			body = strings.NewReader(s.body)
		}
		req, err := http.NewRequestWithContext(context.Background(), s.method, srv.URL+"/v1/schemas"+s.path, body)
		if err != nil {
			t.Fatal(err)
		}
		if s.body != "" {
			ct := s.contentType
			if ct == "" {
				ct = ContentTypeRegistry
			}
			req.Header.Set("Content-Type", ct)
		}
		if !s.noAuth {
			req.Header.Set("Authorization", "Bearer secret")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != s.status {
			t.Errorf("%s: status %d, want %d; body %s", s.name, resp.StatusCode, s.status, got)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); ct != ContentTypeRegistry {
			t.Errorf("%s: content type %q", s.name, ct)
		}
		if s.errorCode != 0 {
			var e errorAnswer
			if err := json.Unmarshal(got, &e); err != nil || e.ErrorCode != s.errorCode || !strings.Contains(e.Message, s.want) {
				t.Errorf("%s: answer %s, want error_code %d and a message containing %q", s.name, got, s.errorCode, s.want)
			}
			continue
		}
		if s.name == "raw schema" {
			if string(got) != s.want {
				t.Errorf("%s: %s, want %s", s.name, got, s.want)
			}
			continue
		}
		var gotV, wantV any
		if err := json.Unmarshal(got, &gotV); err != nil {
			t.Errorf("%s: answer %s is not JSON: %v", s.name, got, err)
			continue
		}
		if err := json.Unmarshal([]byte(s.want), &wantV); err != nil {
			t.Fatalf("%s: bad want: %v", s.name, err)
		}
		if !reflect.DeepEqual(gotV, wantV) {
			t.Errorf("%s: answer %s\nwant %s", s.name, got, s.want)
		}
	}
}

// TestHandlerNilAuthorize: without an authorize function every write is
// refused and every read works.
func TestHandlerNilAuthorize(t *testing.T) {
	reg := newRegistry(t)
	mustRegister(t, reg, "users", userV1)
	srv := httptest.NewServer(NewHandler(reg, nil))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/subjects/users/versions", ContentTypeRegistry, strings.NewReader(schemaBody(userV1)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("write: %d", resp.StatusCode)
	}
	resp, err = http.Get(srv.URL + "/subjects/users/versions/latest")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("read: %d", resp.StatusCode)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
