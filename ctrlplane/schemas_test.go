package ctrlplane_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/schema"
)

const customerV1 = `{"type":"record","name":"Customer","namespace":"com.acme","fields":[
 {"name":"id","type":"string"},{"name":"name","type":"string"}]}`

// customerV2 adds a field with a default: BACKWARD compatible.
const customerV2 = `{"type":"record","name":"Customer","namespace":"com.acme","fields":[
 {"name":"id","type":"string"},{"name":"name","type":"string"},
 {"name":"email","type":"string","default":""}]}`

// customerBad adds a field without a default: refused under BACKWARD.
const customerBad = `{"type":"record","name":"Customer","namespace":"com.acme","fields":[
 {"name":"id","type":"string"},{"name":"name","type":"string"},
 {"name":"phone","type":"string"}]}`

// openSchemas opens a bbolt schema store in dir, closed when the test ends.
func openSchemas(t testing.TB, dir string) *schema.BoltStore {
	t.Helper()
	st, err := schema.OpenBoltStore(filepath.Join(dir, ctrlplane.SchemaFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// withSchemas gives the control plane a bbolt schema registry in dir.
func withSchemas(st schema.Store) func(*ctrlplane.Options) {
	return func(o *ctrlplane.Options) { o.SchemaStore = st }
}

// schemaBody is a register, lookup or compatibility body.
func schemaBody(t testing.TB, text string) string {
	t.Helper()
	b, err := json.Marshal(map[string]string{"schema": text})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// registryError decodes the registry's {"error_code","message"} answer.
func registryError(t testing.TB, a answer, status, code int) string {
	t.Helper()
	var eb struct {
		ErrorCode int    `json:"error_code"`
		Message   string `json:"message"`
	}
	if err := json.Unmarshal(a.body, &eb); err != nil || a.status != status || eb.ErrorCode != code || eb.Message == "" {
		t.Fatalf("answer %d %s, want %d with error_code %d (%v)", a.status, a.body, status, code, err)
	}
	if ct := a.header.Get("Content-Type"); ct != schema.ContentTypeRegistry {
		t.Fatalf("content type %q, want %q", ct, schema.ContentTypeRegistry)
	}
	return eb.Message
}

func decodeAnswer[T any](t testing.TB, a answer, status int) T {
	t.Helper()
	var v T
	if a.status != status {
		t.Fatalf("answer %d %s, want %d", a.status, a.body, status)
	}
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("answer %s: %v", a.body, err)
	}
	return v
}

// TestSchemaRegistryAPI: the registry at Confluent's paths on the control
// plane's port, with its credentials: any valid credential reads, the
// operator token writes; a new control plane on the same file has it all.
func TestSchemaRegistryAPI(t *testing.T) {
	dir := t.TempDir()
	schemas := openSchemas(t, dir)
	c := startCP(t, openBolt(t, dir), "", withSchemas(schemas))
	op := client(t, c.url, testToken)
	appCred := mustCreate(t, op, "orders")

	// Writes: no credential, an unknown one: 401 40101; an app's, which
	// is a valid credential without the right: 403 40301.
	for _, tok := range []string{"", "not-a-credential"} {
		a := do(t, "POST", c.url+"/subjects/customers/versions", tok, schemaBody(t, customerV1))
		registryError(t, a, 401, 40101)
	}
	registryError(t, do(t, "POST", c.url+"/subjects/customers/versions", appCred, schemaBody(t, customerV1)), 403, 40301)
	// Reads need a credential too.
	registryError(t, do(t, "GET", c.url+"/subjects", "", ""), 401, 40101)

	reg := decodeAnswer[map[string]int](t, do(t, "POST", c.url+"/subjects/customers/versions", testToken, schemaBody(t, customerV1)), 200)
	if reg["id"] != 1 {
		t.Fatalf("register = %v, want id 1", reg)
	}
	// The same schema again (other whitespace): the same id, no new version.
	again := decodeAnswer[map[string]int](t, do(t, "POST", c.url+"/subjects/customers/versions", testToken, schemaBody(t, strings.ReplaceAll(customerV1, "\n", ""))), 200)
	if again["id"] != 1 {
		t.Fatalf("registering the same schema again = %v", again)
	}

	for _, tok := range []string{testToken, appCred} {
		if got := decodeAnswer[[]string](t, do(t, "GET", c.url+"/subjects", tok, ""), 200); len(got) != 1 || got[0] != "customers" {
			t.Fatalf("GET /subjects = %v", got)
		}
	}
	v := decodeAnswer[api.SchemaVersion](t, do(t, "GET", c.url+"/subjects/customers/versions/latest", appCred, ""), 200)
	if v.Subject != "customers" || v.Version != 1 || v.ID != 1 || !strings.Contains(v.Schema, `"name":"Customer"`) {
		t.Fatalf("latest = %+v", v)
	}
	byID := decodeAnswer[map[string]string](t, do(t, "GET", c.url+"/schemas/ids/1", appCred, ""), 200)
	if byID["schema"] != v.Schema {
		t.Fatalf("GET /schemas/ids/1 = %v", byID)
	}
	registryError(t, do(t, "GET", c.url+"/schemas/ids/7", testToken, ""), 404, 40403)
	registryError(t, do(t, "GET", c.url+"/subjects/nope/versions/1", testToken, ""), 404, 40401)

	// Compatibility, a dry run: v2 passes, the bad one does not and says why.
	ok := decodeAnswer[api.CompatibilityResult](t, do(t, "POST", c.url+"/compatibility/subjects/customers/versions/latest", appCred, schemaBody(t, customerV2)), 200)
	if !ok.IsCompatible || len(ok.Messages) != 0 {
		t.Fatalf("v2 check = %+v", ok)
	}
	bad := decodeAnswer[api.CompatibilityResult](t, do(t, "POST", c.url+"/compatibility/subjects/customers/versions/latest", appCred, schemaBody(t, customerBad)), 200)
	if bad.IsCompatible || len(bad.Messages) != 1 || !strings.Contains(bad.Messages[0], `"phone"`) || !strings.Contains(bad.Messages[0], "without a default") {
		t.Fatalf("bad check = %+v", bad)
	}
	// Registering it is refused with the same reasons.
	msg := registryError(t, do(t, "POST", c.url+"/subjects/customers/versions", testToken, schemaBody(t, customerBad)), 409, 409)
	if !strings.Contains(msg, "version 1") || !strings.Contains(msg, `field "phone"`) || !strings.Contains(msg, "add a default") {
		t.Fatalf("incompatible register: %s", msg)
	}
	msg = registryError(t, do(t, "POST", c.url+"/subjects/customers/versions", testToken, schemaBody(t, `{"type":"record","name":"X"}`)), 422, 42201)
	if !strings.Contains(msg, "fields") {
		t.Fatalf("malformed schema: %s", msg)
	}

	// Config: reads for everyone with a credential, writes for the operator.
	registryError(t, do(t, "PUT", c.url+"/config/customers", appCred, `{"compatibility":"NONE"}`), 403, 40301)
	if got := decodeAnswer[map[string]string](t, do(t, "GET", c.url+"/config", appCred, ""), 200); got["compatibilityLevel"] != "BACKWARD" {
		t.Fatalf("GET /config = %v", got)
	}
	if got := decodeAnswer[map[string]string](t, do(t, "PUT", c.url+"/config/customers", testToken, `{"compatibility":"NONE"}`), 200); got["compatibility"] != "NONE" {
		t.Fatalf("PUT /config/customers = %v", got)
	}
	if got := decodeAnswer[map[string]string](t, do(t, "GET", c.url+"/config/customers", appCred, ""), 200); got["compatibilityLevel"] != "NONE" {
		t.Fatalf("GET /config/customers = %v", got)
	}
	// Under NONE the version that was refused is accepted.
	if got := decodeAnswer[map[string]int](t, do(t, "POST", c.url+"/subjects/customers/versions", testToken, schemaBody(t, customerBad)), 200); got["id"] != 2 {
		t.Fatalf("register under NONE = %v", got)
	}
	if got := decodeAnswer[[]int](t, do(t, "GET", c.url+"/subjects/customers/versions", testToken, ""), 200); len(got) != 2 {
		t.Fatalf("versions = %v", got)
	}

	// Everything is in the schema file: a new control plane on it has it.
	c.stop()
	_ = schemas.Close()
	c2 := startCP(t, c.store, "", withSchemas(openSchemas(t, dir)))
	v = decodeAnswer[api.SchemaVersion](t, do(t, "GET", c2.url+"/subjects/customers/versions/2", testToken, ""), 200)
	if v.ID != 2 || !strings.Contains(v.Schema, "phone") {
		t.Fatalf("after a restart: %+v", v)
	}
	if got := decodeAnswer[map[string]string](t, do(t, "GET", c2.url+"/config/customers", testToken, ""), 200); got["compatibilityLevel"] != "NONE" {
		t.Fatalf("after a restart: GET /config/customers = %v", got)
	}
}

// TestSchemaClient: the Go client's schema calls and their errors.
func TestSchemaClient(t *testing.T) {
	c := startCP(t, openBolt(t, t.TempDir()), "", withSchemas(openSchemas(t, t.TempDir())))
	op := client(t, c.url, testToken)
	ctx := t.Context()
	if _, err := op.CheckSchema(ctx, "customers", customerV1); !errors.Is(err, ctrlclient.ErrNotFound) {
		t.Fatalf("check on a subject without versions: %v", err)
	}
	v1, err := op.RegisterSchema(ctx, "customers", customerV1)
	if err != nil || v1.Version != 1 || v1.Subject != "customers" {
		t.Fatalf("RegisterSchema = %+v, %v", v1, err)
	}
	_, err = op.RegisterSchema(ctx, "customers", customerBad)
	var ae *ctrlclient.APIError
	if !errors.Is(err, ctrlclient.ErrConflict) || !errors.As(err, &ae) || ae.Code != "409" || !strings.Contains(err.Error(), `field "phone"`) {
		t.Fatalf("incompatible RegisterSchema: %v", err)
	}
	if _, err := op.RegisterSchema(ctx, "customers", "{"); !errors.Is(err, ctrlclient.ErrInvalid) {
		t.Fatalf("malformed RegisterSchema: %v", err)
	}
	v2, err := op.RegisterSchema(ctx, "customers", customerV2)
	if err != nil || v2.Version != 2 || v2.ID == v1.ID {
		t.Fatalf("RegisterSchema v2 = %+v, %v", v2, err)
	}
	if got, err := op.Schema(ctx, "customers", api.LatestVersion); err != nil || got != v2 {
		t.Fatalf("Schema(latest) = %+v, %v", got, err)
	}
	if got, err := op.Schema(ctx, "customers", 1); err != nil || got != v1 {
		t.Fatalf("Schema(1) = %+v, %v", got, err)
	}
	if _, err := op.Schema(ctx, "customers", 3); !errors.Is(err, ctrlclient.ErrNotFound) || !strings.Contains(err.Error(), "40402") {
		t.Fatalf("Schema(3): %v", err)
	}
	if got, err := op.SchemaVersions(ctx, "customers"); err != nil || len(got) != 2 {
		t.Fatalf("SchemaVersions = %v, %v", got, err)
	}
	if got, err := op.Subjects(ctx); err != nil || len(got) != 1 {
		t.Fatalf("Subjects = %v, %v", got, err)
	}
	if res, err := op.CheckSchema(ctx, "customers", customerBad); err != nil || res.IsCompatible || len(res.Messages) == 0 {
		t.Fatalf("CheckSchema(bad) = %+v, %v", res, err)
	}
	// An app's credential reads but does not write.
	created, err := op.CreateApp(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	app := client(t, c.url, created.Credential)
	if _, err := app.Schema(ctx, "customers", 1); err != nil {
		t.Fatalf("read with an app credential: %v", err)
	}
	if _, err := app.RegisterSchema(ctx, "customers", customerV1); !errors.Is(err, ctrlclient.ErrForbidden) {
		t.Fatalf("write with an app credential: %v", err)
	}
	if _, err := app.SetSchemaPolicy(ctx, "customers", "warn"); !errors.Is(err, ctrlclient.ErrForbidden) {
		t.Fatalf("policy write with an app credential: %v", err)
	}
}

// TestSchemaPolicies: the operator API for the topics' policies.
func TestSchemaPolicies(t *testing.T) {
	c := startBolt(t)
	op := client(t, c.url, testToken)
	ctx := t.Context()
	if got, err := op.SchemaPolicies(ctx); err != nil || len(got) != 0 {
		t.Fatalf("no policies yet: %v, %v", got, err)
	}
	if got, err := op.SchemaPolicy(ctx, "orders"); err != nil || got != (api.SchemaPolicy{Topic: "orders", Policy: "enforce", SubjectStrategy: "topic_name", Default: true}) {
		t.Fatalf("default policy = %+v, %v", got, err)
	}
	if got, err := op.SetSchemaPolicy(ctx, "orders", "WARN"); err != nil || got.Policy != "warn" {
		t.Fatalf("SetSchemaPolicy = %+v, %v", got, err)
	}
	if _, err := op.SetSchemaPolicy(ctx, "a.b/c d", "off"); err != nil {
		t.Fatalf("a topic with a slash and a space: %v", err)
	}
	if got, err := op.SchemaPolicies(ctx); err != nil || len(got) != 2 || got["orders"] != "warn" || got["a.b/c d"] != "off" {
		t.Fatalf("SchemaPolicies = %v, %v", got, err)
	}
	// A subject name strategy alone keeps the policy; both reach the
	// apps' configs.
	if got := decodeAnswer[api.SchemaPolicy](t, do(t, "PUT", c.url+"/v1/schema-policies/orders", testToken, `{"subject_strategy":"record_name"}`), 200); got.Policy != "warn" || got.SubjectStrategy != "record_name" {
		t.Fatalf("PUT subject_strategy = %+v", got)
	}
	if _, err := op.CreateApp(ctx, "billing"); err != nil {
		t.Fatal(err)
	}
	cfg, err := op.Config(ctx, "billing")
	if err != nil || cfg.SchemaStrategies["orders"] != "record_name" || cfg.SchemaPolicies["orders"] != "warn" {
		t.Fatalf("app config: strategies %v, policies %v, %v", cfg.SchemaStrategies, cfg.SchemaPolicies, err)
	}
	for _, tc := range []struct{ topic, body, msg string }{
		{"orders", `{"policy":"loud"}`, `policy: "loud" is not a policy; use enforce, warn or off`},
		{"orders", `{}`, "policy: required"},
		{"orders", `{"subject_strategy":"by_magic"}`, `subject_strategy: "by_magic" is not a subject name strategy`},
		{"orders", `{"policy":"warn","x":1}`, "x: unknown field"},
		{"bad%01topic", `{"policy":"warn"}`, "topic: invalid subject name: control character"},
	} {
		a := do(t, "PUT", c.url+"/v1/schema-policies/"+tc.topic, testToken, tc.body)
		if eb := a.errorBody(t); a.status != 400 || eb.Code != api.CodeInvalid || !strings.Contains(eb.Message, tc.msg) {
			t.Errorf("PUT %s %s: %d %+v, want 400 mentioning %q", tc.topic, tc.body, a.status, eb, tc.msg)
		}
	}
	if a := do(t, "PUT", c.url+"/v1/schema-policies/orders", "", `{"policy":"off"}`); a.status != 401 {
		t.Fatalf("PUT without a token: %d", a.status)
	}
	if err := op.DeleteSchemaPolicy(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if err := op.DeleteSchemaPolicy(ctx, "orders"); !errors.Is(err, ctrlclient.ErrNotFound) {
		t.Fatalf("deleting it again: %v", err)
	}
	if got, err := op.SchemaPolicy(ctx, "a.b/c d"); err != nil || got.Policy != "off" || got.Default {
		t.Fatalf("SchemaPolicy = %+v, %v", got, err)
	}
}

// TestSchemaPush: schemas and policies reach every watching sidecar's
// config within a second, with a version that grows, and only their own
// changes (not the compatibility level) push a new config.
func TestSchemaPush(t *testing.T) {
	dir := t.TempDir()
	c := startCP(t, openBolt(t, dir), "", withSchemas(openSchemas(t, dir)))
	op := client(t, c.url, testToken)
	ctx := t.Context()
	var recs []*configs
	for _, app := range []string{"orders", "billing"} {
		cred := mustCreate(t, op, app, "10.0.0.1:7610")
		rec := newConfigs()
		watch(t, client(t, c.url, cred), app, rec)
		rec.waitFor(t, 5*time.Second, "the first config", func(cfg api.AppConfig) bool { return cfg.Version > 0 })
		recs = append(recs, rec)
	}
	first, err := op.Config(ctx, "orders")
	if err != nil || first.Schemas != nil {
		t.Fatalf("config before any schema: %+v, %v", first, err)
	}
	waitAll := func(what string, ok func(api.AppConfig) bool) {
		t.Helper()
		start := time.Now()
		for _, rec := range recs {
			got := rec.waitFor(t, 5*time.Second, what, ok)
			if d := got.at.Sub(start); d > maxPropagation {
				t.Errorf("%s reached a watcher after %v, want under %v", what, d, maxPropagation)
			}
		}
	}

	v1, err := op.RegisterSchema(ctx, "customers", customerV1)
	if err != nil {
		t.Fatal(err)
	}
	waitAll("schema version 1", func(cfg api.AppConfig) bool {
		ts, ok := cfg.Schemas["customers"]
		return ok && ts.Subject == "customers" && ts.Policy == "enforce" && len(ts.Versions) == 1 &&
			ts.Versions[0] == api.SchemaVersion{Version: 1, ID: v1.ID, Schema: v1.Schema}
	})
	if _, err := op.SetSchemaPolicy(ctx, "customers", "warn"); err != nil {
		t.Fatal(err)
	}
	waitAll("policy warn", func(cfg api.AppConfig) bool { return cfg.Schemas["customers"].Policy == "warn" })
	v2, err := op.RegisterSchema(ctx, "customers", customerV2)
	if err != nil {
		t.Fatal(err)
	}
	waitAll("schema version 2", func(cfg api.AppConfig) bool {
		ts := cfg.Schemas["customers"]
		return len(ts.Versions) == 2 && ts.Versions[1].ID == v2.ID && ts.Policy == "warn"
	})

	// Versions grew with every change, and the operator's view agrees.
	last, err := op.Config(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	recs[0].mu.Lock()
	prev := uint64(0)
	for _, s := range recs[0].seen {
		if s.cfg.Version <= prev {
			t.Errorf("config versions did not grow: %d after %d", s.cfg.Version, prev)
		}
		prev = s.cfg.Version
	}
	recs[0].mu.Unlock()
	if prev != last.Version {
		t.Fatalf("the watcher's last version %d, the config's %d", prev, last.Version)
	}
	if a, err := op.GetApp(ctx, "orders"); err != nil || a.Version != last.Version {
		t.Fatalf("GetApp version %d, config version %d (%v)", a.Version, last.Version, err)
	}

	// A compatibility level changes nothing a sidecar validates with: no
	// new config. A deleted subject leaves the config.
	if a := do(t, "PUT", c.url+"/config/customers", testToken, `{"compatibility":"FULL"}`); a.status != 200 {
		t.Fatalf("PUT /config/customers: %d %s", a.status, a.body)
	}
	if now, err := op.Config(ctx, "orders"); err != nil || now.Version != last.Version {
		t.Fatalf("a compatibility change moved the version %d → %d (%v)", last.Version, now.Version, err)
	}
	if a := do(t, "DELETE", c.url+"/subjects/customers", testToken, ""); a.status != 200 {
		t.Fatalf("DELETE /subjects/customers: %d %s", a.status, a.body)
	}
	waitAll("the subject gone", func(cfg api.AppConfig) bool { return cfg.Version > last.Version && cfg.Schemas == nil })
}
