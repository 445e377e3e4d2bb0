package msgmesh_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/schema"
)

const refundV1 = `{"type":"record","name":"Refund","namespace":"com.acme","fields":[{"name":"order","type":"string"},{"name":"cents","type":"long"}]}`

// TestSubjectNameStrategies: a topic finds its value schema by its subject
// name strategy: by default "<topic>-value", else the subject named like
// the topic; record_name and topic_record_name take any record type whose
// subject is named after it (several types on one topic), and need the
// body to name its schema by id.
func TestSubjectNameStrategies(t *testing.T) {
	ctx := context.Background()
	reg, err := schema.New(ctx, schema.NewMemoryStore(), schema.RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	register := func(subject, text string) schema.SchemaVersion {
		v, err := reg.Register(ctx, subject, text)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	bare := register("bare.topic", orderV1)
	register("both.topic", refundV1)
	both := register("both.topic-value", orderV1)
	rec := register("com.acme.Order", orderV1)
	ref := register("com.acme.Refund", refundV1)
	trec := register("trec.topic-com.acme.Refund", refundV1)
	set := msgmesh.SchemaSet{Subjects: map[string]msgmesh.TopicSchema{}, Strategies: map[string]string{
		"rec.topic": schema.StrategyRecordName, "trec.topic": schema.StrategyTopicRecordName, "strict.topic": schema.StrategyTopic,
	}}
	for _, s := range reg.Subjects() {
		ts, err := reg.TopicSchemas(s)
		if err != nil {
			t.Fatal(err)
		}
		set.Subjects[s] = msgmesh.TopicSchema{Schemas: ts, Policy: schema.PolicyEnforce}
	}
	e := newEnv(t)
	e.sc.SetSchemaSet(set)
	topics := []string{"bare.topic", "both.topic", "rec.topic", "trec.topic", "strict.topic", "free.topic"}
	var produce []string
	for _, tp := range topics {
		produce = append(produce, "p1:"+tp)
	}
	e.register("orders", produce, nil)
	pub := e.dial()
	o := order{ID: "o", Status: "NEW", Items: []item{}}
	refund := map[string]any{"order": "o", "cents": int64(5)}
	for _, c := range []struct {
		name, topic string
		body        []byte
		headers     []mesh.HeaderField
		ok          bool
	}{
		{"bare subject as before", "bare.topic", confluent(t, bare.ID, orderV1, o), nil, true},
		{"bare subject refuses garbage", "bare.topic", []byte("x"), nil, false},
		{"-value wins over the bare subject", "both.topic", confluent(t, both.ID, orderV1, o), nil, true},
		{"the bare subject's type is not the -value one", "both.topic", confluent(t, ref.ID, refundV1, refund), nil, false},
		{"record_name: an Order", "rec.topic", confluent(t, rec.ID, orderV1, o), nil, true},
		{"record_name: a Refund", "rec.topic", confluent(t, ref.ID, refundV1, refund), nil, true},
		{"record_name: not a record subject's id", "rec.topic", confluent(t, trec.ID, refundV1, refund), nil, true}, // same text, so same id as com.acme.Refund
		{"record_name: JSON without an id", "rec.topic", []byte(`{"order":"o","cents":5}`), jsonCT, false},
		{"record_name: JSON with an id", "rec.topic", []byte(`{"order":"o","cents":5}`), append([]mesh.HeaderField{{Key: schema.HeaderSchemaID, Value: strconv.Itoa(ref.ID)}}, jsonCT...), true},
		{"topic_record_name: its Refund", "trec.topic", confluent(t, trec.ID, refundV1, refund), nil, true},
		{"topic_record_name: an Order has no subject here", "trec.topic", confluent(t, rec.ID, orderV1, o), nil, false},
		{"topic: no subject of that name, nothing checked", "strict.topic", []byte("x"), nil, true},
		{"no schema at all", "free.topic", []byte("x"), nil, true},
	} {
		_, err := pub.Publish(ctx, &client.Message{Topic: c.topic, Body: c.body, Headers: c.headers})
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: %v, want it published", c.name, err)
		case !c.ok && client.CodeOf(err) != mesh.CodeSchemaInvalid:
			t.Errorf("%s: %v, want SCHEMA_INVALID", c.name, err)
		}
	}
}
