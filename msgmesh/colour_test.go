package msgmesh_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// TestColourPropagation: a message's colour (docs/routing.md) comes from
// the SDK's Message.Colour, from a context carrying one (client.WithColour),
// or from HTTP's Msgmesh-Colour header; a delivery has it in
// Delivery.Colour (not in Headers); and what a handler publishes with its
// ctx inherits the colour of the delivery it is processing. Bad colours
// are refused INVALID and stored nowhere.
func TestColourPropagation(t *testing.T) {
	const next = "orders.next"
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic, "p2:" + next}, []string{"g1:" + topic, "g2:" + next})
	pub := e.dial()
	var mu sync.Mutex
	var first, second []string
	if _, err := e.dial().Subscribe(context.Background(), "g1", topic, func(ctx context.Context, d *client.Delivery) error {
		for _, h := range d.Headers {
			if strings.EqualFold(h.Key, client.HeaderColour) {
				t.Errorf("delivery %s has the colour header in Headers", d.Body)
			}
		}
		mu.Lock()
		first = append(first, d.Colour+":"+string(d.Body))
		mu.Unlock()
		// The handler publishes with its ctx, giving no colour.
		_, err := pub.Publish(ctx, &client.Message{Topic: next, Body: d.Body})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dial().Subscribe(context.Background(), "g2", next, func(_ context.Context, d *client.Delivery) error {
		mu.Lock()
		second = append(second, d.Colour+":"+string(d.Body))
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
	defer cancel()
	red := client.WithColour(ctx, "red")
	for _, p := range []struct {
		ctx    context.Context
		colour string
		body   string
	}{
		{ctx, "blue", "1"},
		{red, "", "3"},
		{ctx, "", "4"},
		{red, "blue", "5"}, // the message's own colour wins
	} {
		if _, err := pub.Publish(p.ctx, &client.Message{Topic: topic, Colour: p.colour, Body: []byte(p.body)}); err != nil {
			t.Fatalf("publish %s: %v", p.body, err)
		}
	}
	if status, code := httpPublish(t, e.http, topic, "", "2", http.Header{"Msgmesh-Colour": {"green"}}); status != http.StatusOK {
		t.Fatalf("HTTP publish with a colour: %d %s", status, code)
	}
	for _, bad := range []string{"light blue", "-x", strings.Repeat("c", 65)} {
		if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Colour: bad, Body: []byte("bad")}); client.CodeOf(err) != mesh.CodeInvalid {
			t.Errorf("colour %q: %v, want INVALID", bad, err)
		}
		if status, _ := httpPublish(t, e.http, topic, "", "bad", http.Header{"Msgmesh-Colour": {bad}}); status != http.StatusBadRequest {
			t.Errorf("HTTP colour %q: %d, want 400", bad, status)
		}
	}
	if status, _ := httpPublish(t, e.http, topic, "", "bad", http.Header{"Msgmesh-Colour": {"blue"}, "Msgmesh-Header-Msgmesh-Colour": {"red"}}); status != http.StatusBadRequest {
		t.Errorf("two colours over HTTP: %d, want 400", status)
	}
	want := []string{":4", "blue:1", "blue:5", "green:2", "red:3"} // sorted
	sidecartest.WaitFor(t, 20*time.Second, "the coloured messages on both topics", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(first) >= len(want) && len(second) >= len(want)
	})
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(first)
	slices.Sort(second)
	if !slices.Equal(first, want) {
		t.Errorf("deliveries: %v, want %v", first, want)
	}
	if !slices.Equal(second, want) {
		t.Errorf("what the handler published: %v, want the colours inherited: %v", second, want)
	}
}
