package msgmesh_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/topology"
)

// TestNullAndEmptyKafka: a Kafka tombstone (null value) and an empty
// value, no key and an empty key, stay apart end to end: published by the
// SDK, over HTTP, or by a native Kafka producer (kafka-go's Writer); at the
// broker (read back with a protocol-level fetch, which keeps null); and
// delivered to the SDK. An app that predates the message flags gets the
// version-1 frame (a null body as an empty one).
func TestNullAndEmptyKafka(t *testing.T) {
	kc := kafkatest.Start(t)
	addrs := kafkatest.Addrs(kc)
	e := newEnvOn(t, topology.Cluster{Name: "kafka", Kind: topology.KindKafka, Endpoints: addrs})
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	type seen struct {
		key             string
		body            string
		nullBody, empty bool
	}
	var mu sync.Mutex
	got := map[string]seen{}
	if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		id := ""
		for _, h := range d.Headers {
			if h.Key == "id" {
				id = h.Value
			}
		}
		got[id] = seen{key: d.Key, body: string(d.Body), nullBody: d.NullBody, empty: d.EmptyKey}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
	defer cancel()
	pub := e.dial()
	id := func(s string) []mesh.HeaderField { return []mesh.HeaderField{{Key: "id", Value: s}} }
	for _, m := range []*client.Message{
		{Topic: topic, Key: "k", NullBody: true, Headers: id("tombstone")},
		{Topic: topic, Key: "k", Headers: id("empty-body")},
		{Topic: topic, EmptyKey: true, Body: []byte("x"), Headers: id("empty-key")},
		{Topic: topic, Body: []byte("x"), Headers: id("no-key")},
	} {
		if _, err := pub.Publish(ctx, m); err != nil {
			t.Fatalf("publish %v: %v", m.Headers, err)
		}
	}
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, NullBody: true, Body: []byte("x")}); err == nil {
		t.Errorf("a null body with bytes was accepted")
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.http+"/v1/publish/"+topic, nil)
	req.Header.Set("Msgmesh-Null-Body", "true")
	req.Header.Set("Msgmesh-Key", "")
	req.Header.Set("Msgmesh-Header-id", "http-tombstone")
	if status, code := doPublish(t, req); status != http.StatusOK {
		t.Fatalf("HTTP tombstone: %d %s", status, code)
	}
	// A native producer's tombstone and empty key.
	w := &kafka.Writer{Addr: kafka.TCP(addrs...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(ctx,
		kafka.Message{Key: []byte("n"), Value: nil, Headers: []kafka.Header{{Key: "id", Value: []byte("native-tombstone")}}},
		kafka.Message{Key: []byte{}, Value: []byte("v"), Headers: []kafka.Header{{Key: "id", Value: []byte("native-empty-key")}}},
	); err != nil {
		t.Fatal(err)
	}
	want := map[string]seen{
		"tombstone":        {key: "k", nullBody: true},
		"empty-body":       {key: "k"},
		"empty-key":        {body: "x", empty: true},
		"no-key":           {body: "x"},
		"http-tombstone":   {nullBody: true, empty: true},
		"native-tombstone": {key: "n", nullBody: true},
		"native-empty-key": {body: "v", empty: true},
	}
	sidecartest.WaitFor(t, 20*time.Second, "every message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= len(want)
	})
	mu.Lock()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s arrived as %+v, want %+v", k, got[k], v)
		}
	}
	mu.Unlock()

	// At the broker: the sidecar's tombstone is a null value, its empty
	// key an empty (not null) key.
	cl := &kafka.Client{Addr: kafka.TCP(addrs...)}
	atBroker := map[string][2]bool{} // id → key null, value null
	for p := range 3 {
		res, err := cl.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: p, Offset: 0, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		for {
			rec, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range rec.Headers {
				if h.Key == "id" {
					atBroker[string(h.Value)] = [2]bool{rec.Key == nil, rec.Value == nil}
				}
			}
		}
	}
	for id, want := range map[string][2]bool{"tombstone": {false, true}, "empty-body": {false, false}, "empty-key": {false, false}, "no-key": {true, false}, "http-tombstone": {false, true}} {
		if atBroker[id] != want {
			t.Errorf("%s at the broker: key null, value null = %v, want %v", id, atBroker[id], want)
		}
	}

	// An app that predates the flags: no flags on the wire.
	e.register("legacy", nil, []string{"g2:" + topic})
	raw := dialRaw(t, e.addr)
	raw.helloAs("legacy", "", mesh.Subscription{Group: "g2", Topic: topic, Mode: mesh.ModePush})
	for range len(want) {
		f := raw.read()
		if f.Kind != mesh.KindDeliver {
			t.Fatalf("legacy app got %s", f.Kind)
		}
		var m mesh.Message
		if err := m.Decode(f.Payload); err != nil || m.Flags != 0 {
			t.Fatalf("legacy app got flags %v (%v)", m.Flags, err)
		}
		if len(f.Payload) != len(m.AppendTo(nil)) {
			t.Fatalf("legacy DELIVER has %d bytes, the version-1 record %d", len(f.Payload), len(m.AppendTo(nil)))
		}
		raw.send(mesh.KindAck, mesh.FlagResponse, f.ID, nil)
	}
}

// TestNullAndEmptyOtherBrokers: NATS keeps an empty key apart from none
// and has no null body; RocketMQ has neither: what a broker cannot store
// is refused with INVALID, never stored as something else.
func TestNullAndEmptyOtherBrokers(t *testing.T) {
	for _, kit := range sidecartest.BrokerKits() {
		if kit.Name == "kafka" {
			continue
		}
		t.Run(kit.Name, func(t *testing.T) {
			e := newEnvOn(t, kit.Start(t))
			e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
			got := make(chan *client.Delivery, 4)
			if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
				got <- d
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
			defer cancel()
			pub := e.dial()
			if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Key: "k", NullBody: true}); client.CodeOf(err) != mesh.CodeInvalid {
				t.Errorf("null body: %v, want INVALID", err)
			}
			_, err := pub.Publish(ctx, &client.Message{Topic: topic, EmptyKey: true, Body: []byte("e")})
			want := 2 // "e" and "n"
			switch {
			case kit.Name == "rocketmq":
				if client.CodeOf(err) != mesh.CodeInvalid {
					t.Errorf("empty key on RocketMQ: %v, want INVALID", err)
				}
				want = 1 // only "n": the refusals stored nothing
			case err != nil:
				t.Fatal(err)
			}
			// A plain message still goes through after the refusals (and,
			// on RocketMQ, its delivery means the consumer's first
			// rebalance is over before the test shuts it down: the client
			// races with its own rebalance goroutine on a shutdown right
			// after start, broker/rocketmqbroker/race.go).
			if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: []byte("n")}); err != nil {
				t.Fatal(err)
			}
			for range want {
				select {
				case d := <-got:
					if want := string(d.Body) == "e"; d.EmptyKey != want || d.Key != "" || d.NullBody {
						t.Errorf("%q arrived with key %q, empty key %v, null body %v", d.Body, d.Key, d.EmptyKey, d.NullBody)
					}
				case <-ctx.Done():
					t.Fatal("no delivery")
				}
			}
		})
	}
}
