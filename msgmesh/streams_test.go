package msgmesh_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
	"github.com/msgmesh/msgmesh/internal/meshctl"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/topology"
)

// operatorJS connects to the cluster's server the way an operator's tool
// would (nats.go), for streams msgmesh did not create.
func operatorJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestWorkQueueRefusesSecondGroup: on a stream an operator made with
// work-queue retention, JetStream takes one consumer per subject. The
// first group's registration is accepted and consumes; a second group,
// from another app or the same registration, is refused at registration
// with 400 INVALID naming the stream, instead of 201 and an upstream
// consumer retrying for ever. A consumer the operator runs on the topic
// refuses the first group too.
func TestWorkQueueRefusesSecondGroup(t *testing.T) {
	emb := natstest.Start(t)
	js := operatorJS(t, emb.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"jobs.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, topology.Cluster{Name: "nats", Kind: topology.KindNATS, Endpoints: []string{emb.ClientURL()}})
	e.register("orders", []string{"p1:jobs.resize"}, []string{"g1:jobs.resize"})
	got := sidecartest.NewTally()
	sidecartest.Subscribe(t, e.dial(), "g1", "jobs.resize", "w", got)
	sidecartest.PublishN(t, e.dial(), "jobs.resize", "job", 5, 5)
	sidecartest.WaitFor(t, 10*time.Second, "the first group's messages", func() bool { return got.Count() >= 5 })

	for name, consume := range map[string][]string{
		"another app":       {"g2:jobs.resize"},
		"same registration": {"g1:jobs.resize", "g2:jobs.resize"},
	} {
		app := "other"
		if name == "same registration" {
			app = "orders"
		}
		status, body := sidecartest.Register(t, e.http, app, nil, consume)
		if status != http.StatusBadRequest || !strings.Contains(body, "INVALID") || !strings.Contains(body, "JOBS") || !strings.Contains(body, "work queue") {
			t.Errorf("%s: a second group on a work-queue stream: %d %s, want 400 INVALID naming the stream", name, status, body)
		}
	}
	if _, ok := upstreamsAt(t, e.http)["g2:jobs.resize"]; ok {
		t.Errorf("an upstream consumer was started for the refused group")
	}

	// An operator's own consumer on another topic of the stream does not
	// matter; one on the topic does.
	if _, err := js.CreateOrUpdateConsumer(ctx, "JOBS", jetstream.ConsumerConfig{Durable: "ops", FilterSubject: "jobs.thumbs", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if status, body := sidecartest.Register(t, e.http, "thumbs", nil, []string{"g3:jobs.print"}); status != http.StatusCreated {
		t.Errorf("a group on a topic no consumer reads: %d %s", status, body)
	}
	if status, body := sidecartest.Register(t, e.http, "thumbs2", nil, []string{"g4:jobs.thumbs"}); status != http.StatusBadRequest || !strings.Contains(body, "ops") {
		t.Errorf("a group on a topic the operator's consumer reads: %d %s, want 400 naming consumer ops", status, body)
	}
}

// TestStreamSettingsShown: stream settings from the cluster's config
// (storage and duplicate window too) are what the created stream gets;
// GET /v1/streams and meshctl streams show each registered topic's stream
// with the settings in effect, and an operator's stream as it is.
func TestStreamSettingsShown(t *testing.T) {
	emb := natstest.Start(t)
	js := operatorJS(t, emb.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OPS", Subjects: []string{"ops.audit"}, Retention: jetstream.WorkQueuePolicy, MaxMsgs: 1000}); err != nil {
		t.Fatal(err)
	}
	hour, dups := time.Hour, 30*time.Second
	c := topology.Cluster{Name: "nats", Kind: topology.KindNATS, Endpoints: []string{emb.ClientURL()}, Streams: &topology.Streams{
		StreamSettings: topology.StreamSettings{MaxAge: &hour},
		Topics:         []topology.TopicStreams{{Topic: "fast.>", StreamSettings: topology.StreamSettings{Storage: topology.StorageMemory, Duplicates: &dups, Retention: topology.RetentionInterest}}},
	}}
	e := newEnvOn(t, c)
	e.register("orders", []string{"p1:fast.ticks", "p1:ops.audit", "p1:slow.later"}, []string{"g1:fast.ticks"})
	sidecartest.PublishN(t, e.dial(), "fast.ticks", "t", 3, 3)

	s, err := js.Stream(ctx, "MESH_fast_ticks")
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Storage != jetstream.MemoryStorage || cfg.Duplicates != dups || cfg.MaxAge != hour || cfg.Retention != jetstream.InterestPolicy {
		t.Errorf("created stream: storage %v, duplicates %v, max_age %v, retention %v; want memory, 30s, 1h, interest", cfg.Storage, cfg.Duplicates, cfg.MaxAge, cfg.Retention)
	}

	status, body := sidecartest.HTTPDo(t, http.MethodGet, "http://"+e.http+"/v1/streams", "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /v1/streams: %d %s", status, body)
	}
	var streams []map[string]any
	if err := json.Unmarshal([]byte(body), &streams); err != nil {
		t.Fatal(err)
	}
	byTopic := map[string]map[string]any{}
	for _, s := range streams {
		byTopic[s["topic"].(string)] = s
	}
	for topic, want := range map[string]map[string]any{
		"fast.ticks": {"stream": "MESH_fast_ticks", "exists": true, "created_by": "msgmesh", "storage": "memory", "duplicates": "30s", "max_age": "1h0m0s", "retention": "interest", "messages": 3.0, "consumers": 1.0},
		"ops.audit":  {"stream": "OPS", "exists": true, "created_by": "operator", "retention": "workqueue", "max_msgs": 1000.0, "storage": "file"},
		"slow.later": {"stream": "MESH_slow_later", "exists": false, "storage": "file", "duplicates": "2m0s", "max_age": "1h0m0s", "retention": "limits"},
	} {
		got := byTopic[topic]
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %v, want %v (%v)", topic, k, got[k], v, got)
			}
		}
	}

	var out, errOut bytes.Buffer
	if code := meshctl.Main(ctx, []string{"streams", "--http", e.http}, &out, &errOut); code != 0 {
		t.Fatalf("meshctl streams: exit %d: %s", code, errOut.String())
	}
	table := out.String()
	for _, want := range []string{"TOPIC", "MESH_fast_ticks", "memory", "30s", "interest", "OPS", "operator", "workqueue", "MESH_slow_later (not created yet)"} {
		if !strings.Contains(table, want) {
			t.Errorf("meshctl streams does not show %q:\n%s", want, table)
		}
	}
}
