package msgmesh_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/riferrei/srclient"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// keySchema is the key schema of the tests' topic: a record, as
// Confluent's key serializers would register it under "<topic>-key".
const keySchema = `{"type":"record","name":"OrderKey","namespace":"com.acme","fields":[{"name":"id","type":"string"}]}`

// TestConfluentRegistryClients: two independent Confluent clients,
// franz-go's pkg/sr and riferrei/srclient, work against the control
// plane's registry with Basic authentication (basic.auth.user.info),
// making every call of theirs that docs/schemas.md says is supported; a
// valid credential without the right to write gets 403. Records they
// serialize (the Confluent wire format, value and key schemas registered
// the TopicNameStrategy way as "<topic>-value" and "<topic>-key") are
// validated by the sidecar joined to that control plane: valid ones
// published, invalid ones refused with SCHEMA_INVALID.
func TestConfluentRegistryClients(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(2*time.Minute))
	defer cancel()
	cpURL, _ := controlPlaneAt(t, t.TempDir(), "127.0.0.1:0")
	op, err := ctrlclient.New(cpURL, cpToken)
	if err != nil {
		t.Fatal(err)
	}
	created, err := op.CreateApp(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}

	// franz-go: every supported call.
	rcl, err := sr.NewClient(sr.URLs(cpURL), sr.BasicAuth(ctrlplane.OperatorUser, cpToken))
	if err != nil {
		t.Fatal(err)
	}
	value, key := topic+"-value", topic+"-key"
	avroSchema := func(text string) sr.Schema { return sr.Schema{Schema: text, Type: sr.TypeAvro} }
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("franz-go %s: %v", what, err)
		}
	}
	types, err := rcl.SupportedTypes(ctx)
	must("SupportedTypes", err)
	if !slices.Contains(types, sr.TypeAvro) {
		t.Errorf("SupportedTypes = %v", types)
	}
	v1, err := rcl.CreateSchema(ctx, value, avroSchema(orderV1))
	must("CreateSchema", err) // GET /schemas/ids/{id}/versions was missing
	if v1.Version != 1 || v1.Subject != value {
		t.Errorf("CreateSchema = %+v", v1)
	}
	kv, err := rcl.CreateSchema(ctx, key, avroSchema(keySchema))
	must("CreateSchema key", err)
	subjects, err := rcl.Subjects(ctx)
	must("Subjects", err)
	if !slices.Equal(subjects, []string{key, value}) {
		t.Errorf("Subjects = %v", subjects)
	}
	byID, err := rcl.SchemaByID(ctx, v1.ID)
	must("SchemaByID", err)
	text, err := rcl.SchemaTextByID(ctx, v1.ID)
	must("SchemaTextByID", err)
	if byID.Schema != orderV1 || text != orderV1 {
		t.Errorf("SchemaByID/SchemaTextByID = %q / %q", byID.Schema, text)
	}
	ids, err := rcl.SubjectsByID(ctx, v1.ID)
	must("SubjectsByID", err)
	svs, err := rcl.SchemaVersionsByID(ctx, v1.ID)
	must("SchemaVersionsByID", err)
	if !slices.Equal(ids, []string{value}) || len(svs) != 1 || svs[0].Subject != value || svs[0].Version != 1 {
		t.Errorf("SubjectsByID = %v, SchemaVersionsByID = %v", ids, svs)
	}
	v2id, err := rcl.RegisterSchema(ctx, value, avroSchema(orderV2), -1, -1)
	must("RegisterSchema", err)
	versions, err := rcl.SubjectVersions(ctx, value)
	must("SubjectVersions", err)
	if !slices.Equal(versions, []int{1, 2}) {
		t.Errorf("SubjectVersions = %v", versions)
	}
	latest, err := rcl.SchemaByVersion(ctx, value, -1)
	must("SchemaByVersion", err)
	if latest.ID != v2id || latest.Version != 2 {
		t.Errorf("SchemaByVersion(latest) = %+v, want id %d", latest, v2id)
	}
	if s, err := rcl.SchemaTextByVersion(ctx, value, 1); err != nil || s != orderV1 {
		t.Errorf("SchemaTextByVersion = %q, %v", s, err)
	}
	all, err := rcl.AllSchemas(ctx)
	must("AllSchemas", err)
	if len(all) != 3 {
		t.Errorf("AllSchemas = %d versions, want 3", len(all))
	}
	ss, err := rcl.Schemas(ctx, value)
	must("Schemas", err)
	if len(ss) != 2 {
		t.Errorf("Schemas = %d, want 2", len(ss))
	}
	found, err := rcl.LookupSchema(ctx, value, avroSchema(orderV1))
	must("LookupSchema", err)
	if found.Version != 1 {
		t.Errorf("LookupSchema = %+v", found)
	}
	cc, err := rcl.CheckCompatibility(ctx, value, -1, avroSchema(`"string"`))
	must("CheckCompatibility", err)
	if cc.Is {
		t.Errorf("CheckCompatibility of a string against a record: compatible")
	}
	for _, r := range rcl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatFull}, value) {
		must("SetCompatibility", r.Err)
	}
	for _, r := range rcl.Compatibility(ctx, value) {
		if r.Err != nil || r.Level != sr.CompatFull {
			t.Errorf("Compatibility = %+v", r)
		}
	}
	for _, r := range rcl.ResetCompatibility(ctx, value) {
		must("ResetCompatibility", r.Err)
	}
	for _, r := range rcl.SetMode(ctx, sr.ModeReadOnly, value) {
		must("SetMode", r.Err)
	}
	if _, err := rcl.CreateSchema(ctx, value, avroSchema(`"string"`)); !isCode(err, 42205) {
		t.Errorf("register in READONLY: %v, want 42205", err)
	}
	for _, r := range rcl.Mode(ctx, value) {
		if r.Err != nil || r.Mode != sr.ModeReadOnly {
			t.Errorf("Mode = %+v", r)
		}
	}
	for _, r := range rcl.ResetMode(ctx, value) {
		must("ResetMode", r.Err)
	}
	// A scratch subject, deleted soft then hard, by version and whole.
	scratch := "scratch-value"
	if _, err := rcl.CreateSchema(ctx, scratch, avroSchema(`"int"`)); err != nil {
		t.Fatal(err)
	}
	if _, err := rcl.CreateSchema(ctx, scratch, avroSchema(`"long"`)); err != nil {
		t.Fatal(err)
	}
	if err := rcl.DeleteSchema(ctx, scratch, 2, sr.HardDelete); !isCode(err, 40407) {
		t.Errorf("hard delete before soft: %v, want 40407", err)
	}
	must("DeleteSchema soft", rcl.DeleteSchema(ctx, scratch, 2, sr.SoftDelete))
	must("DeleteSchema hard", rcl.DeleteSchema(ctx, scratch, 2, sr.HardDelete))
	del, err := rcl.DeleteSubject(ctx, scratch, sr.SoftDelete)
	must("DeleteSubject soft", err)
	if !slices.Equal(del, []int{1}) {
		t.Errorf("DeleteSubject = %v", del)
	}
	if _, err := rcl.DeleteSubject(ctx, scratch, sr.HardDelete); err != nil {
		t.Errorf("DeleteSubject hard: %v", err)
	}
	// An app's credential reads, and may not write: 403.
	app, err := sr.NewClient(sr.URLs(cpURL), sr.BasicAuth("orders", created.Credential))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Subjects(ctx); err != nil {
		t.Errorf("read with the app's credential: %v", err)
	}
	var re *sr.ResponseError
	if _, err := app.CreateSchema(ctx, value, avroSchema(`"string"`)); !errors.As(err, &re) || re.StatusCode != http.StatusForbidden || re.ErrorCode != 40301 {
		t.Errorf("write with the app's credential: %v, want 403 40301", err)
	}
	if _, err := sr.NewClient(sr.URLs(cpURL), sr.BasicAuth("someone", cpToken)); err == nil {
		nobody, _ := sr.NewClient(sr.URLs(cpURL), sr.BasicAuth("someone", cpToken))
		if _, err := nobody.Subjects(ctx); !errors.As(err, &re) || re.StatusCode != http.StatusUnauthorized {
			t.Errorf("the operator token under another user name: %v, want 401", err)
		}
	}

	// srclient: every supported call.
	src := srclient.CreateSchemaRegistryClient(cpURL)
	src.SetCredentials(ctrlplane.OperatorUser, cpToken)
	src.CachingEnabled(false)
	other := "other-value"
	s1, err := src.CreateSchema(other, orderV1, srclient.Avro)
	if err != nil {
		t.Fatalf("srclient CreateSchema: %v", err)
	}
	if s1.ID() != v1.ID {
		t.Errorf("srclient CreateSchema of a known schema: id %d, want %d", s1.ID(), v1.ID)
	}
	checks := map[string]error{}
	_, checks["GetSchema"] = src.GetSchema(v1.ID)
	_, checks["GetLatestSchema"] = src.GetLatestSchema(value)
	_, checks["GetSchemaByVersion"] = src.GetSchemaByVersion(value, 2)
	_, checks["GetSchemaVersions"] = src.GetSchemaVersions(value)
	_, checks["GetSubjects"] = src.GetSubjects()
	_, checks["GetSubjectsIncludingDeleted"] = src.GetSubjectsIncludingDeleted()
	_, checks["GetSubjectVersionsById"] = src.GetSubjectVersionsById(v1.ID)
	_, checks["LookupSchema"] = src.LookupSchema(value, orderV1, srclient.Avro)
	_, checks["IsSchemaCompatible"] = src.IsSchemaCompatible(value, orderV2, "latest", srclient.Avro)
	_, checks["ChangeSubjectCompatibilityLevel"] = src.ChangeSubjectCompatibilityLevel(other, srclient.Forward)
	_, checks["GetCompatibilityLevel"] = src.GetCompatibilityLevel(other, true)
	_, checks["GetGlobalCompatibilityLevel"] = src.GetGlobalCompatibilityLevel()
	checks["DeleteSubjectByVersion"] = src.DeleteSubjectByVersion(other, 1, false)
	if _, err := src.CreateSchema(other, orderV2, srclient.Avro); err != nil {
		t.Errorf("srclient CreateSchema after a soft delete: %v", err)
	}
	// DeleteSubject(permanent) soft-deletes, then deletes for good, in two
	// requests, as Confluent's registry wants.
	checks["DeleteSubject permanent"] = src.DeleteSubject(other, true)
	if _, err := src.CreateSchema("third-value", `"int"`, srclient.Avro); err != nil {
		t.Fatal(err)
	}
	checks["DeleteSubject"] = src.DeleteSubject("third-value", false)
	for name, err := range checks {
		if err != nil {
			t.Errorf("srclient %s: %v", name, err)
		}
	}
	if vs, _ := src.GetSubjectVersionsById(v1.ID); len(vs) != 1 {
		t.Errorf("srclient GetSubjectVersionsById = %v", vs)
	}

	// The sidecar, joined to the control plane, validates what these
	// clients serialize.
	broker := sidecartest.NATSCluster(t)
	cfgPath := filepath.Join(t.TempDir(), "msgmesh.yaml")
	if err := os.WriteFile(cfgPath, []byte(sidecartest.ClusterYAML(broker)), 0o600); err != nil {
		t.Fatal(err)
	}
	meshAddr, httpAddr, fwdAddr := freePort(t), freePort(t), freePort(t)
	if _, _, err := op.PutInstance(ctx, "orders", api.InstanceSpec{Addr: fwdAddr}); err != nil {
		t.Fatal(err)
	}
	p := sidecartest.StartProcEnv(t, []string{"MSGMESH_APP_CREDENTIAL=" + created.Credential}, bin,
		"--data-dir", t.TempDir(), "--listen", meshAddr, "--http", httpAddr, "--config", cfgPath,
		"--ctrlplane", cpURL, "--app", "orders", "--forward-listen", fwdAddr, "--log-level", "warn")
	sidecartest.WaitHealthy(t, p, httpAddr)
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, nil); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	pub := sidecartest.Dial(t, meshAddr)

	// franz-go's Serde frames values and keys as Confluent's serializers do.
	var serde sr.Serde
	serde.Register(v1.ID, order{}, sr.EncodeFn(func(v any) ([]byte, error) { return avro.Marshal(avro.MustParse(orderV1), v) }))
	serde.Register(kv.ID, orderKey{}, sr.EncodeFn(func(v any) ([]byte, error) { return avro.Marshal(avro.MustParse(keySchema), v) }))
	goodValue, err := serde.Encode(order{ID: "o-1", Status: "NEW", Items: []item{{SKU: "a", Qty: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	goodKey, err := serde.Encode(orderKey{ID: "o-1"})
	if err != nil {
		t.Fatal(err)
	}
	// srclient's codec (linkedin/goavro), framed by hand as its docs show.
	sch, err := src.GetLatestSchema(value)
	if err != nil {
		t.Fatal(err)
	}
	native, err := sch.Codec().BinaryFromNative(nil, map[string]any{"id": "o-2", "status": "PAID", "items": []any{}, "note": "v2"})
	if err != nil {
		t.Fatal(err)
	}
	srValue := append(binary.BigEndian.AppendUint32([]byte{0}, uint32(sch.ID())), native...)
	wrongKey := append(binary.BigEndian.AppendUint32([]byte{0}, uint32(v1.ID)), goodValue[5:]...)

	var lastErr error
	sidecartest.WaitFor(t, 15*time.Second, "the pushed schemas to be enforced", func() bool {
		_, lastErr = pub.Publish(ctx, &client.Message{Topic: topic, Body: []byte("garbage")})
		return client.CodeOf(lastErr) == mesh.CodeSchemaInvalid
	})
	for name, m := range map[string]*client.Message{
		"franz-go value and key": {Topic: topic, Key: string(goodKey), Body: goodValue},
		"srclient value, no key": {Topic: topic, Body: srValue},
	} {
		if _, err := pub.Publish(ctx, m); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, m := range map[string]*client.Message{
		"garbage value":             {Topic: topic, Body: []byte("garbage")},
		"value of the key's schema": {Topic: topic, Body: goodKey},
		"plain string key":          {Topic: topic, Key: "o-1", Body: goodValue},
		"key of another schema":     {Topic: topic, Key: string(wrongKey), Body: goodValue},
	} {
		if _, err := pub.Publish(ctx, m); client.CodeOf(err) != mesh.CodeSchemaInvalid {
			t.Errorf("%s: %v, want SCHEMA_INVALID", name, err)
		}
	}
}

type orderKey struct {
	ID string `avro:"id"`
}

// isCode reports whether err is a schema registry answer with error_code.
func isCode(err error, code int) bool {
	var re *sr.ResponseError
	return errors.As(err, &re) && re.ErrorCode == code
}
