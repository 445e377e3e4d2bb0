package msgmesh_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/topology"
)

// TestBrokerGroupKafka: a consume binding's broker_group is the Kafka
// group the sidecar consumes in: acked messages are committed there, not
// under the app's group name, and GET /v1/upstreams shows it.
func TestBrokerGroupKafka(t *testing.T) {
	const topic = "orders"
	kc := kafkatest.Start(t, kfake.SeedTopics(1, topic))
	e := newEnvOn(t, topology.Cluster{Name: "kafka", Kind: topology.KindKafka, Endpoints: kafkatest.Addrs(kc)})
	e.register(sidecartest.App, []string{"p:" + topic}, []string{"g:" + topic + ",broker_group=legacy.orders-consumer"})

	var acked atomic.Int64
	sub := e.dial()
	if _, err := sub.Subscribe(context.Background(), "g", topic, func(context.Context, *client.Delivery) error {
		acked.Add(1)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pub := e.dial()
	for i := range 3 {
		if _, err := pub.Publish(context.Background(), &client.Message{Topic: topic, Body: []byte{byte('a' + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	sidecartest.WaitFor(t, 30*time.Second, "the three messages to be committed in the broker group", func() bool {
		return kafkatest.Committed(t, kc, "legacy.orders-consumer", topic, 0) == 3
	})
	if got := acked.Load(); got != 3 {
		t.Fatalf("the app acked %d messages, want 3", got)
	}
	if got := kafkatest.Committed(t, kc, "g", topic, 0); got != -1 {
		t.Fatalf("group %q has committed offset %d; want none (the binding names its broker group)", "g", got)
	}

	status, body := sidecartest.HTTPDo(t, http.MethodGet, "http://"+e.http+"/v1/upstreams", "", nil)
	var ups []struct {
		Group, Topic string
		BrokerGroup  string `json:"broker_group"`
	}
	if err := json.Unmarshal([]byte(body), &ups); status != http.StatusOK || err != nil || len(ups) != 1 || ups[0].BrokerGroup != "legacy.orders-consumer" {
		t.Fatalf("GET /v1/upstreams: %d %s (%v); want one upstream with broker_group legacy.orders-consumer", status, body, err)
	}
}

// TestBrokerGroupRefused: registration refuses a broker group the cluster
// cannot name (NATS durable names have no '.'), a second app giving the
// same (group, topic) another broker group, and two groups sharing one
// broker-side group on a topic.
func TestBrokerGroupRefused(t *testing.T) {
	e := newEnv(t) // NATS
	e.register("a1", nil, []string{"g:t,broker_group=legacy-g"})
	tests := []struct {
		name    string
		consume string
		want    string
	}{
		{"NATS cannot name it", "g2:t,broker_group=legacy.g", "durable consumer name"},
		{"another broker group for the same binding", "g:t,broker_group=other", `broker_group "legacy-g" in app "a1"`},
		{"the same binding without one", "g:t", `broker_group "legacy-g" in app "a1"`},
		{"another group in the same broker group", "g3:t,broker_group=legacy-g", `already used by group "g"`},
		{"another group named like the broker group", "legacy-g:t", `already used by group "g"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := sidecartest.Register(t, e.http, "a2", nil, []string{tt.consume})
			var eb struct{ Error, Message string }
			_ = json.Unmarshal([]byte(body), &eb)
			if status != http.StatusBadRequest || eb.Error != "INVALID" || !strings.Contains(eb.Message, tt.want) {
				t.Fatalf("register %s: %d %s; want 400 INVALID containing %q", tt.consume, status, body, tt.want)
			}
		})
	}
	// The same broker group on another topic, and the same binding with
	// the same broker group in a second app, are fine.
	e.register("a2", nil, []string{"g:t,broker_group=legacy-g", "g:u,broker_group=legacy-g"})
}
