package msgmesh_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// TestTagFilter: a consumer group registered with a tag expression gets
// only the messages tagged as it says, on every broker (RocketMQ filters
// at the broker by its subscription, the others in the sidecar), with
// their tags; tags come from the SDK's Message.Tag and HTTP's Msgmesh-Tag.
// The messages the filter drops are acked: a sidecar started afresh on
// the same group gets none of them again.
func TestTagFilter(t *testing.T) {
	for _, kit := range sidecartest.BrokerKits() {
		t.Run(kit.Name, func(t *testing.T) {
			cluster := kit.Start(t)
			e := newEnvOn(t, cluster)
			consume := []string{"g1:" + topic + ",tags=TagA || TagB"}
			e.register("orders", []string{"p1:" + topic}, consume)
			var mu sync.Mutex
			var got []string
			if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
				mu.Lock()
				got = append(got, d.Tag+":"+string(d.Body))
				mu.Unlock()
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
			defer cancel()
			pub := e.dial()
			for i, tag := range []string{"TagA", "TagC", "", "TagB", "tagA", "TagA"} {
				if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Key: "k", Tag: tag, Body: []byte{'0' + byte(i)}}); err != nil {
					t.Fatalf("publish tag %q: %v", tag, err)
				}
			}
			if status, code := httpPublish(t, e.http, topic, "k", "6", http.Header{"Msgmesh-Tag": {"TagB"}}); status != http.StatusOK {
				t.Fatalf("HTTP publish with a tag: %d %s", status, code)
			}
			for _, bad := range []string{"a||b", " TagA", "*"} {
				if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Tag: bad, Body: []byte("x")}); client.CodeOf(err) != mesh.CodeInvalid {
					t.Errorf("tag %q: %v, want INVALID", bad, err)
				}
			}
			want := []string{"TagA:0", "TagA:5", "TagB:3", "TagB:6"} // sorted
			sidecartest.WaitFor(t, 20*time.Second, "the tagged messages", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) >= len(want)
			})
			// Anything else would have come before the last one (one key:
			// one partition or queue, in order).
			mu.Lock()
			if slices.Sort(got); !slices.Equal(got, want) {
				t.Errorf("group with tags TagA || TagB got %v, want %v", got, want)
			}
			mu.Unlock()

			// A fresh sidecar on the same group: the dropped messages were
			// acked, the delivered ones too; only a new one comes.
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := e.sc.Shutdown(sctx); err != nil {
				t.Fatal(err)
			}
			scancel()
			e2 := newEnvOn(t, cluster)
			e2.register("orders", []string{"p1:" + topic}, consume)
			again := sidecartest.NewTally()
			subscribe(t, e2.dial(), "g1", "fresh", again)
			if _, err := e2.dial().Publish(ctx, &client.Message{Topic: topic, Key: "k", Tag: "TagA", Body: []byte("end")}); err != nil {
				t.Fatal(err)
			}
			sidecartest.WaitFor(t, 30*time.Second, "the new message", func() bool {
				return again.Times("end") > 0
			})
			if n := again.Count(); n != 1 {
				t.Errorf("the fresh sidecar got %d messages; the filtered and delivered messages were not all acked", n)
			}
		})
	}
}
