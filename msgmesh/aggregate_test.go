package msgmesh_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// TestAggregationUnderChurn: many goroutines register, deregister, connect
// and disconnect at once. Afterwards the running upstream consumers are
// exactly the union of the stored registrations: none for a group nobody
// registered, none missing for one somebody did.
func TestAggregationUnderChurn(t *testing.T) {
	e := newEnv(t)
	groups := []string{"ga", "gb", "gc"}
	topics := []string{"t.one", "t.two"}
	const workers, rounds = 8, 25

	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			app := fmt.Sprintf("app%d", w%4) // apps shared between workers
			for r := 0; r < rounds; r++ {
				g, tp := groups[rng.IntN(len(groups))], topics[rng.IntN(len(topics))]
				switch rng.IntN(4) {
				case 0, 1:
					status, body := sidecartest.Register(t, e.http, app, nil, []string{g + ":" + tp})
					if status != http.StatusCreated {
						t.Errorf("register: %d %s", status, body)
					}
				case 2:
					status, body := sidecartest.HTTPDo(t, http.MethodDelete, "http://"+e.http+"/v1/registrations/"+app, "", nil)
					if status != http.StatusNoContent && status != http.StatusNotFound {
						t.Errorf("deregister: %d %s", status, body)
					}
				case 3:
					// Connect, declare whatever is registered right now (a
					// refusal is fine: it may have just gone), disconnect.
					// The app may have just been deregistered: then HELLO
					// is refused and DECLARE too (not before HELLO).
					raw := dialRaw(t, e.addr)
					if f := raw.request(mesh.KindHello, &mesh.Hello{App: app}); f.Kind != mesh.KindOK && f.Kind != mesh.KindError {
						t.Errorf("HELLO answered %s", f.Kind)
					}
					f := raw.request(mesh.KindDeclare, &mesh.Declare{Subs: []mesh.Subscription{{Group: g, Topic: tp, Mode: mesh.ModePush}}})
					if f.Kind != mesh.KindOK && f.Kind != mesh.KindError {
						t.Errorf("DECLARE answered %s", f.Kind)
					}
					_ = raw.c.Close()
				}
			}
		}()
	}
	wg.Wait()

	want := map[string]bool{}
	status, body := sidecartest.HTTPDo(t, http.MethodGet, "http://"+e.http+"/v1/registrations", "", nil)
	if status != http.StatusOK {
		t.Fatalf("list: %d %s", status, body)
	}
	for _, reg := range decodeRegs(t, body) {
		for _, b := range reg.Consume {
			want[b.Group+":"+b.Topic] = true
		}
	}
	got := upstreamsAt(t, e.http)
	for k := range want {
		if !got[k] {
			t.Errorf("registered %s has no running upstream consumer", k)
		}
	}
	for k := range got {
		if !want[k] {
			t.Errorf("upstream consumer %s runs but nobody registered it", k)
		}
	}
	t.Logf("%d registrations' union: %d upstream consumers", len(decodeRegs(t, body)), len(want))

	// Deleting every registration stops every upstream consumer.
	for _, reg := range decodeRegs(t, body) {
		if status, b := sidecartest.HTTPDo(t, http.MethodDelete, "http://"+e.http+"/v1/registrations/"+reg.App, "", nil); status != http.StatusNoContent {
			t.Fatalf("deregister %s: %d %s", reg.App, status, b)
		}
	}
	if got := upstreamsAt(t, e.http); len(got) != 0 {
		t.Fatalf("upstream consumers left after every registration was deleted: %v", got)
	}
}

// TestUpstreamPerGroupNotPerConnection: however many connections serve a
// group, and however many apps register it, one upstream consumer runs,
// and it stops only when the last registration needing it is deleted.
func TestUpstreamPerGroupNotPerConnection(t *testing.T) {
	e := newEnv(t)
	e.register("a", []string{"p:" + topic}, []string{"g1:" + topic})
	e.register("b", nil, []string{"g1:" + topic, "g2:" + topic})
	for i := 0; i < 5; i++ {
		raw := dialRaw(t, e.addr)
		raw.helloAs([]string{"a", "b"}[i%2], "", mesh.Subscription{Group: "g1", Topic: topic, Mode: mesh.ModePush})
	}
	if got := upstreamsAt(t, e.http); len(got) != 2 || !got["g1:"+topic] || !got["g2:"+topic] {
		t.Fatalf("upstreams %v, want exactly g1 and g2", got)
	}
	sidecartest.HTTPDo(t, http.MethodDelete, "http://"+e.http+"/v1/registrations/b", "", nil)
	if got := upstreamsAt(t, e.http); len(got) != 1 || !got["g1:"+topic] {
		t.Fatalf("after deleting b: upstreams %v, want only g1 (a still needs it)", got)
	}
	sidecartest.HTTPDo(t, http.MethodDelete, "http://"+e.http+"/v1/registrations/a", "", nil)
	if got := upstreamsAt(t, e.http); len(got) != 0 {
		t.Fatalf("after deleting a: upstreams %v, want none", got)
	}
	_ = context.Background
	_ = time.Second
}
