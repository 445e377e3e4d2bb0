package msgmesh_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/topology"
)

// wantRefused fails unless a registration answer is 400 INVALID naming
// every one of names.
func wantRefused(t *testing.T, status int, body string, names ...string) {
	t.Helper()
	var eb struct{ Error, Message string }
	_ = json.Unmarshal([]byte(body), &eb)
	if status != http.StatusBadRequest || eb.Error != "INVALID" {
		t.Fatalf("registration answered %d %s; want 400 INVALID", status, body)
	}
	for _, n := range names {
		if !strings.Contains(eb.Message, `"`+n+`"`) {
			t.Errorf("error %q does not name %q", eb.Message, n)
		}
	}
}

// TestRegisterKafkaTopicCollision: Kafka cannot hold two topics whose
// names differ only in '.' versus '_'. Before registration checked it, the
// second was registered and every publish to it failed with "[17] Invalid
// Topic"; now registering it is refused with both names, whether the
// other topic is in another registration, the same one (as a dead-letter
// topic, say), or only on the cluster.
func TestRegisterKafkaTopicCollision(t *testing.T) {
	kc := kafkatest.Start(t)
	c := topology.Cluster{Name: "kafka", Kind: topology.KindKafka, Endpoints: kafkatest.Addrs(kc)}
	e := newEnvOn(t, c)
	e.register("a1", []string{"p:k.a"}, nil)
	if _, err := e.dial(client.WithApp("a1")).Publish(context.Background(), &client.Message{Topic: "k.a", Body: []byte("x")}); err != nil {
		t.Fatalf("publish to k.a: %v", err)
	}

	status, body := sidecartest.Register(t, e.http, "a2", []string{"p:k_a"}, nil)
	wantRefused(t, status, body, "k_a", "k.a")
	status, body = sidecartest.Register(t, e.http, "a2", []string{"p:x.y", "p:x_y"}, nil)
	wantRefused(t, status, body, "x_y", "x.y")
	// The default dead-letter topic of g on "d" is "d.g.dlq".
	status, body = sidecartest.Register(t, e.http, "a2", []string{"p:d_g_dlq"}, []string{"g:d"})
	wantRefused(t, status, body, "d_g_dlq", "d.g.dlq")
	if status, body := sidecartest.HTTPDo(t, http.MethodGet, "http://"+e.http+"/v1/registrations/a2", "", nil); status != http.StatusNotFound {
		t.Fatalf("a refused registration was stored: %d %s", status, body)
	}

	// A topic another client created on the cluster, which no
	// registration names: found through the cluster's metadata.
	other, err := brokers.Open(context.Background(), c, sidecartest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Publish(context.Background(), &broker.Message{Topic: "ext.t", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	sidecartest.WaitFor(t, 30*time.Second, "the registration of ext_t to be refused once the sidecar sees ext.t", func() bool {
		status, _ := sidecartest.Register(t, e.http, "a3", []string{"p:ext_t"}, nil)
		return status == http.StatusBadRequest
	})
	status, body = sidecartest.Register(t, e.http, "a3", []string{"p:ext_t"}, nil)
	wantRefused(t, status, body, "ext_t", "ext.t")

	// Names that do not collide still register, and re-registering the
	// same topics is no conflict with themselves.
	e.register("a2", []string{"p:k-a", "p:ka"}, []string{"g:k.a"})
	e.register("a1", []string{"p:k.a"}, nil)
}

// TestRegisterNATSTopicsDotUnderscore: NATS has no such rule ('.' and '_'
// name different subjects and streams), so the same pair registers there.
func TestRegisterNATSTopicsDotUnderscore(t *testing.T) {
	e := newEnv(t)
	e.register("a1", []string{"p:k.a"}, nil)
	e.register("a2", []string{"p:k_a"}, nil)
	for app, tp := range map[string]string{"a1": "k.a", "a2": "k_a"} {
		if _, err := e.dial(client.WithApp(app)).Publish(context.Background(), &client.Message{Topic: tp, Body: []byte("x")}); err != nil {
			t.Fatalf("publish to %s: %v", tp, err)
		}
	}
}
